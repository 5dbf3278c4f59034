"""The two body readers, for any input shape: the .npy decoder refuses everything but (N, *shape)
uint8/float32 and never unpickles; the JSON reader reads plain bodies straight into NumPy and names the
first item that breaks a rule in any other."""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest

from service.codecs.json_inputs import inputs_from_json
from service.codecs.npy import decode_npy
from sparsity.errors import InvalidInputError


def npy(array: np.ndarray, **kwargs) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, **kwargs)
    return buf.getvalue()


MNIST = ((28, 28), (0.0, 1.0))


def decode_npy_images(body: bytes, **kwargs) -> np.ndarray:
    return decode_npy(body, *MNIST, **kwargs)


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
        (
            np.zeros((2, 28, 28), dtype=np.float64),
            "dtype must be uint8 (pixels 0-255) or float32 (in the input range), got <f8",
        ),
        (np.zeros((2, 28, 28), dtype=">f4"), "got >f4"),
        (np.zeros((2, 28, 28), dtype=np.int32), "got <i4"),
        (np.zeros((2, 28), dtype=np.uint8), "shape must be (N, 28, 28), got (2, 28)"),
        (np.zeros((2, 28, 27), dtype=np.uint8), "shape must be (N, 28, 28), got (2, 28, 27)"),
        (np.zeros((0, 28, 28), dtype=np.uint8), "must hold 1 to 4096 items, got 0"),
        (np.zeros((4097, 28, 28), dtype=np.uint8), "must hold 1 to 4096 items, got 4097"),
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
    assert "must hold 1 to 8 items, got 9" in refusal(npy(np.zeros((9, 28, 28), dtype=np.uint8)), max_items=8)


def test_uint8_is_scaled_onto_any_input_range_and_any_shape_is_read():
    pixels = np.array([[0, 255, 51]], dtype=np.uint8)
    np.testing.assert_allclose(decode_npy(npy(pixels), (3,), (-1.0, 1.0)), [[-1.0, 1.0, -0.6]], atol=1e-6)
    rows = np.arange(12, dtype=np.float32).reshape(2, 6)
    np.testing.assert_array_equal(decode_npy(npy(rows), (6,), (0.0, 16.0)), rows)
    with pytest.raises(InvalidInputError, match=r"shape must be \(N, 6\), got \(2, 28, 28\)"):
        decode_npy(npy(np.zeros((2, 28, 28), dtype=np.uint8)), (6,), (0.0, 1.0))


def _images_body(images, **extra) -> bytes:
    return json.dumps({"images": images, **extra}).encode()


def images_from_json(body: bytes) -> np.ndarray:
    return inputs_from_json(body, *MNIST, key="images")


def json_refusal(body: bytes) -> tuple[str, str]:
    with pytest.raises(InvalidInputError) as info:
        images_from_json(body)
    return info.value.field, info.value.rule


def test_json_reads_plain_bodies_exactly():
    images = np.random.default_rng(1).random((3, 28, 28)).round(5)
    out = images_from_json(_images_body(images.tolist()))
    np.testing.assert_array_equal(out, images.astype(np.float32))
    ints = np.zeros((1, 28, 28), dtype=int)
    ints[0, 0, 0] = 1
    spaced = json.dumps({"images": ints.tolist()}, indent=2).encode()
    np.testing.assert_array_equal(images_from_json(spaced), ints.astype(np.float32))
    rows = inputs_from_json(b'{"inputs": [[1, 2.5, -3], [0, 0, 1e2]]}', (3,), (-5.0, 100.0))
    np.testing.assert_array_equal(rows, np.array([[1, 2.5, -3], [0, 0, 100]], dtype=np.float32))


ONE = [[0.5] * 28] * 28


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        (_images_body([ONE], note="x"), "note", "unknown field: the body holds only 'images'"),
        (json.dumps({"im1ages": [ONE]}).encode(), "images", "Field required"),
        (_images_body([[[0.5] * 27 + ["0.5"], *ONE[1:]]]), "images[0][0][27]", "must be a number, got str"),
        (_images_body([[[0.5] * 27 + [True], *ONE[1:]]]), "images[0][0][27]", "must be a number, got bool"),
        (_images_body([[[0.5] * 27 + [None], *ONE[1:]]]), "images[0][0][27]", "must be a number, got null"),
        (
            b'{"images": [[' + b",".join([b"[" + b",".join([b"NaN"] * 28) + b"]"] * 28) + b"]]}",
            "images[0][0][0]",
            "must be a finite number (no NaN or Infinity)",
        ),
        (_images_body([[[0.5] * 27, *ONE[1:]]]), "images[0][0]", "must have 28 items, got 27"),
        (_images_body([[[1.0000000001] * 28] * 28]), "images[0][0][0]", "must be within [0.0, 1.0], got 1.0000000001"),
        (_images_body([[[-0.1] * 28] * 28]), "images[0][0][0]", "must be within [0.0, 1.0], got -0.1"),
        (_images_body([ONE] * 1025), "images", "must be a list of 1 to 1024 items of shape (28, 28)"),
        (_images_body([]), "images", "must be a list of 1 to 1024 items of shape (28, 28)"),
        (_images_body(ONE), "images[0][0]", "must be a list of 28 items"),
        (b"[]", "body", 'must be a JSON object {"images": [...]}'),
    ],
)
def test_json_names_the_first_item_that_breaks_a_rule(body, field, rule):
    assert json_refusal(body) == (field, rule)


def test_json_that_is_not_json_is_refused_with_the_parser_message():
    field, rule = json_refusal(b'{"images": [[[0.5]]]')
    assert field == "body" and rule.startswith('must be a JSON object {"images": [...]} (')
