"""Dead-unit tracking over a sliding window of samples."""

from __future__ import annotations

import threading

import numpy as np


class DeadUnitTracker:
    """Share of units per layer that did not fire once in the last ``window`` samples.

    Memory is one integer per unit (the index of the last sample that fired it), whatever the
    window. Before ``window`` samples have been seen, the window is every sample seen so far;
    with no sample seen the ratio is 0 (no evidence of a dead unit yet).
    """

    def __init__(self, units: dict[str, int], window: int = 1000) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.seen = 0
        self._last_fired = {name: np.full(n, -1, dtype=np.int64) for name, n in units.items()}
        self._lock = threading.Lock()

    def update(self, fired: dict[str, np.ndarray]) -> None:
        """Record a batch: ``fired[layer]`` is (N, units) bool, samples in arrival order."""
        with self._lock:
            n = None
            for name, last in self._last_fired.items():
                batch = np.asarray(fired[name], dtype=bool)
                n = batch.shape[0]
                any_fired = batch.any(axis=0)
                last_in_batch = n - 1 - np.argmax(batch[::-1], axis=0)
                last[any_fired] = self.seen + last_in_batch[any_fired]
            self.seen += n or 0

    def ratios(self) -> dict[str, float]:
        """Dead-unit ratio per layer over the current window."""
        with self._lock:
            if self.seen == 0:
                return {name: 0.0 for name in self._last_fired}
            oldest = self.seen - min(self.seen, self.window)
            return {name: float(np.mean(last < oldest)) for name, last in self._last_fired.items()}
