"""The two batch readers: the .npy decoder refuses everything but (N, 28, 28) uint8/float32 and never
unpickles; the fast JSON reader accepts only plain valid bodies and hands everything else on."""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest

from service.fastjson import images_from_json
from service.npy import decode_npy_images
from sparsity.errors import InvalidInputError


def npy(array: np.ndarray, **kwargs) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, **kwargs)
    return buf.getvalue()


def refusal(body: bytes, **kwargs) -> str:
    with pytest.raises(InvalidInputError) as info:
        decode_npy_images(body, **kwargs)
    assert info.value.field == "body"
    return info.value.rule


def test_uint8_is_scaled_to_0_1_and_float32_kept_in_order():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    out = decode_npy_images(npy(pixels))
    assert out.dtype == np.float32 and out.shape == (3, 28, 28)
    np.testing.assert_array_equal(out, pixels.astype(np.float32) / 255)
    floats = rng.random((5, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(decode_npy_images(npy(floats)), floats)
    # a Fortran-ordered array is read in its own order, not transposed
    np.testing.assert_array_equal(decode_npy_images(npy(np.asfortranarray(floats))), floats)


@pytest.mark.parametrize(
    ("array", "rule"),
    [
        (np.zeros((2, 28, 28), dtype=np.float64), "dtype must be uint8 (pixels 0-255) or float32 (0-1), got <f8"),
        (np.zeros((2, 28, 28), dtype=">f4"), "got >f4"),
        (np.zeros((2, 28, 28), dtype=np.int32), "got <i4"),
        (np.zeros((2, 28), dtype=np.uint8), "shape must be (N, 28, 28), got (2, 28)"),
        (np.zeros((2, 28, 27), dtype=np.uint8), "shape must be (N, 28, 28), got (2, 28, 27)"),
        (np.zeros((0, 28, 28), dtype=np.uint8), "must hold 1 to 4096 images, got 0"),
        (np.zeros((4097, 28, 28), dtype=np.uint8), "must hold 1 to 4096 images, got 4097"),
    ],
)
def test_wrong_dtype_shape_or_count_is_refused_naming_the_rule(array, rule):
    assert rule in refusal(npy(array))


def test_object_arrays_and_pickles_are_refused_without_unpickling(tmp_path):
    marker = tmp_path / "unpickled"

    class Boom:  # unpickling this would create the marker file
        def __reduce__(self):
            return (open, (str(marker), "w"))

    body = npy(np.array([Boom()], dtype=object), allow_pickle=True)
    assert "object arrays are refused" in refusal(body)
    assert "magic string missing" in refusal(pickle.dumps(np.zeros((1, 28, 28), dtype=np.uint8)))
    assert not marker.exists()


def test_truncated_trailing_and_malformed_bodies_are_refused():
    good = npy(np.zeros((2, 28, 28), dtype=np.uint8))
    assert refusal(good[:-1]) == "data truncated: shape (2, 28, 28) needs 1568 bytes, got 1567"
    assert refusal(good + b"\0") == "data has trailing bytes: shape (2, 28, 28) needs 1568 bytes, got 1569"
    assert "magic string missing" in refusal(b"")
    assert "malformed .npy header" in refusal(good[:20])
    assert "format version 9.0 is not supported" in refusal(b"\x93NUMPY\x09\x00" + good[8:])
    assert "malformed .npy header" in refusal(good.replace(b"'descr'", b"'dexcr'"))


def test_a_smaller_limit_is_honoured():
    assert "must hold 1 to 8 images, got 9" in refusal(npy(np.zeros((9, 28, 28), dtype=np.uint8)), max_images=8)


def _images_body(images, **extra) -> bytes:
    return json.dumps({"images": images, **extra}).encode()


def test_fast_json_reads_plain_bodies_exactly():
    images = np.random.default_rng(1).random((3, 28, 28)).round(5)
    out = images_from_json(_images_body(images.tolist()))
    np.testing.assert_array_equal(out, images.astype(np.float32))
    ints = np.zeros((1, 28, 28), dtype=int)
    ints[0, 0, 0] = 1
    spaced = json.dumps({"images": ints.tolist()}, indent=2).encode()
    np.testing.assert_array_equal(images_from_json(spaced), ints.astype(np.float32))


@pytest.mark.parametrize(
    "body",
    [
        _images_body([[[0.5] * 28] * 28], note="x"),  # another key
        json.dumps({"im1ages": [[[0.5] * 28] * 28]}).encode(),  # a digit hidden in the key
        _images_body([[[0.5] * 27 + ["0.5"]] + [[0.5] * 28] * 27]),  # a string
        _images_body([[[0.5] * 27 + [True]] + [[0.5] * 28] * 27]),  # a boolean
        _images_body([[[0.5] * 27 + [None]] + [[0.5] * 28] * 27]),  # null
        b'{"images": [[' + b",".join([b"[" + b",".join([b"NaN"] * 28) + b"]"] * 28) + b"]]}",
        _images_body([[[0.5] * 27] + [[0.5] * 28] * 27]),  # ragged
        _images_body([[[1.0000000001] * 28] * 28]),  # above 1 by less than float32 can show
        _images_body([[[-0.1] * 28] * 28]),
        _images_body([[[1e39] * 28] * 28]),  # beyond float32
        _images_body([[[0.5] * 28] * 28] * 1025),  # more than MAX_BATCH
        _images_body([]),
        _images_body([[0.5] * 28] * 28),  # one image without the batch level
        b"[]",
        b'{"images": [[[0.5]]]',  # not JSON
    ],
)
def test_fast_json_hands_anything_unusual_to_the_full_validation(body):
    assert images_from_json(body) is None
