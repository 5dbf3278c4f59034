"""The reviewed items of the prediction log as a training set: each kept input a reviewer labelled with a class
of the model (items labelled ``invalid`` are counted, not exported)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from predlog.rows import decode_input
from predlog.schema import INVALID
from predlog.store import Store


@dataclass
class Reviewed:
    x: np.ndarray  # (N, *input shape)
    y: np.ndarray  # (N,) class indices
    ids: np.ndarray  # (N,) the log's row ids
    invalid: int  # items a reviewer said are not valid inputs (left out)


def reviewed_dataset(store: Store, model: str, class_names: list[str], version: str | None = None) -> Reviewed:
    """Every reviewed item of ``model`` with its input, as arrays; a label that is no class of ``class_names``
    (the model's classes changed since the review) is an error naming the row."""
    xs, ys, ids, invalid = [], [], [], 0
    for row_id, data, label in store.reviewed(model, version):
        if label == INVALID:
            invalid += 1
            continue
        if label not in class_names:
            raise ValueError(f"logged item {row_id} of {model} is labelled {label!r}: not a class of the model")
        xs.append(decode_input(data))
        ys.append(class_names.index(label))
        ids.append(row_id)
    if not xs:
        return Reviewed(np.zeros((0,)), np.zeros((0,), np.int64), np.zeros((0,), np.int64), invalid)
    return Reviewed(np.stack(xs), np.asarray(ys, np.int64), np.asarray(ids, np.int64), invalid)
