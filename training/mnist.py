"""Train, evaluate and save the ReLU CNN on MNIST."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np

from sparsity import SparsityProbe, find_relu_layers, weight_sparsity
from sparsity.card import MnistCard
from sparsity.contract import MNIST_CLASS_NAMES, MNIST_MODEL_FILE, MNIST_MODEL_NAME, MNIST_SHAPE
from sparsity.summary import summarize
from sparsity.typicality import calibrate
from training import data, models
from training.progress import duration
from training.store import save_model
from training.versions import library_versions

log = logging.getLogger(__name__)


@dataclass
class MnistOptions:
    dataset: str = "auto"
    arch: str = "cnn"
    epochs: int = 15
    batch_size: int = 32
    activity_l1: float = 0.0
    init: str = "glorot"
    design: str = "relu"
    threshold: float = 0.1
    kwta_density: float = 0.1
    learning_rate: float = 1e-3
    seed: int = 0
    limit: int = 0  # 0 = all training images; >0 keeps the first N (smoke tests)
    verbose: int | None = None
    """Progress while fitting: None = Keras' bar on a terminal, else one log line per epoch;
    0 silent; 1 Keras' bar; 2 one log line per epoch."""

    @property
    def layer_spec(self) -> models.LayerSpec:
        return models.LayerSpec(
            activity_l1=self.activity_l1,
            init=self.init,
            design=self.design,
            threshold=self.threshold,
            kwta_density=self.kwta_density,
        )


def fit(split: data.Split, opts: MnistOptions) -> keras.Model:
    keras.utils.set_random_seed(opts.seed)
    model = models.build(opts.arch, opts.layer_spec, opts.seed)
    model.compile(
        optimizer=keras.optimizers.Adam(opts.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    x, y = split.x_train, split.y_train
    if opts.limit:
        x, y = x[: opts.limit], y[: opts.limit]
    verbose = opts.verbose
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    callbacks = [EpochLog(opts.epochs)] if verbose == 2 else []
    bar = 1 if verbose == 1 else 0
    model.fit(x, y, epochs=opts.epochs, batch_size=opts.batch_size, shuffle=True, verbose=bar, callbacks=callbacks)
    return model


class EpochLog(keras.callbacks.Callback):
    """One log line per finished epoch (what a log file or CI needs instead of Keras' redrawn bar):
    ``epoch 3/15: loss 0.4859, accuracy 0.9430 (5.2 s, ETA 1m02s)``."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs
        self.started = self.epoch_started = 0.0

    def on_train_begin(self, logs=None) -> None:
        self.started = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.epoch_started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        now = time.monotonic()
        metrics = ", ".join(f"{name} {float(value):.4f}" for name, value in (logs or {}).items())
        left = (now - self.started) / (epoch + 1) * (self.epochs - epoch - 1)
        eta = f", ETA {duration(left)}" if left else ""
        log.info("epoch %d/%d: %s (%.1f s%s)", epoch + 1, self.epochs, metrics, now - self.epoch_started, eta)


TYPICALITY_FALSE_ALARM_RATE = 0.01
TYPICALITY_SHRINKAGE = 0.01
"""Little shrinkage: the layers' zero fractions are strongly correlated, and that correlation is
what sets unusual inputs apart (measured: 0.1 already lets a share of noise images through)."""


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray, seed: int = 0) -> dict:
    """Test accuracy, the sparsity baseline and the typicality calibration, from the same probe the
    service uses.

    Typicality: the held-back digits are split in two halves; one fits the score and its threshold
    (false-alarm rate 1%), the other, never seen by the model nor by the calibration, measures the
    false-alarm rate the service will really have.
    """
    probe = SparsityProbe(model, value_range=(0.0, 1.0), field="images")
    result = probe.run_batched(x)
    profiles = np.stack(list(result.layer_sparsity.values()), axis=1)
    order = np.random.default_rng(seed).permutation(len(x))
    fit, held = order[: len(x) // 2], order[len(x) // 2 :]
    typicality = calibrate(
        profiles[fit],
        profiles[fit],
        features=list(result.layer_sparsity),
        false_alarm_rate=TYPICALITY_FALSE_ALARM_RATE,
        shrinkage=TYPICALITY_SHRINKAGE,
        calibration_name=f"{len(fit)} held-back digits (per-layer zero fractions)",
    )
    typicality = typicality.measured(profiles[held], on=f"the other {len(held)} held-back digits")
    return {
        "test_accuracy": float(np.mean(result.labels == y)),
        **summarize(result),
        "typicality": typicality.to_dict(),
    }


def model_metadata(model: keras.Model, split: data.Split, opts: MnistOptions, evaluation: dict) -> dict:
    """What the store keeps with an MNIST model: data, evaluation, layers, options, versions."""
    relu = find_relu_layers(model)
    return {
        "dataset": split.name,
        "dataset_size": split.size,
        "train_size": min(len(split.x_train), opts.limit or len(split.x_train)),
        "test_size": len(split.x_test),
        **evaluation,
        "weight_sparsity": weight_sparsity(model),
        "relu_layers": [{"name": l.name, "units": l.units, "size": l.size} for l in relu],
        "input_shape": list(MNIST_SHAPE),
        "input_range": [0.0, 1.0],
        "class_names": list(MNIST_CLASS_NAMES),
        "options": {name: value for name, value in asdict(opts).items() if name != "verbose"},  # not a model fact
        "seed": opts.seed,
        "versions": library_versions(),
    }


def save_mnist(model: keras.Model, card: MnistCard, labels: dict, report_dir: Path | None) -> str:
    """Save ``model`` with its model card as the metadata (what the service will validate and read)."""

    def write(path: Path) -> None:
        model.save(path / MNIST_MODEL_FILE)

    return save_model(MNIST_MODEL_NAME, write, labels=labels, metadata=card.metadata(), report_dir=report_dir)


def train_mnist(opts: MnistOptions, report_dir: Path | None = None, provenance: dict | None = None) -> dict:
    """Train, evaluate and save ``mnist_cnn``; returns the report that was saved with it.

    ``provenance`` (where this configuration came from, e.g. the sweep that chose it) is stored as is.
    """
    start = time.perf_counter()
    split = data.load_mnist(opts.dataset, opts.seed)
    log.info("MNIST data: %s, %d train / %d test", split.name, len(split.x_train), len(split.x_test))
    model = fit(split, opts)
    train_seconds = time.perf_counter() - start
    evaluation = evaluate(model, split.x_test, split.y_test)
    card = MnistCard.model_validate(
        {
            **model_metadata(model, split, opts, evaluation),
            "train_seconds": round(train_seconds, 2),
            "provenance": provenance or {},
        }
    )
    labels = {"task": "mnist", "arch": opts.arch, "dataset": split.name, "design": opts.design}
    tag = save_mnist(model, card, labels, report_dir)
    log.info(
        "saved %s: test accuracy %.4f on %d %s images, overall sparsity %.3f (%s)",
        tag,
        evaluation["test_accuracy"],
        len(split.x_test),
        split.name,
        evaluation["activation_sparsity"]["all"]["mean"],
        ", ".join(f"{k} {v['mean']:.3f}" for k, v in evaluation["activation_sparsity"].items() if k != "all"),
    )
    return {"tag": tag, **card.metadata()}
