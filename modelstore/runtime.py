"""What every kind's runtime is behind one small interface (MLServer's ``MLModel``: load once, then
``predict``): the data plane, the metrics recorder, the start-up summary and ``/models`` use only
:class:`Runtime`; each kind's runtime class is in its module (:mod:`modelstore.kinds`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from modelstore.card import ModelCard, ModelCardError
from sparsity.result import by_layer


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

    card: ModelCard
    layers: list[str]  # the sparsity layers of its answers, in order (for metrics)
    created: float = 0.0  # when the version was stored (seconds since the epoch): the newest answers its name
    engine: str = ""  # what computes its answers (onnxruntime, tensorflow, numpy), shown in /models

    def __init__(self, tag: str, card) -> None:
        self.tag = tag
        self.name, _, self.version = tag.partition(":")
        self.card = card
        self.item_shape = tuple(card.input_shape)
        self.value_range = (float(card.input_range[0]), float(card.input_range[1]))
        self.class_names = list(card.class_names)
        self.info = {"name": self.name, "tag": tag, **card.describe()}
        if self.engine:
            self.info["engine"] = self.engine

    def predict(self, x: np.ndarray) -> Prediction:
        raise NotImplementedError

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
