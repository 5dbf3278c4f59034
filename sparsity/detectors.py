"""Typicality detectors the service serves: fitted at registration on in-distribution calibration data
only, scored from what the probe's forward pass already produced (``unit-firing`` inside the probe's
compiled call, from :class:`Fused`; NumPy here for registration, the study and tests).

- ``unit-firing`` (every ReLU model): the per-unit firing profile, one share per unit (conv channel or
  dense neuron) of the positions where it was on. Per ReLU layer, the class-conditional Mahalanobis
  distance of Lee et al. (2018): the squared distance to the nearest class mean (classes as the model
  predicts them), one covariance shared by the classes, shrunk by Ledoit-Wolf. Each layer's distance is
  standardised by its mean and spread over the fitting data, and the layers are summed. Chosen by the rule
  in :mod:`benchmarks.ood_study` (best mean AUROC on near-miss sets among detectors that keep false alarms
  on unseen digits at or below 2% and flag at least 99% of every far set).
- ``profile-mahalanobis`` (linear models, and cards registered before ``unit-firing``): the Mahalanobis
  distance of a small profile (a linear model's standardized features, or per-layer zero fractions) from
  its mean; its state is small and lives in the card (:class:`sparsity.typicality.TypicalityModel`).

The unit-firing state (a whitening matrix per layer, class centres) is too large for a card: it is an
``.npz`` file next to the model, named and hashed in the card, read without pickle.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparsity.typicality import (
    PROFILE_MAHALANOBIS,
    TypicalityModel,
    ledoit_wolf_shrinkage,
    mahalanobis_fit,
)

STATE_FILE = "typicality.npz"
MIN_SHRINKAGE = 0.01
"""Never less shrinkage than this (a unit that never varied keeps the covariance invertible)."""


class DetectorStateError(ValueError):
    """A detector's saved state is missing, altered or inconsistent: one line saying which."""


def shrunk_precision(centred: np.ndarray, floor: float = MIN_SHRINKAGE) -> np.ndarray:
    """Inverse of the covariance of ``centred`` (N, F) shrunk toward a scaled identity (Ledoit-Wolf,
    at least ``floor``): :func:`sparsity.typicality.mahalanobis_fit`'s precision."""
    centred = np.asarray(centred, dtype=np.float64)
    return mahalanobis_fit(centred, min(1.0, max(floor, ledoit_wolf_shrinkage(centred))))[1]


@dataclass(frozen=True)
class ClassMahalanobis:
    """Squared distance to the nearest class mean under one shared covariance (Lee et al. 2018).

    Stored whitened: with the precision ``P = L L^T``, ``(x - m) P (x - m) = |x L - m L|^2``, so one
    input costs one (F x F) product whatever the number of classes."""

    whiten: np.ndarray  # (F, F), the Cholesky factor L of the shared precision
    centres: np.ndarray  # (K, F), the class means times L

    @classmethod
    def fit(cls, x: np.ndarray, labels: np.ndarray) -> ClassMahalanobis:
        x = np.asarray(x, dtype=np.float64)
        labels = np.asarray(labels)
        if x.ndim != 2 or len(x) < 2 or len(labels) != len(x):
            raise ValueError(f"need at least 2 rows (N, F) and one label each, got {x.shape} and {labels.shape}")
        classes = np.unique(labels)
        means = np.stack([x[labels == c].mean(axis=0) for c in classes])
        precision = shrunk_precision(x - means[np.searchsorted(classes, labels)])
        whiten = np.linalg.cholesky(precision)
        return cls(whiten=whiten, centres=means @ whiten)

    def scores(self, x: np.ndarray) -> np.ndarray:
        z = np.asarray(x, dtype=np.float64) @ self.whiten
        norms = (self.centres**2).sum(axis=1)
        return ((z**2).sum(axis=1, keepdims=True) - 2.0 * z @ self.centres.T + norms).min(axis=1)


@dataclass(frozen=True)
class Fused:
    """The unit-firing score as two products and a minimum, for ``shares`` x (N, U):
    ``z = x @ whiten + shift`` (whitened, centred near the data), then
    ``d = [z*z, z] @ stack + bias`` (N, L*K): every layer's squared distance to every class centre, divided
    by the layer's scale and less its mean; the score is the sum over layers of the minimum over classes.
    Centring keeps the terms small for typical inputs, so float32 loses little (the service's graph runs
    in float32)."""

    whiten: np.ndarray  # (U, U) block diagonal, each layer's block divided by sqrt(scale)
    shift: np.ndarray  # (U,) minus the centring point, in whitened units
    stack: np.ndarray  # (2U, L*K): rows 0..U-1 copy |z_l|^2 to layer l's columns; rows U.. are -2 (c_lk - m)
    bias: np.ndarray  # (L*K,) |c_lk - m|^2 - loc_l / scale_l
    layers: int
    classes: int


ROW_BY_ROW_UP_TO = 64
"""Scores of at most this many rows are computed a row at a time, so that a row's score does not depend on the other
rows computed with it: the service sets it to its batching's largest pass (``BATCH_MAX_SIZE``), so that an item
gets the same score alone as in any pass it shares; a request of more items is never batched."""


@dataclass(frozen=True)
class UnitFiring:
    """The ``unit-firing`` detector over the concatenated per-unit on-shares of every ReLU layer (N, U).

    Scoring is fused over layers (see ``__post_init__``)."""

    units: tuple[int, ...]  # units per layer, in the probe's order
    whiten: np.ndarray  # (U, U) block diagonal: each layer's Cholesky factor
    centres: np.ndarray  # (L, K, U) each layer's whitened class centres, zero outside its block
    loc: np.ndarray  # (L,) mean of each layer's distance over the fitting data
    scale: np.ndarray  # (L,) its standard deviation

    @classmethod
    def fit(cls, shares: np.ndarray, units: list[int], labels: np.ndarray) -> UnitFiring:
        shares = np.asarray(shares, dtype=np.float64)
        if shares.ndim != 2 or shares.shape[1] != sum(units):
            raise ValueError(f"shares must be (N, {sum(units)}) for layers of {list(units)} units, got {shares.shape}")
        labels = np.asarray(labels)
        classes = np.unique(labels)
        total, layers = sum(units), len(units)
        whiten = np.zeros((total, total))
        centres = np.zeros((layers, len(classes), total))
        loc, scale = np.zeros(layers), np.ones(layers)
        start = 0
        for i, width in enumerate(units):
            block = slice(start, start + width)
            fitted = ClassMahalanobis.fit(shares[:, block], labels)
            whiten[block, block] = fitted.whiten
            centres[i, :, block] = fitted.centres
            distances = fitted.scores(shares[:, block])
            loc[i] = distances.mean()
            scale[i] = distances.std() or 1.0
            start += width
        return cls(units=tuple(int(u) for u in units), whiten=whiten, centres=centres, loc=loc, scale=scale)

    def __post_init__(self) -> None:
        # Per layer l and class k: |z_l - c_lk|^2 / scale_l = (|z_l|^2 - 2 z_l.c_lk + |c_lk|^2) / scale_l with
        # z = x W, folded into fixed matrices (each layer's blocks divided by sqrt(scale), the mean into the
        # bias), after moving the origin to the mean of the class centres (float32 in the service's graph
        # otherwise lost 3e-4 on a score: the expanded terms were large and cancelled).
        layers, classes, total = self.centres.shape
        root = np.repeat(1.0 / np.sqrt(self.scale), self.units)  # (U,)
        owner = np.repeat(np.arange(layers), self.units)  # the layer of each unit
        mask = owner[None, :] == np.arange(layers)[:, None]  # (L, U)
        centres = self.centres * root[None, None, :]
        origin = centres.mean(axis=1).sum(axis=0)  # (U,): each layer's block holds that layer's mean centre
        centred = ((centres - origin) * mask[:, None, :]).reshape(layers * classes, total)  # (L*K, U)
        spread = np.repeat(mask.T.astype(np.float64), classes, axis=1)  # (U, L*K)
        bias = (centred**2).sum(axis=1) - np.repeat(self.loc / self.scale, classes)
        fused = Fused(
            whiten=np.ascontiguousarray(self.whiten * root[None, :]),
            shift=-origin,
            stack=np.concatenate([spread, -2.0 * centred.T]),
            bias=bias,
            layers=layers,
            classes=classes,
        )
        object.__setattr__(self, "fused", fused)

    def layer_distances(self, shares: np.ndarray) -> np.ndarray:
        """(N, L): each layer's squared distance to its nearest class centre, divided by the layer's scale and
        less the layer's mean over the fitting data."""
        f = self.fused
        shares = np.asarray(shares, dtype=np.float64)
        if len(shares) <= ROW_BY_ROW_UP_TO:  # a stack of one-row products: each row's score is the one it gets alone
            z = (shares[:, None, :] @ f.whiten)[:, 0, :] + f.shift
            d = (np.concatenate([z * z, z], axis=1)[:, None, :] @ f.stack)[:, 0, :] + f.bias
        else:  # one matrix product (2.4x faster at 64 rows; its sums run in another order, the last bits differ)
            z = shares @ f.whiten + f.shift
            d = np.concatenate([z * z, z], axis=1) @ f.stack + f.bias
        return d.reshape(len(z), f.layers, f.classes).min(axis=2)

    def scores(self, shares: np.ndarray) -> np.ndarray:
        """The score of each row of ``shares`` (N, U) in NumPy; the service computes the same inside the
        probe's compiled forward pass (:class:`sparsity.probe.SparsityProbe`, ``scorer``)."""
        return self.layer_distances(shares).sum(axis=1)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            units=np.asarray(self.units, dtype=np.int64),
            whiten=self.whiten,
            centres=self.centres,
            loc=self.loc,
            scale=self.scale,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> UnitFiring:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                units = tuple(int(u) for u in arrays["units"])
                state = cls(units, arrays["whiten"], arrays["centres"], arrays["loc"], arrays["scale"])
        except (KeyError, ValueError, OSError) as exc:
            raise DetectorStateError(f"not a unit-firing detector state ({exc})") from None
        total, layers = sum(units), len(units)
        if (
            state.whiten.shape != (total, total)
            or state.centres.ndim != 3
            or state.centres.shape[0] != layers
            or state.centres.shape[2] != total
            or state.loc.shape != (layers,)
            or state.scale.shape != (layers,)
        ):
            raise DetectorStateError(f"unit-firing state arrays do not fit {layers} layers of {list(units)} units")
        return state


@dataclass(frozen=True)
class ProfileMahalanobis:
    """The ``profile-mahalanobis`` detector: its state is the card's mean and precision."""

    typicality: TypicalityModel

    def scores(self, profiles: np.ndarray) -> np.ndarray:
        return self.typicality.scores(profiles)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_detector(typicality: TypicalityModel, directory: str | Path | None) -> UnitFiring | ProfileMahalanobis:
    """The scoring object a card's ``typicality`` names; a unit-firing state is read from ``directory``
    and checked against the hash in the card."""
    if typicality.detector == PROFILE_MAHALANOBIS:
        if not typicality.mean or not typicality.precision or len(typicality.precision) != len(typicality.mean):
            raise DetectorStateError("the profile-mahalanobis detector needs typicality.mean and typicality.precision")
        return ProfileMahalanobis(typicality)
    if directory is None or typicality.state_file is None:
        raise DetectorStateError(f"the {typicality.detector} detector needs its state file")
    path = Path(directory) / typicality.state_file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DetectorStateError(f"typicality state {typicality.state_file}: {exc.strerror or exc}") from None
    if typicality.state_sha256 and sha256(data) != typicality.state_sha256:
        raise DetectorStateError(f"typicality state {typicality.state_file} does not match the hash in the card")
    detector = UnitFiring.from_bytes(data)
    if len(detector.units) != len(typicality.features):
        raise DetectorStateError(
            f"typicality state has {len(detector.units)} layers, the card's typicality.features names "
            f"{len(typicality.features)}"
        )
    return detector
