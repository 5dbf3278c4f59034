"""The prediction log's writer: a bounded queue a worker, filled on the request's path (an append, or a count
of the dropped entry when the queue is full: never a wait), and emptied by one thread every
:data:`FLUSH_SECONDS` into the database in one transaction. The same thread counts every item into the drift
windows (:mod:`service.logbook.drift`).

A database that fails (down, full, locked too long) costs the rows of that flush (counted as ``failed``, one log
line a minute at most) and the store is opened again on the next; answers never wait for it. At exit the queue
is flushed once. Rows lost to ``kill -9`` are at most those queued since the last flush.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np
from prometheus_client import Counter

from predlog.rows import Entry, joined, logged_part, rows_of_group
from predlog.store import Store
from service.logbook.drift import DriftMonitors

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.5
CHUNK = 1024
"""Entries handled between two yields of the interpreter lock: a flush never holds the event loop back for more
than one chunk's work (about a millisecond)."""
ENTRY_BYTES, ITEM_BYTES = 512, 256
"""What an entry costs besides its inputs, roughly (the tuple, the prediction's arrays), for the queue's bound."""
PURGE_SECONDS = 600.0
LOG_ROWS = Counter(
    "prediction_log_rows",
    "Rows of the prediction log: written, dropped (the queue was full) or failed (the database refused them)",
    ["outcome"],
)
for _outcome in ("written", "dropped", "failed"):
    LOG_ROWS.labels(_outcome)


def size_of(entry: Entry) -> int:
    """The bytes an entry is counted for in the queue's bound."""
    return (0 if entry.x is None else entry.x.nbytes) + ENTRY_BYTES + ITEM_BYTES * len(entry.prediction.probabilities)


class LogWriter:
    """``offer`` on the request's path; the thread does the rest. ``open_store`` None: no rows are written (the
    drift windows still count)."""

    def __init__(
        self,
        open_store: Callable[[], Store] | None,
        sample: float = 1.0,
        inputs: str = "atypical",
        max_queue_bytes: int = 16 * 1024 * 1024,
        retention_days: float = 30.0,
        monitors: DriftMonitors | None = None,
    ) -> None:
        self.open_store, self.sample, self.inputs = open_store, sample, inputs
        self.max_queue_bytes, self.retention = max_queue_bytes, retention_days * 86400.0
        self.monitors = monitors if monitors is not None else DriftMonitors()
        self._queue: deque[Entry] = deque()
        self._store: Store | None = None
        self._dropped = 0  # items, since the last flush
        self._queued = 0  # bytes the queue holds (its inputs, and a little for the rest)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid():x}-{int(time.time()):x}-"
        self._rng = np.random.default_rng()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._complained = 0.0
        self._purged = 0.0
        self.written = self.failed = 0

    def request_id(self) -> str:
        """An id for a request that came without one: unique per worker start."""
        return self._prefix + str(next(self._ids))

    def kept(self, x: np.ndarray, prediction) -> tuple[np.ndarray | None, object]:
        """What an entry holds of a request: its inputs only when some will be stored (``inputs`` all, or atypical
        and one item is), and of its prediction only the arrays the rows and the drift read (not the per-unit
        ones, which for a large batch are megabytes): the queue holds no more than it needs."""
        if self.inputs == "none" or (self.inputs == "atypical" and not prediction.atypical.any()):
            x = None
        return x, logged_part(prediction)

    def offer(self, entry: Entry) -> None:
        """Queue ``entry``, or count its items as dropped when the queue holds ``max_queue_bytes`` already."""
        if self._thread is None:  # not started (a data plane outside a worker): nothing is kept
            return
        items, size = len(entry.prediction.probabilities), size_of(entry)
        with self._lock:
            if self._queued + size > self.max_queue_bytes:
                self._dropped += items
                return
            self._queued += size
        self._queue.append(entry)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()
            atexit.register(self.stop)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=5)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            try:
                self.flush()
            except Exception:  # never let the thread die: the next flush tries again
                log.exception("prediction log: a flush failed")

    def flush(self) -> int:
        """Write what is queued (one transaction), count it into the drift windows; returns the rows written."""
        count = len(self._queue)
        entries = [self._queue.popleft() for _ in range(count)]
        with self._lock:
            self._queued -= sum(size_of(entry) for entry in entries)
            dropped, self._dropped = self._dropped, 0
        if dropped:
            LOG_ROWS.labels("dropped").inc(dropped)
        rows: list[tuple] = []
        groups: dict[tuple[str, str], list[Entry]] = {}
        for entry in entries:
            groups.setdefault((entry.model, entry.version), []).append(entry)
        for (model, version), group in groups.items():
            for start in range(0, len(group), CHUNK):
                chunk = group[start : start + CHUNK]
                prediction = joined(chunk)  # one pass over the arrays a chunk, not one a request
                self.monitors.add(model, version, prediction)
                if self.open_store is not None:
                    rows += rows_of_group(chunk, prediction, self.sample, self.inputs, self._rng, self.request_id)
                time.sleep(0)  # hand the interpreter to the event loop between chunks
        if rows:
            self._write(rows)
        if self.retention and time.time() - self._purged > PURGE_SECONDS:
            self._purge()
        return len(rows)

    def _connected(self) -> Store:
        if self._store is None:
            self._store = self.open_store()
        return self._store

    def _write(self, rows: list[tuple]) -> None:
        try:
            self._connected().insert(rows)
        except Exception as exc:
            self.failed += len(rows)
            LOG_ROWS.labels("failed").inc(len(rows))
            self._forget_store()
            if time.monotonic() - self._complained > 60:
                self._complained = time.monotonic()
                log.warning("prediction log: %d rows not written: %s", len(rows), str(exc).splitlines()[0])
            return
        self.written += len(rows)
        LOG_ROWS.labels("written").inc(len(rows))

    def _purge(self) -> None:
        self._purged = time.time()
        if self.open_store is None:
            return
        try:
            removed = self._connected().purge(time.time() - self.retention)
        except Exception as exc:
            self._forget_store()
            log.warning("prediction log: the retention purge failed: %s", str(exc).splitlines()[0])
            return
        if removed:
            log.info("prediction log: %d rows older than %g days removed", removed, self.retention / 86400)

    def _forget_store(self) -> None:
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()
            self._store = None
