"""Sparsity of an L1-regularised linear classifier."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparsity.errors import InvalidInputError


@dataclass
class LinearSparsity:
    weights: float  # share of exactly-zero coefficients
    contributions: np.ndarray  # (N,) share of coefficient x feature terms that are exactly zero


def linear_sparsity(coef: np.ndarray, x: np.ndarray) -> LinearSparsity:
    """Weight sparsity of ``coef`` (classes, features) and, per row of ``x`` (N, features), the
    fraction of the classes*features terms ``coef[k, j] * x[i, j]`` that are exactly zero.

    ``x`` must be what the linear model sees (after any scaling step).
    """
    coef = np.asarray(coef, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if coef.ndim != 2:
        raise InvalidInputError("coef", f"must be 2-D (classes, features), got {coef.shape}")
    if x.ndim != 2 or x.shape[1] != coef.shape[1]:
        raise InvalidInputError("features", f"must have shape (N, {coef.shape[1]}), got {x.shape}")
    if not np.isfinite(x).all():
        raise InvalidInputError("features", "must be finite numbers (no NaN or Infinity)")
    terms = coef[None, :, :] * x[:, None, :]  # (N, classes, features)
    contributions = np.mean(terms == 0.0, axis=(1, 2))
    return LinearSparsity(weights=float(np.mean(coef == 0.0)), contributions=contributions)


@dataclass
class LinearResult:
    """What one pass of a linear probe produced for N rows."""

    probabilities: np.ndarray  # (N, classes)
    labels: np.ndarray  # (N,)
    scaled: np.ndarray  # (N, features): what the linear model saw (also the typicality profile)
    sparsity: LinearSparsity


class LinearProbe:
    """A fitted standardizing step plus an L1 linear classifier (scikit-learn-like: ``transform``,
    ``predict_proba``, ``coef_``), run as one pass: check the rows, scale them once, and return the
    probabilities with the weight and contribution sparsity of those same scaled features. Training
    and the service both use it, so both measure the same thing."""

    def __init__(self, scaler, classifier, *, field: str = "features", limit: float | None = None) -> None:
        self.scaler = scaler
        self.classifier = classifier
        self.coef = np.asarray(classifier.coef_)
        self.field = field
        self.limit = limit

    def run(self, x: np.ndarray) -> LinearResult:
        from sparsity.validation import check_batch

        low, high = (-self.limit, self.limit) if self.limit is not None else (None, None)
        rows = check_batch(x, field=self.field, item_shape=(self.coef.shape[1],), low=low, high=high, dtype=np.float64)
        scaled = self.scaler.transform(rows)
        probabilities = self.classifier.predict_proba(scaled)
        return LinearResult(probabilities, np.argmax(probabilities, axis=1), scaled, linear_sparsity(self.coef, scaled))
