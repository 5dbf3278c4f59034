"""Read a NumPy ``.npy`` body (as written by ``numpy.save``) of a model's inputs, never unpickling.

Only the header is parsed (``numpy.lib.format``'s reader: a Python literal, evaluated safely);
the data is then viewed in place with ``numpy.frombuffer``. Object arrays, other dtypes and
shapes, truncated or over-long data and out-of-range sizes are refused with
:class:`~sparsity.errors.InvalidInputError` naming the rule.
"""

from __future__ import annotations

import io

import numpy as np

from sparsity.contract import MAX_NPY_ITEMS
from sparsity.errors import InvalidInputError

ACCEPTED_DTYPES = {np.dtype("uint8"): "uint8 (pixels 0-255)", np.dtype("<f4"): "float32 (in the input range)"}
PIXEL_MAX = 255.0
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


def decode_npy(
    body: bytes,
    item_shape: tuple[int, ...],
    value_range: tuple[float, float],
    max_items: int = MAX_NPY_ITEMS,
) -> np.ndarray:
    """The items of a ``.npy`` body as float32 (N, *item_shape).

    Accepts little-endian float32, already in the model's input range (checked by the probe, which names
    the first bad value), or uint8 pixels 0-255, scaled linearly onto the input range (for a [0, 1] model,
    ``pixel / 255``)."""
    shape, fortran, dtype, offset = _header(body)
    if dtype.hasobject:
        raise InvalidInputError("body", "object arrays are refused (a .npy body is never unpickled)")
    if dtype not in ACCEPTED_DTYPES:
        raise InvalidInputError("body", f"dtype must be {' or '.join(ACCEPTED_DTYPES.values())}, got {dtype.str}")
    if len(shape) != len(item_shape) + 1 or tuple(shape[1:]) != tuple(item_shape):
        expected = "(N, " + ", ".join(str(d) for d in item_shape) + ")"
        raise InvalidInputError("body", f"shape must be {expected}, got {tuple(shape)}")
    count = shape[0]
    if not 1 <= count <= max_items:
        raise InvalidInputError("body", f"must hold 1 to {max_items} items, got {count}")
    values = count * int(np.prod(item_shape))
    expected = values * dtype.itemsize
    got = len(body) - offset
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        raise InvalidInputError("body", f"data {what}: shape {tuple(shape)} needs {expected} bytes, got {got}")
    items = np.frombuffer(body, dtype=dtype, count=values, offset=offset)
    items = items.reshape(shape, order="F" if fortran else "C")
    if dtype == np.uint8:
        low, high = value_range
        scaled = items.astype(np.float32) / np.float32(PIXEL_MAX / (high - low))  # [0, 1]: exactly pixel / 255
        return scaled + np.float32(low) if low else scaled
    return np.ascontiguousarray(items)
