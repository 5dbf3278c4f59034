"""Train, evaluate and save the ReLU CNN on MNIST."""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np

from modelstore.kinds import register_file
from modelstore.kinds.keras_relu import KerasReluCard
from modelstore.register import Calibration
from sparsity import SparsityProbe
from sparsity.contract import DEFAULT_DENSITY, DEFAULT_THRESHOLD
from sparsity.summary import summarize
from training import data, models
from training.datasets import MNIST_CLASS_NAMES, MNIST_DIGIT, MNIST_MODEL_NAME, MNIST_RANGE, MNIST_SHAPE
from training.progress import duration

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
    threshold: float = DEFAULT_THRESHOLD
    kwta_density: float = DEFAULT_DENSITY
    hoyer: float = 0.0
    ramp: float = 0.0
    max_norm: float = 0.0
    kwta_layers: tuple[str, ...] = ()
    control: float = 0.0
    """If > 0, a per-layer controller raises each layer's penalty while it has fewer zeros than this."""
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
            hoyer=self.hoyer,
            ramp=self.ramp,
            max_norm=self.max_norm,
            kwta_layers=tuple(self.kwta_layers),
            control=self.control,
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
    if opts.ramp:
        from training.resnet import RampL1

        callbacks.append(RampL1(opts.ramp))
    if opts.control:
        from training.controller import controlled

        callbacks += controlled(opts.control, x)
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


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray) -> dict:
    """Test accuracy and the sparsity figures over ``x``, from the same probe the service uses (the
    sweep's and pruning's measure; the stored card comes from registration, :func:`save_mnist`)."""
    result = SparsityProbe(model, value_range=MNIST_RANGE, field="images").run_batched(x)
    return {"test_accuracy": float(np.mean(result.labels == y)), **summarize(result)}


def training_facts(split: data.Split, opts: MnistOptions, test_accuracy: float) -> dict:
    """What a training run adds to the registered card: the data, the options, the whole test split's accuracy."""
    return {
        "dataset": split.name,
        "dataset_size": split.size,
        "train_size": min(len(split.x_train), opts.limit or len(split.x_train)),
        "test_size": len(split.x_test),
        "test_accuracy": test_accuracy,
        "accuracy_on": f"the {len(split.x_test)} held-back {split.name} digits",
        "options": {name: value for name, value in asdict(opts).items() if name != "verbose"},  # not a model fact
        "seed": opts.seed,
    }


def save_mnist(
    model: keras.Model,
    split: data.Split,
    facts: dict,
    labels: dict,
    report_dir: Path | None,
    name: str = MNIST_MODEL_NAME,
) -> tuple[str, KerasReluCard]:
    """Register ``model`` as ``name`` (``mnist_cnn`` by default) the way any user's model is registered, with
    the held-back digits as the calibration set and ``facts`` (the training run's figures) added to its card."""
    with tempfile.TemporaryDirectory(prefix="mnist-") as tmp:
        path = Path(tmp) / KerasReluCard.MODEL_FILE
        model.save(path)
        return register_file(
            path,
            name,
            Calibration(split.x_test, split.y_test, source=f"held-back {split.name} digits"),
            class_names=list(MNIST_CLASS_NAMES),
            input_range=MNIST_RANGE,
            preprocessing=MNIST_DIGIT,
            facts=facts,
            labels=labels,
            report_dir=report_dir,
        )


def load_extra(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Extra labelled digits (``python -m modelstore dataset mnist_cnn --reviewed --out FILE``): an ``.npz`` with
    ``x`` (N, 28, 28) in [0, 1] and ``y`` (N,) digits. ValueError names the file and the rule."""
    try:
        stored = np.load(path, allow_pickle=False)
        x, y = np.asarray(stored["x"], dtype=np.float32), np.asarray(stored["y"])
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"--extra {path}: must be an .npz with arrays x and y ({exc})") from None
    x = x.reshape(len(x), *MNIST_SHAPE) if x.ndim >= 2 and x[0].size == MNIST_SHAPE[0] * MNIST_SHAPE[1] else x
    if x.shape[1:] != MNIST_SHAPE or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"--extra {path}: x must be (N, 28, 28) with one label in y an item; got {x.shape}, {y.shape}")
    if not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1:
        raise ValueError(f"--extra {path}: x must hold values in [0, 1]")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() > 9:
        raise ValueError(f"--extra {path}: y must hold digits 0-9")
    return x, y.astype(np.int64)


def train_mnist(
    opts: MnistOptions,
    report_dir: Path | None = None,
    provenance: dict | None = None,
    extra: Path | None = None,
) -> dict:
    """Train, evaluate and save ``mnist_cnn``; returns the report that was saved with it.

    ``provenance`` (where this configuration came from, e.g. the sweep that chose it) is stored as is. ``extra``:
    more labelled digits (:func:`load_extra`) added to the training part only, never to the held-back digits.
    """
    start = time.perf_counter()
    split = data.load_mnist(opts.dataset, opts.seed)
    if extra is not None:
        more_x, more_y = load_extra(extra)
        split.x_train = np.concatenate([split.x_train, more_x])
        split.y_train = np.concatenate([split.y_train, more_y])
        provenance = {**(provenance or {}), "extra": {"file": extra.name, "items": len(more_y)}}
        log.info("extra labelled digits: %d from %s, added to the training part", len(more_y), extra)
    log.info("MNIST data: %s, %d train / %d test", split.name, len(split.x_train), len(split.x_test))
    model = fit(split, opts)
    train_seconds = time.perf_counter() - start
    evaluation = evaluate(model, split.x_test, split.y_test)
    facts = {
        **training_facts(split, opts, evaluation["test_accuracy"]),
        "train_seconds": round(train_seconds, 2),
        "provenance": provenance or {},
    }
    labels = {"task": "mnist", "arch": opts.arch, "dataset": split.name, "design": opts.design}
    tag, card = save_mnist(model, split, facts, labels, report_dir)
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
