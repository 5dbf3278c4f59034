"""Read a NumPy ``.npy`` body (as written by ``numpy.save``) of MNIST images, never unpickling.

Only the header is parsed (``numpy.lib.format``'s reader: a Python literal, evaluated safely);
the data is then viewed in place with ``numpy.frombuffer``. Object arrays, other dtypes and
shapes, truncated or over-long data and out-of-range sizes are refused with
:class:`~sparsity.errors.InvalidInputError` naming the rule.
"""

from __future__ import annotations

import io

import numpy as np

from sparsity.contract import MNIST_PIXEL_MAX, MNIST_SHAPE
from sparsity.errors import InvalidInputError

MAX_NPY_IMAGES = 4096
"""Most images one ``.npy`` batch may hold."""
ACCEPTED_DTYPES = {np.dtype("uint8"): "uint8 (pixels 0-255)", np.dtype("<f4"): "float32 (0-1)"}
_MAGIC = b"\x93NUMPY"
_MAX_HEADER = 10_000


def _header(body: bytes) -> tuple[tuple, bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, data_offset)`` from the header, or a refusal."""
    if not body.startswith(_MAGIC) or len(body) < 10:
        raise InvalidInputError("body", "must be a .npy file as written by numpy.save (magic string missing)")
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream, max_header_size=_MAX_HEADER)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream, max_header_size=_MAX_HEADER)
        else:
            raise InvalidInputError("body", f".npy format version {version[0]}.{version[1]} is not supported")
    except InvalidInputError:
        raise
    except Exception as exc:  # numpy raises ValueError/SyntaxError/EOFError... for malformed headers
        raise InvalidInputError("body", f"malformed .npy header ({exc})") from None
    return shape, fortran, dtype, stream.tell()


def decode_npy_images(body: bytes, max_images: int = MAX_NPY_IMAGES) -> np.ndarray:
    """Return the images of a ``.npy`` body as float32 (N, 28, 28) in [0, 1].

    Accepts dtype uint8 (divided by 255) or little-endian float32 already in [0, 1] (the range is
    checked by the probe, which names the first bad pixel)."""
    shape, fortran, dtype, offset = _header(body)
    if dtype.hasobject:
        raise InvalidInputError("body", "object arrays are refused (a .npy body is never unpickled)")
    if dtype not in ACCEPTED_DTYPES:
        raise InvalidInputError("body", f"dtype must be {' or '.join(ACCEPTED_DTYPES.values())}, got {dtype.str}")
    if len(shape) != 3 or tuple(shape[1:]) != MNIST_SHAPE:
        raise InvalidInputError("body", f"shape must be (N, 28, 28), got {tuple(shape)}")
    count = shape[0]
    if not 1 <= count <= max_images:
        raise InvalidInputError("body", f"must hold 1 to {max_images} images, got {count}")
    values = count * MNIST_SHAPE[0] * MNIST_SHAPE[1]
    expected = values * dtype.itemsize
    got = len(body) - offset
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        raise InvalidInputError("body", f"data {what}: shape {tuple(shape)} needs {expected} bytes, got {got}")
    images = np.frombuffer(body, dtype=dtype, count=values, offset=offset)
    images = images.reshape(shape, order="F" if fortran else "C")
    if dtype == np.uint8:
        return images.astype(np.float32) / np.float32(MNIST_PIXEL_MAX)
    return np.ascontiguousarray(images)
