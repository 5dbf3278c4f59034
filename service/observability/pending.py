"""Figures added up in a worker's memory and written to its Prometheus series in one go: every FLUSH_SECONDS by
one thread, and before this worker answers ``/metrics``.

A multiprocess series write is a locked write to a memory-mapped file: about 3 microseconds, and a request's
figures (the inference time, the typicality score, each layer's zeros, the label, the atypical count) made about
fifteen of them, with NumPy around each: 73 us of a 355 us one-image request (`make profile`). Here a request's
figures are a few list increments; Prometheus reads them at most FLUSH_SECONDS late (it scrapes every 15 s).
It uses prometheus_client's histogram internals (``_upper_bounds``, ``_buckets``, ``_sum``; the version is pinned),
and a unit test checks the exposition equals one ``observe`` per value.
"""

from __future__ import annotations

import threading
import weakref
from bisect import bisect_left

import numpy as np

FLUSH_SECONDS = 1.0
"""How often a worker's pending figures go to its Prometheus series."""


class PendingHistogram:
    """Observations of one histogram child, held until :meth:`flush`."""

    __slots__ = ("bounds", "child", "counts", "total")

    def __init__(self, child) -> None:
        self.child = child
        self.bounds = list(child._upper_bounds)  # the last is +Inf
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def add(self, value: float) -> None:
        """``observe(value)``: the first bucket whose upper bound is >= it (a NaN goes to the sum alone, as
        ``observe`` does)."""
        if value == value:
            self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def add_many(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.size == 1:
            self.add(float(values[0]))
            return
        if values.size == 0:
            return
        counts = np.bincount(np.searchsorted(self.bounds, values, side="left"), minlength=len(self.bounds))
        for i in np.flatnonzero(counts[: len(self.bounds)]).tolist():
            self.counts[i] += int(counts[i])
        self.total += float(values.sum())

    def flush(self) -> None:
        counts, total = self.counts, self.total
        if not any(counts) and total == 0.0:
            return
        self.counts, self.total = [0] * len(self.bounds), 0.0
        for i, count in enumerate(counts):
            if count:
                self.child._buckets[i].inc(count)
        self.child._sum.inc(total)


class PendingCounter:
    """Increments of one counter child, held until :meth:`flush`."""

    __slots__ = ("child", "count")

    def __init__(self, child) -> None:
        self.child, self.count = child, 0

    def flush(self) -> None:
        if self.count:
            count, self.count = self.count, 0
            self.child.inc(count)


class Flusher:
    """One thread a process that flushes every registered owner (anything with a ``flush()``) every
    ``interval`` seconds, and :func:`flush_all` for a flush now. Owners are held weakly."""

    def __init__(self, interval: float = FLUSH_SECONDS) -> None:
        self.interval = interval
        self._owners: weakref.WeakSet = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def register(self, owner) -> None:
        with self._lock:
            self._owners.add(owner)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="metrics-flush", daemon=True)
                self._thread.start()

    def unregister(self, owner) -> None:
        with self._lock:
            self._owners.discard(owner)

    def flush_all(self) -> None:
        with self._lock:
            owners = list(self._owners)
        for owner in owners:
            owner.flush()

    def _run(self) -> None:
        stopped = threading.Event()
        while not stopped.wait(self.interval):
            self.flush_all()


FLUSHER = Flusher()


def flush_all() -> None:
    """Write every pending figure of this process now (before it answers ``/metrics``)."""
    FLUSHER.flush_all()


class FiringCounts:
    """Per-unit firing counts, added up in memory per request and written to the counters in one go
    every FLUSH_SECONDS (and on :meth:`flush`): by a thread of its own, or by its owner (``interval=None``).

    One image fires about a hundred units; a multiprocess counter write per unit per request would
    cost about 0.2 ms on a 1 ms one-image request. Added here it costs a NumPy sum. The samples
    counter is written in the same flush, so samples and unit counts always agree in a scrape.

    ``units`` maps each layer to its unit counters, or, for a model summarised per layer (wider than the
    series limit), to its :data:`NEVER_FIRED` gauge: then the totals are kept here and the gauge set to the
    count of units still at zero.
    """

    def __init__(
        self, samples, units: dict[str, list], interval: float | None = FLUSH_SECONDS, summary: dict | None = None
    ):
        self._samples_counter = samples
        self._unit_counters = units
        self._summary = summary or {}  # layer -> (gauge, units)
        sizes = {layer: len(children) for layer, children in units.items()}
        sizes |= {layer: width for layer, (_, width) in self._summary.items()}
        self._pending = {layer: np.zeros(n, dtype=np.int64) for layer, n in sizes.items()}
        self._totals = {layer: np.zeros(width, dtype=np.int64) for layer, (_, width) in self._summary.items()}
        self._pending_samples = 0
        self._lock = threading.Lock()
        self._interval = interval
        self._stopped = threading.Event()
        for _layer, (gauge, width) in self._summary.items():
            gauge.set(width)
        if interval is not None:  # None: its owner flushes it (ModelMetrics, with the process's one flusher)
            threading.Thread(target=self._run, name="firing-counts-flush", daemon=True).start()

    def add(self, fired: dict[str, np.ndarray]) -> None:
        """``fired[layer]``: (N, units) bool, one row per sample."""
        with self._lock:
            for layer, rows in fired.items():
                self._pending[layer] += rows.sum(axis=0)
            self._pending_samples += len(next(iter(fired.values())))

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {k: np.zeros_like(v) for k, v in self._pending.items()}
            samples, self._pending_samples = self._pending_samples, 0
        for layer, counts in pending.items():
            if layer in self._summary:
                self._totals[layer] += counts
                self._summary[layer][0].set(int(np.count_nonzero(self._totals[layer] == 0)))
                continue
            children = self._unit_counters[layer]
            for unit in np.flatnonzero(counts).tolist():
                children[unit].inc(int(counts[unit]))
        if samples:
            self._samples_counter.inc(samples)

    def stop(self) -> None:
        """Flush what is pending and stop the flushing thread (the version is unloaded)."""
        self._stopped.set()
        self.flush()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            self.flush()
