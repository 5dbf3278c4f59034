"""Turn an uploaded PNG/JPEG into one input of a picture model, by the step its card declares.

- ``resize`` (the default): the picture resized to the input's height and width (grey, or RGB for
  three channels), its pixels scaled from 0-255 onto the model's input range.
- ``mnist-digit``: what MNIST did to its digits: white on black, scaled to fit a 20x20 box (aspect
  kept) and centred in 28x28 by the centre of mass, in [0, 1].

Uploads are decoded defensively: size checked from the header before any pixel is decoded,
truncated or non-image data refused with a clear message.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from sparsity.contract import MNIST_SHAPE, picture_layout, step_makes
from sparsity.errors import InvalidInputError

FIELD = "image"
ALLOWED_FORMATS = ("PNG", "JPEG")
DIGIT_BOX = 20
INK_THRESHOLD = 0.1  # pixels above this (after inversion, in [0, 1]) count as part of the digit


def decode_image(data: bytes, max_pixels: int, mode: str = "L") -> np.ndarray:
    """Decode PNG/JPEG bytes to a float array in [0, 1] (0 = black): grey (``mode`` L, (H, W)) or RGB
    (``mode`` RGB, (H, W, 3))."""
    if not data:
        raise InvalidInputError(FIELD, "the uploaded file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            width, height = img.size
            if width * height > max_pixels:
                raise InvalidInputError(
                    FIELD, f"image is {width}x{height} pixels, which exceeds the limit of {max_pixels} pixels"
                )
            img.load()
            if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                rgba = img.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(white, rgba)
            grey = img.convert(mode)
    except InvalidInputError:
        raise
    except UnidentifiedImageError:
        raise InvalidInputError(FIELD, "must be a PNG or JPEG image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidInputError(FIELD, f"image dimensions exceed the limit of {max_pixels} pixels") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInputError(FIELD, f"could not be decoded as PNG or JPEG ({exc})") from None
    return np.asarray(grey, dtype=np.float32) / 255.0


def to_mnist(grey: np.ndarray) -> np.ndarray:
    """Grey image in [0, 1] of any size -> (28, 28) float32 MNIST-style digit."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if np.median(border) > 0.5:  # light background: dark digit on white paper
        grey = 1.0 - grey
    ink = grey > INK_THRESHOLD
    if not ink.any():
        raise InvalidInputError(FIELD, "no digit found: the image is blank")
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    crop = grey[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    scale = DIGIT_BOX / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    resized = Image.fromarray((crop * 255).astype(np.uint8)).resize((new_w, new_h), Image.Resampling.LANCZOS)
    digit = np.asarray(resized, dtype=np.float32) / 255.0
    return _centre_by_mass(digit)


def _centre_by_mass(digit: np.ndarray) -> np.ndarray:
    height, width = MNIST_SHAPE
    total = digit.sum()
    ys, xs = np.indices(digit.shape)
    cy, cx = (ys * digit).sum() / total, (xs * digit).sum() / total
    top = int(round((height - 1) / 2 - cy))
    left = int(round((width - 1) / 2 - cx))
    canvas = np.zeros(MNIST_SHAPE, dtype=np.float32)
    # paste with clipping: the box is 20x20, so at most a few pixels can fall off an edge
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + digit.shape[0], height), min(left + digit.shape[1], width)
    canvas[y0:y1, x0:x1] = digit[y0 - top : y1 - top, x0 - left : x1 - left]
    return np.clip(canvas, 0.0, 1.0)


def image_to_mnist(data: bytes, max_pixels: int) -> np.ndarray:
    """Uploaded bytes -> (28, 28) float32 array ready for the MNIST model."""
    return to_mnist(decode_image(data, max_pixels))


def resize(picture: np.ndarray, height: int, width: int) -> np.ndarray:
    """A [0, 1] picture (H, W) or (H, W, 3) resized to ``height`` x ``width``, still in [0, 1]."""
    image = Image.fromarray(np.round(picture * 255).astype(np.uint8))
    resized = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32) / 255.0


def picture_to_input(
    data: bytes, input_shape: tuple[int, ...], value_range: tuple[float, float], step: str | None, max_pixels: int
) -> np.ndarray:
    """Uploaded bytes -> one input of ``input_shape`` ((H, W), (H, W, 1), (H, W, 3), (1, H, W) or (3, H, W))
    by ``step``."""
    height, width, channels, first = picture_layout(input_shape)
    if step == "mnist-digit":
        if not step_makes(step, input_shape):
            raise InvalidInputError(
                FIELD, f"the mnist-digit step makes 28x28 grey digits; this model takes {input_shape}"
            )
        return image_to_mnist(data, max_pixels).reshape(input_shape)
    picture = resize(decode_image(data, max_pixels, "RGB" if channels == 3 else "L"), height, width)
    if channels == 3 and first:
        picture = picture.transpose(2, 0, 1)  # (H, W, RGB) -> (RGB, H, W)
    low, high = value_range
    return (low + picture * (high - low)).astype(np.float32).reshape(input_shape)
