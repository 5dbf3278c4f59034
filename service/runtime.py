"""One runtime per model kind behind one small interface (MLServer's ``MLModel``: load once, then
``predict``): the routes, the metrics recorder, the start-up summary and ``/models`` use only
:class:`Runtime`, and :data:`RUNTIMES` says which class serves which ``kind`` of card.

- ``keras-relu``: the model loaded in Keras' safe mode, run through the core's compiled one-pass probe.
- ``onnx-relu``: the counting copy of the ONNX graph in ONNX Runtime (:mod:`sparsity.onnx_probe`), one
  intra-op thread per worker unless ``ONNX_INTRA_OP_THREADS`` says otherwise.
- ``linear``: computed from the card's coefficients and scaler (no scikit-learn, no file to unpickle).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np

from sparsity.card import KerasReluCard, LinearCard, ModelCardError, OnnxReluCard
from sparsity.contract import LINEAR_LAYER
from sparsity.detectors import UnitFiring, load_detector
from sparsity.linear import LinearProbe
from sparsity.result import by_layer

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """What one forward pass gave for N inputs, in input order (plain NumPy)."""

    probabilities: np.ndarray  # (N, classes)
    layer_sparsity: dict[str, np.ndarray]  # layer -> (N,) exact-zero fraction
    overall: np.ndarray  # (N,)
    scores: np.ndarray  # (N,) typicality score
    atypical: np.ndarray  # (N,) bool
    fired: dict[str, np.ndarray] = field(default_factory=dict)  # layer -> (N, units) bool (ReLU models)
    shares: dict[str, np.ndarray] = field(default_factory=dict)  # layer -> (N, units) share of positions on
    weights: float | None = None  # linear: share of zero coefficients
    contributions: np.ndarray | None = None  # linear: (N,) share of zero coefficient x feature terms

    @property
    def labels(self) -> np.ndarray:
        return np.argmax(self.probabilities, axis=1)


class Runtime:
    """A loaded model: its card, what its inputs are, and ``predict``."""

    kind: str
    card: KerasReluCard | OnnxReluCard | LinearCard
    layers: list[str]  # the sparsity layers of its answers, in order (for metrics)

    def __init__(self, tag: str, card) -> None:
        self.tag = tag
        self.name = tag.split(":")[0]
        self.card = card
        self.item_shape = tuple(card.input_shape)
        self.value_range = (float(card.input_range[0]), float(card.input_range[1]))
        self.class_names = list(card.class_names)
        self.info = {"name": self.name, "tag": tag, **card.describe()}

    def predict(self, x: np.ndarray) -> Prediction:
        raise NotImplementedError

    def picture(self, data: bytes, max_pixels: int) -> np.ndarray:
        """One uploaded PNG/JPEG as a batch of one input, by the step the card declares (picture models)."""
        from service.preprocess import picture_to_input

        step = getattr(self.card, "preprocessing", None)
        return picture_to_input(data, self.item_shape, self.value_range, step, max_pixels)[None]

    def warm_up(self) -> None:
        """Run a one-item and a two-item batch (traces compiled functions before the first request)."""
        low = self.value_range[0]
        for n in (1, 2):
            self.predict(np.full((n, *self.item_shape), low, dtype=np.float32))


class ReluRuntime(Runtime):
    """What the Keras and ONNX runtimes share: a probe with an input shape, and one answer from a probe result."""

    def check_input_shape(self) -> None:
        if tuple(self.probe.item_shape) != self.item_shape:
            raise ModelCardError(f"model {self.tag}: the card's input_shape {self.item_shape} is not the model's")

    def prediction(self, result, scores: np.ndarray) -> Prediction:
        return Prediction(
            probabilities=result.probabilities,
            layer_sparsity=result.layer_sparsity,
            overall=result.overall,
            scores=scores,
            atypical=scores > self.card.typicality.threshold,
            fired=result.fired,
            shares=by_layer(result.shares, self.layers, self.probe.unit_offsets),
        )


class KerasReluRuntime(ReluRuntime):
    kind = "keras-relu"

    def __init__(self, tag: str, card: KerasReluCard, path: str) -> None:
        from sparsity.keras_file import load_keras_safely  # TensorFlow: imported in the workers only
        from sparsity.probe import SparsityProbe, UnsupportedModelError

        super().__init__(tag, card)
        try:
            model = load_keras_safely(path, audit=False)  # service.registry audited it: safe mode is the second line
            self.detector = load_detector(card.typicality, os.path.dirname(path))
            # a unit-firing score is computed inside the probe's compiled call (see SparsityProbe._score)
            scorer = self.detector if isinstance(self.detector, UnitFiring) else None
            self.probe = SparsityProbe(model, value_range=self.value_range, field="inputs", scorer=scorer)
        except (ValueError, UnsupportedModelError) as exc:  # DetectorStateError is a ValueError
            raise ModelCardError(f"model {tag}: {exc}") from None
        found = [layer.name for layer in self.probe.layers]
        carded = [layer.name for layer in card.relu_layers]
        if found != carded:
            raise ModelCardError(f"model {tag}: the card's relu_layers {carded} are not the model's {found}")
        missing = [f for f in card.typicality.features if f not in found]
        if missing:
            raise ModelCardError(f"model {tag}: metadata field 'typicality.features' names {missing}, not ReLU layers")
        if isinstance(self.detector, UnitFiring) and card.typicality.features != found:
            raise ModelCardError(f"model {tag}: the typicality state does not fit the model's ReLU layers")
        self.check_input_shape()
        self.layers = found

    def predict(self, x: np.ndarray) -> Prediction:
        result = self.probe.run(x)
        scores = result.scores
        if scores is None:  # a card from before unit-firing: per-layer zero fractions, scored in NumPy
            profiles = np.stack([result.layer_sparsity[name] for name in self.card.typicality.features], axis=1)
            scores = self.detector.scores(profiles)
        return self.prediction(result, scores)


class OnnxReluRuntime(ReluRuntime):
    kind = "onnx-relu"
    threads = 1
    """ONNX Runtime's intra-op threads per session (the service sets it from its settings before loading)."""

    def __init__(self, tag: str, card: OnnxReluCard, path: str) -> None:
        from sparsity import onnx_graph
        from sparsity.onnx_probe import OnnxProbe

        super().__init__(tag, card)
        layers = [
            onnx_graph.ProbedTensor(l.name, l.tensor, l.op, units=l.units, size=l.size, axis=l.axis, rank=l.rank)
            for l in card.relu_layers
        ]
        try:
            self.detector = load_detector(card.typicality, os.path.dirname(path))
            self.probe = OnnxProbe(
                onnx_graph.load(path),
                layers=layers,
                output=card.output,
                value_range=self.value_range,
                field="inputs",
                threads=self.threads,
            )
        except ValueError as exc:  # OnnxModelError, DetectorStateError
            raise ModelCardError(f"model {tag}: {exc}") from None
        self.check_input_shape()
        self.layers = [layer.name for layer in layers]
        if not isinstance(self.detector, UnitFiring) or card.typicality.features != self.layers:
            raise ModelCardError(f"model {tag}: the typicality state does not fit the model's ReLU-family layers")

    def predict(self, x: np.ndarray) -> Prediction:
        result = self.probe.run(x)
        return self.prediction(result, self.detector.scores(result.shares))


class LinearRuntime(Runtime):
    kind = "linear"

    def __init__(self, tag: str, card: LinearCard, path: str | None = None) -> None:
        super().__init__(tag, card)
        try:
            self.probe = LinearProbe(
                card.coefficients,
                card.intercept,
                card.scaler_mean,
                card.scaler_scale,
                field="inputs",
                value_range=self.value_range,
            )
        except ValueError as exc:
            raise ModelCardError(f"model {tag}: {exc}") from None
        self.layers = [LINEAR_LAYER]

    def predict(self, x: np.ndarray) -> Prediction:
        result = self.probe.run(x)
        scores, atypical = self.card.typicality.flag(result.scaled)
        contributions = result.sparsity.contributions
        return Prediction(
            probabilities=result.probabilities,
            layer_sparsity={LINEAR_LAYER: contributions},
            overall=contributions,
            scores=scores,
            atypical=atypical,
            weights=result.sparsity.weights,
            contributions=contributions,
        )


RUNTIMES: dict[str, type[Runtime]] = {
    "keras-relu": KerasReluRuntime,
    "onnx-relu": OnnxReluRuntime,
    "linear": LinearRuntime,
}


def load(stored, card) -> Runtime:
    """The runtime of ``card.kind`` over a stored model (BentoML's ``Model``)."""
    return RUNTIMES[card.kind](str(stored.tag), card, stored.path_of(card.MODEL_FILE))


def from_store(tag: str) -> Runtime:
    """The runtime of a stored model by tag (benchmarks and tests; the service audits first, see registry)."""
    import bentoml

    from sparsity.card import load_card

    stored = bentoml.models.get(tag)
    return load(stored, load_card(str(stored.tag), stored.info.metadata))
