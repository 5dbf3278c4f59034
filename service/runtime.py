"""Loaded models: each wraps one stored model and the core's sparsity measurement for it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from sparsity import LinearSparsity, ProbeResult, SparsityProbe, linear_sparsity
from sparsity.contract import IRIS_CLASS_NAMES, IRIS_FEATURE_LIMIT, IRIS_MODEL_FILE, MNIST_MODEL_FILE, MNIST_SHAPE
from sparsity.typicality import TypicalityModel
from sparsity.validation import check_batch

log = logging.getLogger(__name__)

IRIS_TRUSTED_TYPES: list[str] = []
"""Types beyond skops' own defaults that the iris file may contain. The pipeline (StandardScaler +
LogisticRegression) needs none; a file that asks for anything else is refused."""


class UntrustedModelError(RuntimeError):
    pass


class ModelMetadataError(RuntimeError):
    """A stored model lacks what the service needs: refused at start with the tag and the field."""


def _typicality(stored) -> TypicalityModel:
    data = stored.info.metadata.get("typicality")
    if not isinstance(data, dict):
        raise ModelMetadataError(
            f"{stored.tag}: metadata field 'typicality' is missing (trained before typicality existed): "
            "retrain it with 'make train'"
        )
    known = set(TypicalityModel.__dataclass_fields__)
    try:
        return TypicalityModel.from_dict({k: v for k, v in data.items() if k in known})
    except TypeError as exc:
        raise ModelMetadataError(f"{stored.tag}: metadata field 'typicality' is incomplete: {exc}") from None


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


DESCRIBED_KEYS = (
    "dataset",
    "dataset_size",
    "train_size",
    "test_size",
    "test_accuracy",
    "weight_sparsity",
    "class_names",
)
"""Metadata that /models shows for every model; each runtime adds its own keys."""


def _describe(stored, extra_keys: tuple[str, ...]) -> dict:
    meta = stored.info.metadata
    return {"tag": str(stored.tag), **{k: meta[k] for k in (*DESCRIBED_KEYS, *extra_keys) if k in meta}}


class MnistRuntime:
    """The ReLU CNN with its compiled one-pass probe."""

    def __init__(self, stored) -> None:
        import keras

        import sparsity.layers  # noqa: F401  registers the core's thresholded ReLU and k-WTA for loading

        self.tag = str(stored.tag)
        self.metadata = dict(stored.info.metadata)
        model = keras.models.load_model(stored.path_of(MNIST_MODEL_FILE), compile=False, safe_mode=True)
        self.probe = SparsityProbe(model, value_range=(0.0, 1.0), field="images")
        self.layers = self.probe.layers
        self.typicality_model = _typicality(stored)
        missing = [f for f in self.typicality_model.features if f not in {layer.name for layer in self.layers}]
        if missing:
            raise ModelMetadataError(f"{stored.tag}: typicality features {missing} are not ReLU layers of the model")
        self.info = _describe(
            stored,
            ("relu_layers", "activation_sparsity", "dead_unit_ratio", "input_shape", "input_range", "typicality"),
        )

    def warm_up(self) -> None:
        """Trace the probe and run it once on a one-image and a two-image batch."""
        for n in (1, 2):
            self.predict(np.zeros((n, *MNIST_SHAPE), dtype=np.float32))

    def predict(self, images: np.ndarray) -> ProbeResult:
        return self.probe.run(images)

    def typicality(self, result: ProbeResult) -> Typicality:
        """Score each input's per-layer sparsity profile, from the forward pass that made ``result``."""
        profiles = np.stack([result.layer_sparsity[name] for name in self.typicality_model.features], axis=1)
        scores = self.typicality_model.scores(profiles)
        return Typicality(scores, self.typicality_model.atypical(scores))


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
        self.metadata = dict(stored.info.metadata)
        path = stored.path_of(IRIS_MODEL_FILE)
        untrusted = [t for t in skops.io.get_untrusted_types(file=path) if t not in IRIS_TRUSTED_TYPES]
        if untrusted:
            raise UntrustedModelError(f"{path} asks for types that are not trusted: {untrusted}")
        self.model = skops.io.load(path, trusted=IRIS_TRUSTED_TYPES)
        self.scaler = self.model.named_steps["scale"]
        self.coef = self.model.named_steps["logreg"].coef_
        self.class_names = list(self.metadata.get("class_names", IRIS_CLASS_NAMES))
        self.typicality_model = _typicality(stored)
        self.info = _describe(stored, ("contribution_sparsity", "feature_names", "typicality"))

    def predict(self, features: np.ndarray) -> IrisResult:
        x = check_batch(
            features,
            field="features",
            item_shape=(self.coef.shape[1],),
            low=-IRIS_FEATURE_LIMIT,
            high=IRIS_FEATURE_LIMIT,
            dtype=np.float64,
        )
        probabilities = self.model.predict_proba(x)
        scaled = self.scaler.transform(x)
        sparsity = linear_sparsity(self.coef, scaled)
        scores = self.typicality_model.scores(scaled)
        typicality = Typicality(scores, self.typicality_model.atypical(scores))
        return IrisResult(probabilities, np.argmax(probabilities, axis=1), sparsity, typicality)
