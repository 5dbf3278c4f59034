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
