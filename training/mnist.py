"""Train, evaluate and save the ReLU CNN on MNIST."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np

from sparsity import SparsityProbe, find_relu_layers, weight_sparsity
from sparsity.contract import MNIST_CLASS_NAMES, MNIST_MODEL_FILE, MNIST_MODEL_NAME, MNIST_SHAPE
from sparsity.summary import summarize
from training import data, models
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
    learning_rate: float = 1e-3
    seed: int = 0
    limit: int = 0  # 0 = all training images; >0 keeps the first N (smoke tests)
    verbose: int = 1  # Keras progress bar: 0 silent, 1 bar, 2 one line per epoch


def fit(split: data.Split, opts: MnistOptions) -> keras.Model:
    keras.utils.set_random_seed(opts.seed)
    model = models.build(opts.arch, opts.activity_l1, opts.seed)
    model.compile(
        optimizer=keras.optimizers.Adam(opts.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    x, y = split.x_train, split.y_train
    if opts.limit:
        x, y = x[: opts.limit], y[: opts.limit]
    model.fit(x, y, epochs=opts.epochs, batch_size=opts.batch_size, shuffle=True, verbose=opts.verbose)
    return model


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray) -> dict:
    """Test accuracy and the sparsity baseline, from the same probe the service uses."""
    probe = SparsityProbe(model, value_range=(0.0, 1.0), field="images")
    result = probe.run_batched(x)
    return {"test_accuracy": float(np.mean(result.labels == y)), **summarize(result)}


def train_mnist(opts: MnistOptions, report_dir: Path | None = None) -> dict:
    """Train, evaluate and save ``mnist_cnn``; returns the report that was saved with it."""
    start = time.perf_counter()
    split = data.load_mnist(opts.dataset, opts.seed)
    log.info("MNIST data: %s, %d train / %d test", split.name, len(split.x_train), len(split.x_test))
    model = fit(split, opts)
    train_seconds = time.perf_counter() - start
    evaluation = evaluate(model, split.x_test, split.y_test)
    relu = find_relu_layers(model)
    metadata = {
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
        "options": asdict(opts),
        "seed": opts.seed,
        "train_seconds": round(train_seconds, 2),
        "versions": library_versions(),
    }
    labels = {"task": "mnist", "arch": opts.arch, "dataset": split.name}

    def write(path: Path) -> None:
        model.save(path / MNIST_MODEL_FILE)

    tag = save_model(MNIST_MODEL_NAME, write, labels=labels, metadata=metadata, report_dir=report_dir)
    log.info(
        "saved %s: test accuracy %.4f on %d %s images, overall sparsity %.3f",
        tag,
        evaluation["test_accuracy"],
        len(split.x_test),
        split.name,
        evaluation["activation_sparsity"]["all"]["mean"],
    )
    return {"tag": tag, **metadata}
