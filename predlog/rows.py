"""A prediction as the log's rows: one an item answered, in :data:`predlog.schema.COLUMNS` order.

Which items are written: every atypical item, and each other item with probability ``sample``. Which inputs are
kept (``inputs``): ``atypical`` (the default: the inputs a reviewer looks at), ``all`` or ``none``. An input is
stored as its ``.npy`` bytes compressed with zlib (a digit, 3,136 bytes of float32, takes about 600): exactly the
array the model was given, so a reviewer's replay answers as the request did.
"""

from __future__ import annotations

import io
import zlib
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import orjson

INPUTS = ("atypical", "all", "none")


class Entry(NamedTuple):
    """What the service hands the log for one answered request (made on the request's path: a tuple, nothing
    computed; ``request_id`` None: the writer gives it one)."""

    at: float
    request_id: str | None
    model: str
    version: str
    role: str
    route: str
    x: np.ndarray | None  # None when no input of it is to be kept
    prediction: object  # modelstore.runtime.Prediction, or the part of it the log reads
    latency: float  # seconds


def encode_input(item: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(item), allow_pickle=False)
    return zlib.compress(buffer.getvalue(), 1)


def decode_input(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(zlib.decompress(data)), allow_pickle=False)


LOGGED = ("probabilities", "layer_sparsity", "overall", "scores", "atypical", "contributions")
"""The arrays of a prediction the log's rows and the drift windows read (not the per-unit ones)."""


def logged_part(prediction) -> SimpleNamespace:
    """The part of ``prediction`` an entry keeps (:data:`LOGGED`: references, nothing copied)."""
    return SimpleNamespace(**{name: getattr(prediction, name) for name in LOGGED})


def joined(entries: list[Entry]) -> SimpleNamespace:
    """The predictions of several entries of one model version as one: each array concatenated in entry order
    (the work on them is then done once a flush, not once a request)."""
    first = entries[0].prediction
    if len(entries) == 1:
        return first
    predictions = [e.prediction for e in entries]
    contributions = first.contributions
    return SimpleNamespace(
        probabilities=np.concatenate([p.probabilities for p in predictions]),
        layer_sparsity={
            name: np.concatenate([p.layer_sparsity[name] for p in predictions]) for name in first.layer_sparsity
        },
        overall=np.concatenate([np.asarray(p.overall) for p in predictions]),
        scores=np.concatenate([np.asarray(p.scores, dtype=np.float64) for p in predictions]),
        atypical=np.concatenate([np.asarray(p.atypical, dtype=bool) for p in predictions]),
        contributions=None if contributions is None else np.concatenate([p.contributions for p in predictions]),
    )


def rows_of(entry: Entry, sample: float, inputs: str, rng: np.random.Generator) -> list[tuple]:
    """The rows to write for ``entry``."""
    return rows_of_group([entry], joined([entry]), sample, inputs, rng)


def rows_of_group(
    entries: list[Entry], p, sample: float, inputs: str, rng: np.random.Generator, ids=None
) -> list[tuple]:
    """The rows to write for ``entries`` (one model version) whose predictions joined are ``p``; ``ids``: gives a
    request without one its id."""
    n = len(p.probabilities)
    atypical = np.asarray(p.atypical, dtype=bool)
    keep = atypical if sample <= 0 else (atypical | (rng.random(n) < sample) if sample < 1 else np.ones(n, bool))
    chosen = np.flatnonzero(keep)
    if len(chosen) == 0:
        return []
    sizes = [len(e.prediction.probabilities) for e in entries]
    owner = np.repeat(np.arange(len(entries)), sizes)[chosen].tolist()
    starts = np.cumsum([0, *sizes])[:-1].tolist()
    labels = np.argmax(p.probabilities[chosen], axis=1).tolist()
    top = p.probabilities[chosen].max(axis=1).tolist()
    layers = list(p.layer_sparsity)
    zeros = np.stack([p.layer_sparsity[name][chosen] for name in layers], axis=1).tolist() if layers else None
    if p.contributions is not None:  # a linear model: its share of zero coefficient x feature terms
        layers, zeros = ["contributions"], [[v] for v in np.asarray(p.contributions)[chosen].tolist()]
    overall = np.asarray(p.overall)[chosen].tolist()
    scores = np.asarray(p.scores, dtype=np.float64)[chosen]
    scores = [None if not np.isfinite(s) else s for s in scores.tolist()]
    flags = atypical[chosen].tolist()
    named = [e.request_id or (ids() if ids is not None else "") for e in entries]
    rows = []
    for k, i in enumerate(chosen.tolist()):
        e = entries[owner[k]]
        item = i - starts[owner[k]]
        kept = e.x is not None and (inputs == "all" or (inputs == "atypical" and flags[k]))
        rows.append((
            e.at, named[owner[k]], item, e.model, e.version, e.role, e.route, labels[k], top[k],
            orjson.dumps(dict(zip(layers, zeros[k], strict=True))).decode() if zeros is not None else "{}",
            overall[k], scores[k], flags[k], round(e.latency * 1000.0, 4), encode_input(e.x[item]) if kept else None,
        ))  # fmt: skip
    return rows
