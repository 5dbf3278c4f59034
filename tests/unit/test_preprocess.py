"""Image preprocessing: MNIST-style conversion and defensive decoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from service.codecs.pictures import decode_image, image_to_mnist, picture_to_input, to_mnist
from sparsity import InvalidInputError
from sparsity.contract import picture_layout, step_makes

MAX_PIXELS = 4096 * 4096


def _png(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _digit(size=(120, 90), box=(30, 20, 60, 80), ink=255, paper=0, mode="L") -> Image.Image:
    img = Image.new(mode, size, paper)
    ImageDraw.Draw(img).rectangle(box, fill=ink)
    return img


def _noise() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))


def _centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(a.shape)
    return float((ys * a).sum() / a.sum()), float((xs * a).sum() / a.sum())


def test_black_on_white_and_white_on_black_twins_give_the_same_array():
    white_on_black = image_to_mnist(_png(_digit(ink=255, paper=0)), MAX_PIXELS)
    black_on_white = image_to_mnist(_png(_digit(ink=0, paper=255)), MAX_PIXELS)
    np.testing.assert_array_equal(white_on_black, black_on_white)
    assert white_on_black.shape == (28, 28)
    assert white_on_black.dtype == np.float32
    assert white_on_black.min() >= 0.0 and white_on_black.max() <= 1.0
    assert white_on_black.max() > 0.9  # the digit is white


def test_off_centre_digit_is_centred_and_fits_20x20():
    out = image_to_mnist(_png(_digit(size=(200, 200), box=(150, 5, 190, 60))), MAX_PIXELS)
    cy, cx = _centre_of_mass(out)
    assert abs(cy - 13.5) <= 0.5 and abs(cx - 13.5) <= 0.5
    rows, cols = np.flatnonzero(out.any(axis=1)), np.flatnonzero(out.any(axis=0))
    assert rows[-1] - rows[0] + 1 <= 21 and cols[-1] - cols[0] + 1 <= 21
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 >= 19  # scaled up to the 20px box


def test_colour_jpeg_and_transparent_png_are_accepted():
    colour = _digit(mode="RGB", ink=(10, 10, 10), paper=(250, 240, 230))
    assert image_to_mnist(_png(colour, "JPEG"), MAX_PIXELS).max() > 0.8
    rgba = Image.new("RGBA", (60, 60), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).ellipse((15, 10, 45, 50), fill=(0, 0, 0, 255))  # black ink, transparent paper
    out = image_to_mnist(_png(rgba), MAX_PIXELS)
    assert out.max() > 0.8 and out[0, 0] == 0.0


def test_already_mnist_sized_digit_keeps_its_shape():
    a = np.zeros((28, 28), dtype=np.float32)
    a[4:24, 10:18] = 1.0  # a 20x8 bar, already centred
    out = to_mnist(a)
    np.testing.assert_allclose(out, a, atol=1e-6)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is not an image at all", "PNG or JPEG"),
        (_png(_noise())[: len(_png(_noise())) // 2], "could not be decoded"),
        (_png(_digit(), "GIF"), "PNG or JPEG"),
    ],
    ids=["empty", "text", "truncated-png", "gif"],
)
def test_bad_files_are_refused_with_a_clear_message(data, message):
    with pytest.raises(InvalidInputError, match=message) as info:
        image_to_mnist(data, MAX_PIXELS)
    assert info.value.field == "image"


def test_enormous_dimensions_are_refused_before_decoding():
    # a 1-bit 20000x20000 PNG compresses to a few kB but would decode to 400 MP
    bomb = _png(Image.new("1", (20000, 20000), 0))
    assert len(bomb) < 100_000
    with pytest.raises(InvalidInputError, match="exceed"):
        decode_image(bomb, MAX_PIXELS)
    # the same check, below Pillow's own bomb threshold, names the dimensions
    with pytest.raises(InvalidInputError, match="5000x4000 pixels, which exceeds the limit of 1000000"):
        decode_image(_png(Image.new("1", (5000, 4000), 0)), 1_000_000)


def test_blank_image_is_refused():
    with pytest.raises(InvalidInputError, match="blank"):
        image_to_mnist(_png(Image.new("L", (50, 50), 255)), MAX_PIXELS)


@pytest.mark.parametrize(
    ("shape", "layout", "digits"),
    [
        ((28, 28), (28, 28, None, False), True),
        ((28, 28, 1), (28, 28, 1, False), True),
        ((1, 28, 28), (28, 28, 1, True), True),
        ((3, 28, 28), (28, 28, 3, True), False),
        ((32, 32, 3), (32, 32, 3, False), False),
        ((1, 12, 12), (12, 12, 1, True), False),
        ((3, 8, 3), (3, 8, 3, False), False),  # reads both ways: channels last
        ((4, 12, 12), None, False),
        ((64,), None, False),
        ((2, 3, 4, 5), None, False),
    ],
)
def test_picture_layouts_channels_last_and_first_and_what_each_step_makes(shape, layout, digits):
    assert picture_layout(shape) == layout
    assert step_makes("resize", shape) is (layout is not None) and step_makes("mnist-digit", shape) is digits


def _halves() -> bytes:
    """24x16: the left half red, the right half blue."""
    img = Image.new("RGB", (24, 16), (255, 0, 0))
    ImageDraw.Draw(img).rectangle((12, 0, 23, 15), fill=(0, 0, 255))
    return _png(img)


def test_a_colour_picture_goes_in_as_rgb_planes_channels_first_and_as_pixels_channels_last():
    last = picture_to_input(_halves(), (8, 12, 3), (0.0, 1.0), "resize", MAX_PIXELS)
    first = picture_to_input(_halves(), (3, 8, 12), (-1.0, 1.0), "resize", MAX_PIXELS)
    assert last.shape == (8, 12, 3) and first.shape == (3, 8, 12) and first.dtype == np.float32
    np.testing.assert_allclose(first, 2 * last.transpose(2, 0, 1) - 1, atol=1e-6)
    red, green, blue = first
    assert (red[:, :5] == 1).all() and (red[:, 7:] == -1).all()
    assert (blue[:, :5] == -1).all() and (blue[:, 7:] == 1).all() and (green == -1).all()


def test_a_grey_picture_channels_first_is_one_plane_and_mnist_digit_takes_grey_28x28_only():
    grey = picture_to_input(_png(_digit()), (1, 30, 40), (0.0, 1.0), "resize", MAX_PIXELS)
    assert grey.shape == (1, 30, 40) and grey.max() == 1.0 and grey.min() == 0.0
    assert picture_to_input(_png(_digit()), (1, 28, 28), (0.0, 1.0), "mnist-digit", MAX_PIXELS).shape == (1, 28, 28)
    with pytest.raises(InvalidInputError, match=r"28x28 grey digits; this model takes \(3, 28, 28\)"):
        picture_to_input(_png(_digit()), (3, 28, 28), (0.0, 1.0), "mnist-digit", MAX_PIXELS)


def test_a_batch_checked_once_is_not_checked_again_but_a_slice_a_copy_or_other_rules_are():
    import numpy as np
    import pytest

    from sparsity.errors import InvalidInputError
    from sparsity.validation import check_batch

    x = np.random.default_rng(0).random((3, 2, 2)).astype(np.float32)
    checked = check_batch(x, field="inputs", item_shape=(2, 2), low=0.0, high=1.0)
    assert check_batch(checked, field="inputs", item_shape=(2, 2), low=0.0, high=1.0) is checked
    checked[0, 0, 0] = 5.0  # (the service never writes into a checked batch; this shows what is checked again)
    assert type(checked * 1) is np.ndarray  # what is computed from it is a plain array
    for again in (checked[:1], checked.copy()):
        with pytest.raises(InvalidInputError, match="must be within"):
            check_batch(again, field="inputs", item_shape=(2, 2), low=0.0, high=1.0)
    with pytest.raises(InvalidInputError, match="must be within"):
        check_batch(checked, field="inputs", item_shape=(2, 2), low=0.0, high=2.0)  # other rules: checked again
