"""Prometheus metrics of the service (prometheus_client; aggregated over workers by BentoML's
multiprocess collector). Metric objects live at module level; their label values, a fixed set
known once the models are loaded, are initialised by :class:`Recorder`."""

from __future__ import annotations

import contextlib
import threading
import warnings

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from modelstore.card import ReluCard
from service.observability.pending import FLUSHER, FiringCounts, PendingCounter, PendingHistogram
from sparsity.contract import ALL_LAYERS

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
    ["model", "version", "layer"],
    buckets=RATIO_BUCKETS,
)
BASELINE = Gauge(
    "activation_sparsity_baseline_ratio",
    "Mean per-sample exact-zero fraction on the training test set, from the model's metadata",
    ["model", "version", "layer"],
    multiprocess_mode="max",
)
UNIT_FIRED = Counter(
    "activation_unit_fired",
    "Samples on which each unit (conv channel or dense neuron) of a ReLU-family layer fired (output > 0); "
    "summed over workers and replicas it is exact, and Prometheus derives dead units from it",
    ["model", "version", "layer", "unit"],
)
SAMPLES = Counter("activation_samples", "Samples measured by the probe", ["model", "version"])
WEIGHT_SPARSITY = Gauge(
    "model_weight_sparsity_ratio",
    "Share of exactly-zero weights per layer",
    ["model", "version", "layer"],
    multiprocess_mode="max",
)
CONTRIBUTION_SPARSITY = Histogram(
    "model_input_contribution_sparsity_ratio",
    "Per-sample share of coefficient x feature terms that are exactly zero (L1 classifier)",
    ["model", "version"],
    buckets=RATIO_BUCKETS,
)
INFERENCE_SECONDS = Histogram(
    "model_inference_duration_seconds",
    "Forward pass plus sparsity measurement, per call",
    ["model", "version"],
    buckets=INFERENCE_BUCKETS,
)
PREDICTIONS = Counter("model_predictions", "Predictions made, by predicted class", ["model", "version", "label"])
NEVER_FIRED = Gauge(
    "activation_units_never_fired",
    "Per layer of a model too wide for per-unit series (MAX_UNIT_SERIES): units that have not fired since the "
    "version was loaded, in the worker where that count is lowest (an upper bound on the dead units of all workers)",
    ["model", "version", "layer"],
    multiprocess_mode="min",
)
TYPICALITY_BUCKETS = (
    0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0, 10.0, 12.5, 15.0, 20.0, 30.0, 50.0, 100.0, 1000.0,
)  # fmt: skip
TYPICALITY_SCORE = Histogram(
    "model_typicality_score",
    "Per-input typicality score: higher is less typical; above model_typicality_threshold it is flagged "
    "(ReLU models: per-unit firing, class Mahalanobis per layer, standardised and summed; linear models: "
    "Mahalanobis distance of the standardized features)",
    ["model", "version"],
    buckets=TYPICALITY_BUCKETS,
)
TYPICALITY_THRESHOLD = Gauge(
    "model_typicality_threshold",
    "The typicality score above which an input is flagged atypical, calibrated at registration (1% false alarms)",
    ["model", "version"],
    multiprocess_mode="max",
)
ATYPICAL = Counter(
    "model_atypical_predictions",
    "Predictions whose input scored above the model's calibrated typicality threshold",
    ["model", "version"],
)


BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256, 512, 1024)
BATCH_ITEMS = Histogram(
    "model_batch_items",
    "Items per forward pass (requests gathered by the data plane's batching, each counted by its items)",
    ["model", "version"],
    buckets=BATCH_BUCKETS,
)
QUEUE_WAIT_SECONDS = Histogram(
    "model_queue_wait_seconds",
    "How long a request waited in its model version's queue before its forward pass started",
    ["model", "version"],
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
QUEUE_REFUSALS = Counter(
    "model_queue_refusals", "Requests refused with 503: the model version's queue was full", ["model", "version"]
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


PER_MODEL = (INFERENCE_SECONDS, TYPICALITY_SCORE, TYPICALITY_THRESHOLD, ATYPICAL, SAMPLES, CONTRIBUTION_SPARSITY,
             BATCH_ITEMS, QUEUE_WAIT_SECONDS, QUEUE_REFUSALS)  # fmt: skip
PER_LAYER = (ACTIVATION_SPARSITY, BASELINE, WEIGHT_SPARSITY, NEVER_FIRED)


class ModelMetrics:
    """The label children of one served version, all created when it is loaded (label values are a fixed
    set per version). Per-unit series only while the model has at most ``max_unit_series`` units; a wider
    one is summarised per layer (:data:`NEVER_FIRED`)."""

    def __init__(self, runtime, max_unit_series: int) -> None:
        name, card = runtime.name, runtime.card
        self.labels = (name, runtime.version)
        self._lock = threading.Lock()
        self.seconds = PendingHistogram(INFERENCE_SECONDS.labels(*self.labels))
        self.typicality = PendingHistogram(TYPICALITY_SCORE.labels(*self.labels))
        TYPICALITY_THRESHOLD.labels(*self.labels).set(card.typicality.threshold)
        self.atypical = PendingCounter(ATYPICAL.labels(*self.labels))
        self.batch_items = PendingHistogram(BATCH_ITEMS.labels(*self.labels))
        self.queue_wait = PendingHistogram(QUEUE_WAIT_SECONDS.labels(*self.labels))
        self.refusals = PendingCounter(QUEUE_REFUSALS.labels(*self.labels))
        self.class_names = [str(c) for c in runtime.class_names]
        self.classes = [PendingCounter(PREDICTIONS.labels(*self.labels, c)) for c in self.class_names]
        self.layer_names = list(card.weight_sparsity)
        for layer, ratio in card.weight_sparsity.items():
            WEIGHT_SPARSITY.labels(*self.labels, layer).set(ratio)
        self.layers: dict = {}
        self.firing: FiringCounts | None = None
        self.unit_layers: dict[str, int] = {}
        self.contributions = None
        if isinstance(card, ReluCard):
            self.layers = {
                layer: PendingHistogram(ACTIVATION_SPARSITY.labels(*self.labels, layer))
                for layer in [*runtime.layers, ALL_LAYERS]
            }
            for layer in self.layers:
                BASELINE.labels(*self.labels, layer).set(card.activation_sparsity[layer].mean)
            widths = {layer.name: layer.units for layer in card.relu_layers}
            if sum(widths.values()) <= max_unit_series:
                self.unit_layers = widths
                units = {
                    layer: [UNIT_FIRED.labels(*self.labels, layer, str(unit)) for unit in range(width)]
                    for layer, width in widths.items()
                }
                self.firing = FiringCounts(SAMPLES.labels(*self.labels), units, interval=None)
            else:
                summary = {layer: (NEVER_FIRED.labels(*self.labels, layer), width) for layer, width in widths.items()}
                self.firing = FiringCounts(SAMPLES.labels(*self.labels), {}, summary=summary, interval=None)
        else:
            self.contributions = PendingHistogram(CONTRIBUTION_SPARSITY.labels(*self.labels))
        self._pending = [self.seconds, self.typicality, self.atypical, *self.classes, *self.layers.values()]
        self._pending += [self.batch_items, self.queue_wait, self.refusals]
        self._pending += [self.contributions] if self.contributions is not None else []
        FLUSHER.register(self)

    def record(self, prediction, seconds: float, waits: list[float] | None = None) -> None:
        """A call's figures, added up in memory (:mod:`service.observability.pending`): one image's are a few
        list increments. ``waits``: each request's wait in the queue, when the call was a batching pass."""
        labels = prediction.labels
        with self._lock:
            self.seconds.add(seconds)
            if waits is not None:
                self.batch_items.add(len(labels))
                for wait in waits:
                    self.queue_wait.add(wait)
            if len(labels) == 1:
                self.typicality.add(float(prediction.scores[0]))
                self.atypical.count += bool(prediction.atypical[0])
                self.classes[int(labels[0])].count += 1
                if self.firing is not None:
                    for layer, values in prediction.layer_sparsity.items():
                        self.layers[layer].add(float(values[0]))
                    self.layers[ALL_LAYERS].add(float(prediction.overall[0]))
            else:
                self.typicality.add_many(prediction.scores)
                self.atypical.count += int(np.count_nonzero(prediction.atypical))
                for label, count in enumerate(np.bincount(np.asarray(labels, dtype=np.int64)).tolist()):
                    self.classes[label].count += count
                if self.firing is not None:
                    for layer, values in prediction.layer_sparsity.items():
                        self.layers[layer].add_many(values)
                    self.layers[ALL_LAYERS].add_many(prediction.overall)
            if self.contributions is not None:
                self.contributions.add_many(prediction.contributions)
        if self.firing is not None:
            self.firing.add(prediction.fired)

    def refused(self) -> None:
        with self._lock:
            self.refusals.count += 1

    def flush(self) -> None:
        """Write what is pending to this process's series."""
        with self._lock:
            for pending in self._pending:
                pending.flush()
        if self.firing is not None:
            self.firing.flush()

    def forget(self) -> None:
        """Write what is pending, stop flushing and drop this version's children from this process (the exposition
        drops the unloaded version's series of every worker: :mod:`service.observability.exposition`)."""
        self.flush()
        FLUSHER.unregister(self)
        if self.firing is not None:
            self.firing.stop()
        for metric in PER_MODEL:
            remove_child(metric, self.labels)
        for metric in PER_LAYER:
            for layer in {*self.layers, *self.layer_names, *self.unit_layers}:
                remove_child(metric, (*self.labels, layer))
        for label in self.class_names:
            remove_child(PREDICTIONS, (*self.labels, label))
        for layer, width in self.unit_layers.items():
            for unit in range(width):
                remove_child(UNIT_FIRED, (*self.labels, layer, str(unit)))


def remove_child(metric, labels: tuple) -> None:
    """Drop a child from this process (multiprocess mode warns that the files keep its value: they do, and
    :mod:`service.observability.exposition` leaves the unloaded version out; a version loaded again continues its
    counts)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with contextlib.suppress(KeyError):
            metric.remove(*labels)


class Recorder:
    """Records each call's figures, per served version (labels ``model`` and ``version``)."""

    def __init__(self, runtimes=(), max_unit_series: int = 1024) -> None:
        self.max_unit_series = max_unit_series
        self.models: dict[str, ModelMetrics] = {}
        for runtime in runtimes:
            self.add(runtime)

    def add(self, runtime) -> None:
        if runtime.tag not in self.models:
            self.models[runtime.tag] = ModelMetrics(runtime, self.max_unit_series)

    def forget(self, tag: str) -> None:
        metrics = self.models.pop(tag, None)
        if metrics is not None:
            metrics.forget()

    def record(self, runtime, prediction, seconds: float, waits: list[float] | None = None) -> None:
        metrics = self.models.get(runtime.tag)
        if metrics is not None:  # None: a request that outlived its version's drain
            metrics.record(prediction, seconds, waits)

    def refused(self, runtime) -> None:
        """A request refused because ``runtime``'s queue was full."""
        metrics = self.models.get(runtime.tag)
        if metrics is not None:
            metrics.refused()
