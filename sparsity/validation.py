"""Checks on arrays before they are counted: shape, finiteness, range."""

from __future__ import annotations

import weakref

import numpy as np

from sparsity.errors import InvalidInputError

_CHECKED: dict[int, tuple[weakref.ref, tuple]] = {}
"""The batches :func:`check_batch` passed, by identity, with the rules they passed (item shape, low, high)."""


def mark_checked(arr: np.ndarray, item_shape: tuple[int, ...], low: float | None, high: float | None) -> np.ndarray:
    """Remember that ``arr`` (this very array, not a slice or a copy of it) passed these rules: checked again
    against the same rules it is returned as it is. A request's inputs are checked as the service decodes them and
    again by the model's probe; the second check cost 10 us of a one-image request."""
    key = id(arr)
    _CHECKED[key] = (weakref.ref(arr, lambda _ref, key=key: _CHECKED.pop(key, None)), (tuple(item_shape), low, high))
    return arr


def _passed(x, rules: tuple) -> bool:
    return _rules_of(x) == rules


def check_batch(
    x: np.ndarray,
    *,
    field: str,
    item_shape: tuple[int, ...],
    low: float | None = None,
    high: float | None = None,
    dtype: type = np.float32,
) -> np.ndarray:
    """Return ``x`` as ``dtype`` (float32 by default) after checking shape ``(N, *item_shape)``, finiteness and range.

    Raises :class:`InvalidInputError` naming ``field`` and the broken rule, so nothing invalid is
    ever counted.
    """
    if isinstance(x, np.ndarray) and x.dtype == dtype and _passed(x, (tuple(item_shape), low, high)):
        return x
    arr = np.asarray(x)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_:
        raise InvalidInputError(field, "must contain only numbers")
    expected = "(N, " + ", ".join(str(d) for d in item_shape) + ")"
    if arr.ndim != len(item_shape) + 1 or tuple(arr.shape[1:]) != tuple(item_shape):
        raise InvalidInputError(field, f"must have shape {expected}, got {tuple(arr.shape)}")
    if arr.shape[0] == 0:
        raise InvalidInputError(field, "must hold at least one item")
    arr = arr.astype(dtype, copy=False)
    # the common case in two reductions: NaN fails both comparisons, and a finite range excludes infinity
    # (measured on 28x28 images: 420 -> 46 us at 256, 14 -> 9 us at one)
    bounded = low is not None and high is not None and np.isfinite(low) and np.isfinite(high)
    if bounded and arr.min() >= low and arr.max() <= high:
        return mark_checked(arr, item_shape, low, high)
    finite = np.isfinite(arr)
    if not finite.all():
        index = _first_bad(finite)
        raise InvalidInputError(f"{field}{index}", "must be a finite number (no NaN or Infinity)")
    if low is not None or high is not None:
        ok = np.ones(arr.shape, dtype=bool)
        if low is not None:
            ok &= arr >= low
        if high is not None:
            ok &= arr <= high
        if not ok.all():
            index = _first_bad(ok)
            bad = float(arr[tuple(np.argwhere(~ok)[0])])
            raise InvalidInputError(f"{field}{index}", f"must be within [{low}, {high}], got {bad}")
    return mark_checked(arr, item_shape, low, high)


def _first_bad(ok: np.ndarray) -> str:
    """Render the index of the first False in ``ok`` as ``[i][j]...``."""
    return "".join(f"[{i}]" for i in np.argwhere(~ok)[0])


def join_checked(parts: list[np.ndarray]) -> np.ndarray:
    """``parts`` concatenated, carrying their rules when every part passed the same ones (else checked again)."""
    joined = np.concatenate(parts)
    rules = {_rules_of(part) for part in parts}
    if len(rules) == 1 and None not in rules:
        item_shape, low, high = rules.pop()
        return mark_checked(joined, item_shape, low, high)
    return joined


def _rules_of(x) -> tuple | None:
    entry = _CHECKED.get(id(x))
    return entry[1] if entry is not None and entry[0]() is x else None
