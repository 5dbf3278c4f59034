"""Kind ``keras-relu``: a Keras classifier whose hidden layers are ReLU-family.

- file: ``model.keras``, audited before anything is loaded (:func:`sparsity.keras_file.keras_file_problems`:
  Keras' own objects and the core's layers only, no ``Lambda``, no serialized function), then loaded in
  Keras' safe mode;
- registration: every ReLU-family layer call of the whole graph is probed (:mod:`sparsity.graph`);
- serving: the core's compiled one-pass probe (:class:`sparsity.probe.SparsityProbe`), TensorFlow imported
  in the workers only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from modelstore.card import ModelCardError, ReluCard
from modelstore.kind import Kind, LoadOptions
from modelstore.register import OpenedModel, RegistrationError, relu_register_file
from modelstore.runtime import Prediction, ReluRuntime
from sparsity.detectors import UnitFiring, load_detector
from sparsity.keras_file import keras_file_problems
from sparsity.typicality import UNIT_FIRING

NAME = "keras-relu"


class KerasReluCard(ReluCard):
    MODEL_FILE: ClassVar[str] = "model.keras"

    kind: Literal[NAME]


class KerasReluRuntime(ReluRuntime):
    def __init__(self, tag: str, card: KerasReluCard, path: str, options: LoadOptions | None = None) -> None:
        from sparsity.keras_file import load_keras_safely  # TensorFlow: imported in the workers only
        from sparsity.probe import SparsityProbe, UnsupportedModelError

        super().__init__(tag, card)
        try:
            model = load_keras_safely(path, audit=False)  # the store's audit checked it: safe mode is the second line
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


def open_keras(path: Path) -> OpenedModel:
    """A Keras file loaded safely (config audit, then safe mode), with its probe."""
    from sparsity.keras_file import load_keras_safely
    from sparsity.probe import SparsityProbe, UnsupportedModelError, weight_sparsity

    try:
        model = load_keras_safely(str(path))
        probe = SparsityProbe(model, field="calibration")
    except (ValueError, UnsupportedModelError) as exc:
        raise RegistrationError(str(exc)) from None
    fields = {"kind": NAME, "weight_sparsity": weight_sparsity(model)}
    return OpenedModel(probe, int(model.outputs[0].shape[-1]), KerasReluCard, fields)


def prepare(options: LoadOptions) -> None:
    from sparsity.logs import set_tensorflow_threads

    set_tensorflow_threads(options.tf_intra_threads, options.tf_inter_threads)


def upgrade_reason(card: KerasReluCard) -> str | None:
    if card.typicality.detector != UNIT_FIRING:
        return "it has the per-layer typicality score of before the unit-firing detector"
    return None


KIND = Kind(
    name=NAME,
    card=KerasReluCard,
    runtime=KerasReluRuntime,
    suffixes=(".keras",),
    register_file=relu_register_file(open_keras),
    describes="A Keras ReLU model's card and baselines",
    file_problems=keras_file_problems,
    prepare=prepare,
    upgrade_reason=upgrade_reason,
)
