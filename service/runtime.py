"""Loaded models: each wraps one stored model and the core's sparsity measurement for it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from service.preflight import IRIS_TRUSTED_TYPES, ModelRefused
from sparsity.card import IrisCard, MnistCard, ModelCardError, load_card
from sparsity.contract import IRIS_FEATURE_LIMIT, IRIS_MODEL_FILE, MNIST_MODEL_FILE, MNIST_SHAPE
from sparsity.linear import LinearProbe, LinearSparsity
from sparsity.result import ProbeResult

log = logging.getLogger(__name__)


@dataclass
class Typicality:
    """Per input: the typicality score and whether it is above the calibrated threshold."""

    scores: np.ndarray
    atypical: np.ndarray


def configure_tensorflow(intra: int, inter: int) -> None:
    """Set TF thread pools; must run before TensorFlow executes anything in this process."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError as exc:  # TF already initialised (e.g. several services in one test)
        log.warning("TensorFlow thread settings not applied: %s", exc)


class MnistRuntime:
    """The ReLU CNN with its compiled one-pass probe."""

    def __init__(self, stored) -> None:
        import keras

        import sparsity.layers  # noqa: F401  registers the core's thresholded ReLU and k-WTA for loading
        from sparsity.probe import SparsityProbe  # TensorFlow: imported in the workers only

        self.tag = str(stored.tag)
        self.card = load_card(MnistCard, self.tag, stored.info.metadata)
        model = keras.models.load_model(stored.path_of(MNIST_MODEL_FILE), compile=False, safe_mode=True)
        self.probe = SparsityProbe(model, value_range=(0.0, 1.0), field="images")
        self.layers = self.probe.layers
        self.typicality_model = self.card.typicality
        missing = [f for f in self.typicality_model.features if f not in {layer.name for layer in self.layers}]
        if missing:
            raise ModelCardError(
                f"model {self.tag}: metadata field 'typicality.features' names {missing}, not ReLU layers of the model"
            )
        self.info = {"tag": self.tag, **self.card.describe()}

    def warm_up(self) -> None:
        """Trace the probe and run it once on a one-image and a two-image batch."""
        for n in (1, 2):
            self.predict(np.zeros((n, *MNIST_SHAPE), dtype=np.float32))

    def predict(self, images: np.ndarray) -> ProbeResult:
        return self.probe.run(images)

    def typicality(self, result: ProbeResult) -> Typicality:
        """Score each input's per-layer sparsity profile, from the forward pass that made ``result``."""
        profiles = np.stack([result.layer_sparsity[name] for name in self.typicality_model.features], axis=1)
        return Typicality(*self.typicality_model.flag(profiles))


@dataclass
class IrisResult:
    probabilities: np.ndarray
    labels: np.ndarray
    sparsity: LinearSparsity
    typicality: Typicality


class IrisRuntime:
    """The L1 logistic-regression pipeline, loaded with skops (no pickle)."""

    def __init__(self, stored) -> None:
        import skops.io

        self.tag = str(stored.tag)
        self.card = load_card(IrisCard, self.tag, stored.info.metadata)
        path = stored.path_of(IRIS_MODEL_FILE)
        untrusted = [t for t in skops.io.get_untrusted_types(file=path) if t not in IRIS_TRUSTED_TYPES]
        if untrusted:
            raise ModelRefused(f"{path} asks for types that are not trusted: {untrusted}")
        self.model = skops.io.load(path, trusted=IRIS_TRUSTED_TYPES)
        self.probe = LinearProbe(
            self.model.named_steps["scale"],
            self.model.named_steps["logreg"],
            field="features",
            limit=IRIS_FEATURE_LIMIT,
        )
        self.coef = self.probe.coef
        self.class_names = list(self.card.class_names)
        self.typicality_model = self.card.typicality
        self.info = {"tag": self.tag, **self.card.describe()}

    def predict(self, features: np.ndarray) -> IrisResult:
        result = self.probe.run(features)
        typicality = Typicality(*self.typicality_model.flag(result.scaled))
        return IrisResult(result.probabilities, result.labels, result.sparsity, typicality)
