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
from service.observability.pending import FLUSH_SECONDS, FLUSHER, PendingCounter, PendingHistogram
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


PER_MODEL = (INFERENCE_SECONDS, TYPICALITY_SCORE, TYPICALITY_THRESHOLD, ATYPICAL, SAMPLES, CONTRIBUTION_SPARSITY)
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
        self._pending += [self.contributions] if self.contributions is not None else []
        FLUSHER.register(self)

    def record(self, prediction, seconds: float) -> None:
        """A call's figures, added up in memory (:mod:`service.observability.pending`): one image's are a few
        list increments."""
        labels = prediction.labels
        with self._lock:
            self.seconds.add(seconds)
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

    def record(self, runtime, prediction, seconds: float) -> None:
        metrics = self.models.get(runtime.tag)
        if metrics is not None:  # None: a request that outlived its version's drain
            metrics.record(prediction, seconds)
