"""Drift over windows, per served model version (:mod:`sparsity.drift`): each version whose card carries a drift
baseline gets a window; every answered item is counted into it (in the log's thread, never on the request's
path), and each closed window's PSI per signal is exported:

- ``model_drift_psi{model, version, signal}``: the last closed window's index (signal: a layer, or
  ``typicality_score``), the largest of the workers';
- ``model_drift_windows_total{model, version, outcome}``: closed windows, ``clean`` or ``drifted`` (some signal
  over the alarm).

A worker's windows hold its own traffic; the alert rule (``monitoring/alert_rules.yml``) reads the largest.
"""

from __future__ import annotations

import threading

import numpy as np
from prometheus_client import Counter, Gauge

from sparsity.drift import ALARM, SCORE, WINDOW, Bins, Window

DRIFT_PSI = Gauge(
    "model_drift_psi",
    "Population stability index of the last closed window of served items against the calibration baseline, per "
    "signal (a layer's exact-zero share, or the typicality score); over 0.25: drifted",
    ["model", "version", "signal"],
    multiprocess_mode="max",
)
DRIFT_WINDOWS = Counter(
    "model_drift_windows", "Closed drift windows, by outcome (clean or drifted)", ["model", "version", "outcome"]
)


def baseline_of_card(card) -> dict[str, Bins] | None:
    """The drift baseline a card carries (registered since the prediction log), or None."""
    stored = getattr(card, "drift_baseline", None)
    if not stored:
        return None
    return {name: Bins.from_dict(data) for name, data in stored.items()}


class DriftMonitors:
    """The windows of one worker, one per version with a baseline; ``last`` keeps each version's last closed
    window (the page and ``GET /models/{name}/drift`` show it)."""

    def __init__(self, window: int = WINDOW, alarm: float = ALARM) -> None:
        self.size, self.alarm = window, alarm
        self.windows: dict[tuple[str, str], Window] = {}
        self.last: dict[tuple[str, str], dict] = {}
        self._lock = threading.Lock()

    def watch(self, runtime) -> None:
        key = (runtime.name, runtime.version)
        baseline = baseline_of_card(runtime.card)
        with self._lock:
            if baseline is not None and key not in self.windows:
                self.windows[key] = Window(baseline, self.size)
                for signal in baseline:
                    DRIFT_PSI.labels(*key, signal)
                for outcome in ("clean", "drifted"):
                    DRIFT_WINDOWS.labels(*key, outcome)

    def add(self, model: str, version: str, prediction) -> None:
        window = self.windows.get((model, version))
        if window is None:
            return
        signals = {name: values for name, values in prediction.layer_sparsity.items()}
        signals[SCORE] = np.asarray(prediction.scores, dtype=np.float64)
        for closed in window.add(signals):
            drifted = max(closed.values()) > self.alarm
            for signal, value in closed.items():
                DRIFT_PSI.labels(model, version, signal).set(value)
            DRIFT_WINDOWS.labels(model, version, "drifted" if drifted else "clean").inc()
            self.last[(model, version)] = {"psi": closed, "drifted": drifted, "window": window.size}

    def state(self, model: str, version: str) -> dict | None:
        """This worker's view of a version: the open window's count and the last closed window."""
        window = self.windows.get((model, version))
        if window is None:
            return None
        return {"window": window.size, "alarm": self.alarm, "open_items": window.items,
                "last": self.last.get((model, version))}  # fmt: skip
