"""Drift over windows of requests: does the traffic as a whole still look like the calibration data?

Each signal (each ReLU layer's exact-zero share of an item, and the item's typicality score) has a baseline: the
calibration items' values cut into bins at their quantiles (:func:`baseline_of`, stored in the model's card at
registration). A window of served items is counted into the same bins and compared with the population
stability index (PSI, :func:`psi`): the sum over bins of ``(served - expected) * ln(served / expected)``.

Why PSI and not a two-sample test: a window is compared with a fixed baseline, not with another sample, and the
figure must mean the same at any traffic: a KS test or MMD on 500 items calls a shift of no consequence
significant once windows are large, while the PSI measures how far the two distributions are, with the usual
reading (under 0.1: none, 0.1-0.25: some, over 0.25: a real shift). Counting an item into bins costs a binary
search a signal; no item is kept. The bins are finer in the upper tail (95th and 99th percentiles) so a minority
of strange inputs (their scores beyond the 99th percentile) moves the index early. Calibration against clean data
is measured (``make bench-drift``): with 500-item windows, clean held-back digits stay far under the alarm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
FLOOR = 1e-3
"""A bin's share is never taken below this (an empty bin would make the index infinite)."""
ALARM = 0.25
"""The PSI over which a window is said to have drifted (the customary 'significant shift')."""
WINDOW = 500
"""Items a window holds by default (``DRIFT_WINDOW``)."""
SCORE = "typicality_score"
"""The score signal's name (the layers' signals are their layer names)."""


@dataclass(frozen=True)
class Bins:
    """A signal's baseline: the inner bin edges and the calibration share of each of the ``len(edges) + 1`` bins."""

    edges: tuple[float, ...]
    shares: tuple[float, ...]

    def to_dict(self) -> dict:
        return {"edges": list(self.edges), "shares": list(self.shares)}

    @classmethod
    def from_dict(cls, data: dict) -> Bins:
        return cls(tuple(float(e) for e in data["edges"]), tuple(float(s) for s in data["shares"]))

    def counts(self, values: np.ndarray) -> np.ndarray:
        """How many of ``values`` fall in each bin (a value on an edge goes to the bin above it)."""
        index = np.searchsorted(np.asarray(self.edges), values, side="right")
        return np.bincount(index, minlength=len(self.shares))


def baseline_of(values: np.ndarray, quantiles: tuple[float, ...] = QUANTILES) -> Bins:
    """The bins of ``values`` (calibration items' values of one signal): edges at its quantiles, repeated edges
    merged (a share of zeros takes few distinct values), each bin's share of the values."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        raise ValueError("a drift baseline needs at least one finite value")
    edges = tuple(float(e) for e in np.unique(np.quantile(values, quantiles, method="higher")))
    counts = Bins(edges, (0.0,) * (len(edges) + 1)).counts(values)
    return Bins(edges, tuple(float(c) for c in counts / len(values)))


def psi(counts: np.ndarray, shares: tuple[float, ...]) -> float:
    """The population stability index of a window's bin counts against the baseline's shares."""
    served = np.maximum(np.asarray(counts, dtype=np.float64) / max(int(np.sum(counts)), 1), FLOOR)
    expected = np.maximum(np.asarray(shares, dtype=np.float64), FLOOR)
    return float(np.sum((served - expected) * np.log(served / expected)))


@dataclass
class Window:
    """The running window of one model version: items counted per signal until ``size``, then closed."""

    baseline: dict[str, Bins]
    size: int = WINDOW
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    items: int = 0

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.counts = {name: np.zeros(len(bins.shares), dtype=np.int64) for name, bins in self.baseline.items()}
        self.items = 0

    def add(self, signals: dict[str, np.ndarray]) -> list[dict[str, float]]:
        """Count a batch of items (each signal's values, one an item, in the same order) and return the PSI of
        every window the batch closed (usually none or one)."""
        lengths = {len(v) for v in signals.values()}
        total = lengths.pop() if lengths else 0
        closed, start = [], 0
        while start < total:
            take = min(self.size - self.items, total - start)
            for name, bins in self.baseline.items():
                values = signals.get(name)
                if values is not None:
                    self.counts[name] += bins.counts(np.asarray(values[start : start + take], dtype=np.float64))
            self.items += take
            start += take
            if self.items >= self.size:
                closed.append({name: psi(self.counts[name], bins.shares) for name, bins in self.baseline.items()})
                self.reset()
        return closed
