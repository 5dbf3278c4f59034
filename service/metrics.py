"""Prometheus metrics of the service (prometheus_client; aggregated over workers by BentoML's
multiprocess collector). Metric objects live at module level; their label values, a fixed set
known once the models are loaded, are initialised by :class:`Recorder`."""

from __future__ import annotations

import threading
import time

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from sparsity.contract import ALL_LAYERS, IRIS_LINEAR_LAYER
from sparsity.result import ProbeResult

RATIO_BUCKETS = tuple(round(0.05 * i, 2) for i in range(21))  # 0.0, 0.05 .. 1.0 (+Inf implied)
INFERENCE_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
REQUEST_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]

ACTIVATION_SPARSITY = Histogram(
    "activation_sparsity_ratio",
    "Per-sample exact-zero fraction of each ReLU layer (layer 'all': across all ReLU layers)",
    ["model", "layer"],
    buckets=RATIO_BUCKETS,
)
BASELINE = Gauge(
    "activation_sparsity_baseline_ratio",
    "Mean per-sample exact-zero fraction on the training test set, from the model's metadata",
    ["model", "layer"],
    multiprocess_mode="max",
)
UNIT_FIRED = Counter(
    "activation_unit_fired",
    "Samples on which each unit (conv channel or dense neuron) of a ReLU-family layer fired (output > 0); "
    "summed over workers and replicas it is exact, and Prometheus derives dead units from it",
    ["model", "layer", "unit"],
)
SAMPLES = Counter("activation_samples", "Samples measured by the probe", ["model"])
WEIGHT_SPARSITY = Gauge(
    "model_weight_sparsity_ratio",
    "Share of exactly-zero weights per layer",
    ["model", "layer"],
    multiprocess_mode="max",
)
CONTRIBUTION_SPARSITY = Histogram(
    "model_input_contribution_sparsity_ratio",
    "Per-sample share of coefficient x feature terms that are exactly zero (L1 classifier)",
    ["model"],
    buckets=RATIO_BUCKETS,
)
INFERENCE_SECONDS = Histogram(
    "model_inference_duration_seconds",
    "Forward pass plus sparsity measurement, per call",
    ["model"],
    buckets=INFERENCE_BUCKETS,
)
PREDICTIONS = Counter("model_predictions", "Predictions made, by predicted class", ["model", "label"])
TYPICALITY_BUCKETS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 50.0)
TYPICALITY_SCORE = Histogram(
    "model_typicality_score",
    "Per-input typicality score (Mahalanobis distance of its profile from the reference data)",
    ["model"],
    buckets=TYPICALITY_BUCKETS,
)
ATYPICAL = Counter(
    "model_atypical_predictions",
    "Predictions whose input scored above the model's calibrated typicality threshold",
    ["model"],
)


def observe_many(histogram, values: np.ndarray) -> None:
    """``histogram.observe(v)`` for every ``v`` in ``values``, with one write per non-empty bucket.

    At 256 images a request made about 1,300 multiprocess observes (about 3 ms); this makes a
    handful. It uses prometheus_client's histogram internals (``_upper_bounds``, ``_buckets``,
    ``_sum``; the version is pinned), and a unit test checks the exposition equals the loop's.
    A value goes to the first bucket whose upper bound is >= it, as ``observe`` does."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return
    bounds = histogram._upper_bounds
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for i in np.flatnonzero(counts[: len(bounds)]).tolist():
        histogram._buckets[i].inc(int(counts[i]))
    histogram._sum.inc(float(values.sum()))


def inc_by_label(children: list, labels: np.ndarray) -> None:
    """``children[label].inc()`` for each label, one write per distinct label."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(children))
    for i in np.flatnonzero(counts).tolist():
        children[i].inc(int(counts[i]))


FLUSH_SECONDS = 1.0
"""How often per-unit firing counts go from a worker's memory to its Prometheus counters."""


class FiringCounts:
    """Per-unit firing counts, added up in memory per request and written to the counters in one go
    every FLUSH_SECONDS (and on :meth:`flush`).

    One image fires about a hundred units; a multiprocess counter write per unit per request would
    cost about 0.2 ms on a 1 ms one-image request. Added here it costs a NumPy sum. The samples
    counter is written in the same flush, so samples and unit counts always agree in a scrape.
    """

    def __init__(self, samples, units: dict[str, list], interval: float = FLUSH_SECONDS) -> None:
        self._samples_counter = samples
        self._unit_counters = units
        self._pending = {layer: np.zeros(len(children), dtype=np.int64) for layer, children in units.items()}
        self._pending_samples = 0
        self._lock = threading.Lock()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, name="firing-counts-flush", daemon=True)
        self._thread.start()

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
            children = self._unit_counters[layer]
            for unit in np.flatnonzero(counts).tolist():
                children[unit].inc(int(counts[unit]))
        if samples:
            self._samples_counter.inc(samples)

    def _run(self) -> None:
        while True:
            time.sleep(self._interval)
            self.flush()


class Recorder:
    """Records each call's figures; all label values are created here, at start."""

    def __init__(self, mnist, iris) -> None:
        self.mnist_name = mnist.tag.split(":")[0]
        self.iris_name = iris.tag.split(":")[0]
        layers = [layer.name for layer in mnist.layers]
        self._mnist_hist = {
            layer: ACTIVATION_SPARSITY.labels(self.mnist_name, layer) for layer in [*layers, ALL_LAYERS]
        }
        self.firing = FiringCounts(
            SAMPLES.labels(self.mnist_name),
            {
                layer.name: [UNIT_FIRED.labels(self.mnist_name, layer.name, str(unit)) for unit in range(layer.units)]
                for layer in mnist.layers
            },
        )
        self._mnist_seconds = INFERENCE_SECONDS.labels(self.mnist_name)
        self._iris_seconds = INFERENCE_SECONDS.labels(self.iris_name)
        self._iris_contrib = CONTRIBUTION_SPARSITY.labels(self.iris_name)
        self._typicality = {name: TYPICALITY_SCORE.labels(name) for name in (self.mnist_name, self.iris_name)}
        self._atypical = {name: ATYPICAL.labels(name) for name in (self.mnist_name, self.iris_name)}
        self._mnist_classes = [PREDICTIONS.labels(self.mnist_name, c) for c in mnist.card.class_names]
        self._iris_classes = [PREDICTIONS.labels(self.iris_name, c) for c in iris.class_names]

        baseline = mnist.card.activation_sparsity
        for layer in [*layers, ALL_LAYERS]:
            BASELINE.labels(self.mnist_name, layer).set(baseline[layer].mean)
        for layer, ratio in mnist.card.weight_sparsity.items():
            WEIGHT_SPARSITY.labels(self.mnist_name, layer).set(ratio)
        WEIGHT_SPARSITY.labels(self.iris_name, IRIS_LINEAR_LAYER).set(iris.card.weight_sparsity[IRIS_LINEAR_LAYER])

    def _typicality_of(self, model: str, typicality) -> None:
        observe_many(self._typicality[model], typicality.scores)
        self._atypical[model].inc(int(np.count_nonzero(typicality.atypical)))

    def mnist(self, result: ProbeResult, typicality, seconds: float) -> None:
        self._mnist_seconds.observe(seconds)
        self._typicality_of(self.mnist_name, typicality)
        for layer, values in [*result.layer_sparsity.items(), (ALL_LAYERS, result.overall)]:
            observe_many(self._mnist_hist[layer], values)
        inc_by_label(self._mnist_classes, result.labels)
        self.firing.add(result.fired)

    def iris(self, result, seconds: float) -> None:
        self._iris_seconds.observe(seconds)
        self._typicality_of(self.iris_name, result.typicality)
        observe_many(self._iris_contrib, result.sparsity.contributions)
        inc_by_label(self._iris_classes, result.labels)
