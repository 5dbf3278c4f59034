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
    """A standardising step plus a linear classifier, computed from their numbers as one pass: check the
    rows, scale them once, and return the probabilities with the weight and contribution sparsity of
    those same scaled features. No scikit-learn at run time (its input validation was a fifth of an iris
    request); :meth:`from_fitted` reads a fitted scaler and classifier (``mean_``, ``scale_``, ``coef_``,
    ``intercept_``) and a test checks the probabilities against scikit-learn's ``predict_proba``.

    Several classes: a softmax over ``x @ coef.T + intercept`` (multinomial logistic regression). Two
    classes stored as one coefficient row: ``[1 - p, p]`` with ``p`` the logistic of that row's score.
    """

    def __init__(
        self,
        coef,
        intercept,
        mean,
        scale,
        *,
        field: str = "features",
        value_range: tuple[float, float] | None = None,
    ) -> None:
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = np.asarray(intercept, dtype=np.float64)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        if self.coef.ndim != 2 or self.intercept.shape != (self.coef.shape[0],):
            raise ValueError(
                f"coef (classes, features) and intercept (classes,) disagree: {self.coef.shape}, {self.intercept.shape}"
            )
        if self.mean.shape != (self.coef.shape[1],) or self.scale.shape != self.mean.shape:
            raise ValueError(f"scaler mean and scale must have {self.coef.shape[1]} values each")
        self.field = field
        self.value_range = value_range
        self.item_shape = (self.coef.shape[1],)
        self.classes = 2 if self.coef.shape[0] == 1 else self.coef.shape[0]

    @classmethod
    def from_fitted(cls, scaler, classifier, **kwargs) -> LinearProbe:
        return cls(classifier.coef_, classifier.intercept_, scaler.mean_, scaler.scale_, **kwargs)

    def run(self, x: np.ndarray) -> LinearResult:
        from sparsity.validation import check_batch

        low, high = self.value_range if self.value_range is not None else (None, None)
        rows = check_batch(x, field=self.field, item_shape=self.item_shape, low=low, high=high, dtype=np.float64)
        scaled = (rows - self.mean) / self.scale
        scores = scaled @ self.coef.T + self.intercept
        if self.coef.shape[0] == 1:
            p = 1.0 / (1.0 + np.exp(-scores[:, 0]))
            probabilities = np.stack([1.0 - p, p], axis=1)
        else:
            shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
            probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        return LinearResult(probabilities, np.argmax(probabilities, axis=1), scaled, linear_sparsity(self.coef, scaled))
