"""A prediction as the log's rows: one an item answered, in :data:`predlog.schema.COLUMNS` order.

Which items are written: every atypical item, and each other item with probability ``sample``. Which inputs are
kept (``inputs``): ``atypical`` (the default: the inputs a reviewer looks at), ``all`` or ``none``. An input is
stored as its ``.npy`` bytes compressed with zlib (a digit, 3,136 bytes of float32, takes about 600): exactly the
array the model was given, so a reviewer's replay answers as the request did.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass

import numpy as np
import orjson

INPUTS = ("atypical", "all", "none")


@dataclass(frozen=True)
class Entry:
    """What the service hands the log for one answered request (taken as is on the request's path)."""

    at: float
    request_id: str
    model: str
    version: str
    role: str
    route: str
    x: np.ndarray
    prediction: object  # modelstore.runtime.Prediction
    latency: float  # seconds


def encode_input(item: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(item), allow_pickle=False)
    return zlib.compress(buffer.getvalue(), 1)


def decode_input(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(zlib.decompress(data)), allow_pickle=False)


def rows_of(entry: Entry, sample: float, inputs: str, rng: np.random.Generator) -> list[tuple]:
    """The rows to write for ``entry``."""
    p = entry.prediction
    n = len(p.probabilities)
    atypical = np.asarray(p.atypical, dtype=bool)
    keep = atypical if sample <= 0 else (atypical | (rng.random(n) < sample) if sample < 1 else np.ones(n, bool))
    chosen = np.flatnonzero(keep)
    if len(chosen) == 0:
        return []
    labels = p.labels[chosen].tolist()
    top = p.probabilities[chosen].max(axis=1).tolist()
    layers = list(p.layer_sparsity)
    zeros = np.stack([p.layer_sparsity[name][chosen] for name in layers], axis=1).tolist() if layers else None
    if p.contributions is not None:  # a linear model: its share of zero coefficient x feature terms
        layers, zeros = ["contributions"], [[v] for v in np.asarray(p.contributions)[chosen].tolist()]
    overall = np.asarray(p.overall)[chosen].tolist()
    scores = np.asarray(p.scores, dtype=np.float64)[chosen]
    scores = [None if not np.isfinite(s) else s for s in scores.tolist()]
    flags = atypical[chosen].tolist()
    latency_ms = round(entry.latency * 1000.0, 4)
    rows = []
    for k, i in enumerate(chosen.tolist()):
        kept = inputs == "all" or (inputs == "atypical" and flags[k])
        rows.append((
            entry.at, entry.request_id, i, entry.model, entry.version, entry.role, entry.route, labels[k], top[k],
            orjson.dumps(dict(zip(layers, zeros[k], strict=True))).decode() if zeros is not None else "{}",
            overall[k], scores[k], flags[k], latency_ms, encode_input(entry.x[i]) if kept else None,
        ))  # fmt: skip
    return rows
