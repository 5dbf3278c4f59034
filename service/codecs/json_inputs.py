"""Request bodies to input arrays, for any model's input shape and range.

- JSON ``{"inputs": [...]}`` (``/models/{name}/predict``; the aliases use their own key, ``images``):
  a body of numbers and brackets only is parsed by orjson, then made one NumPy array (256 MNIST images: a
  few ms, against about 20 ms through pydantic models; orjson reads 64 digits in 1.4 ms against 2.0 for
  pydantic-core's parser). A body orjson refuses is read again by pydantic-core's parser, which accepts
  ``NaN`` and ``Infinity`` so that the range check can name them. Anything else, or a ragged array, is
  walked to name the first item that breaks a rule (``inputs[0][3]: must be a number``).
- ``.npy`` (``predict_batch``): see :mod:`service.codecs.npy`.

Every refusal is an :class:`~sparsity.errors.InvalidInputError` naming the field and the rule.
"""

from __future__ import annotations

import numpy as np
import orjson
from pydantic_core import from_json

from sparsity.contract import MAX_BATCH
from sparsity.errors import InvalidInputError
from sparsity.validation import check_batch, mark_checked

_NUMBER_SYNTAX = b"0123456789.eE+-[],: \t\r\n"


def _skeleton(key: str) -> bytes:
    return ('{"' + key + '": []}').encode().translate(None, _NUMBER_SYNTAX)


def _first_problem(value, shape: tuple[int, ...], loc: str) -> tuple[str, str] | None:
    """Where ``value`` first departs from nested lists of ``shape`` holding numbers, and the rule."""
    if not shape:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return loc, f"must be a number, got {type(value).__name__ if value is not None else 'null'}"
        return None
    if not isinstance(value, list):
        return loc, f"must be a list of {shape[0]} items"
    if len(value) != shape[0]:
        return loc, f"must have {shape[0]} items, got {len(value)}"
    for i, item in enumerate(value):
        problem = _first_problem(item, shape[1:], f"{loc}[{i}]")
        if problem is not None:
            return problem
    return None


def inputs_from_json(
    body: bytes,
    item_shape: tuple[int, ...],
    value_range: tuple[float, float] | None,
    *,
    key: str = "inputs",
    max_items: int = MAX_BATCH,
) -> np.ndarray:
    """float32 (N, *item_shape) from a JSON body ``{key: [...]}``, checked for shape, finiteness and range
    (in float64, as a JSON number is read); InvalidInputError otherwise."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            data = from_json(body)
        except ValueError as exc:
            raise InvalidInputError("body", f'must be a JSON object {{"{key}": [...]}} ({exc})') from None
    if not isinstance(data, dict):
        raise InvalidInputError("body", f'must be a JSON object {{"{key}": [...]}}')
    if key not in data:
        raise InvalidInputError(key, "Field required")
    extra = sorted(set(data) - {key})
    if extra:
        raise InvalidInputError(extra[0], f"unknown field: the body holds only '{key}'")
    items = data[key]
    if not isinstance(items, list) or not 1 <= len(items) <= max_items:
        raise InvalidInputError(key, f"must be a list of 1 to {max_items} items of shape {tuple(item_shape)}")
    plain = body.translate(None, _NUMBER_SYNTAX) == _skeleton(key)
    try:
        array = np.array(items, dtype=np.float64) if plain else None
    except ValueError:  # ragged nesting
        array = None
    if array is None or array.shape[1:] != tuple(item_shape):
        problem = _first_problem(items, (len(items), *item_shape), key)
        if problem is not None:
            raise InvalidInputError(*problem)
        array = np.array(items, dtype=np.float64)
    low, high = value_range if value_range is not None else (None, None)
    checked = check_batch(array, field=key, item_shape=tuple(item_shape), low=low, high=high, dtype=np.float64)
    return mark_checked(checked.astype(np.float32), item_shape, low, high)  # (checked in float64, as JSON is read)
