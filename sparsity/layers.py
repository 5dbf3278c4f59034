"""Sparse activation layers: a thresholded ReLU (FATReLU) and k-winners-take-all.

Both are registered for Keras serialization under the ``sparsity`` package, so a model saved by
training loads in the service (importing this module registers them). Both output exact zeros
wherever a plain ReLU would, and more: the probe counts their zeros exactly like a ReLU's.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from sparsity.contract import DEFAULT_DENSITY, DEFAULT_THRESHOLD

PACKAGE = "sparsity"


@keras.saving.register_keras_serializable(package=PACKAGE)
class ThresholdedReLU(keras.layers.Layer):
    """``f(x) = x if x > threshold else 0`` with ``threshold >= 0`` (FATReLU, Kurtz et al. 2020).

    With ``threshold = 0`` it is a plain ReLU. Small positive pre-activations, which carry
    little signal, become exact zeros.
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, **kwargs) -> None:
        super().__init__(**kwargs)
        threshold = float(threshold)
        if not threshold >= 0.0 or threshold == float("inf"):
            raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
        self.threshold = threshold

    def call(self, inputs):
        return ops.where(inputs > self.threshold, inputs, ops.zeros_like(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package=PACKAGE)
class KWinners(keras.layers.Layer):
    """k-winners-take-all over each sample's whole layer output (Ahmad & Scheinkman 2019).

    Keeps the ``k = ceil(density * size)`` largest values of each sample (all positions and
    channels of a conv output together) and only those that are also > 0; everything else is an
    exact zero. Ties with the k-th value are kept, so a sample may keep slightly more than k.
    """

    def __init__(self, density: float = DEFAULT_DENSITY, **kwargs) -> None:
        super().__init__(**kwargs)
        density = float(density)
        if not 0.0 < density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {density}")
        self.density = density

    def k_for(self, size: int) -> int:
        return max(1, min(size, math.ceil(self.density * size - 1e-9)))

    def call(self, inputs):
        size = 1
        for dim in inputs.shape[1:]:
            size *= int(dim)
        flat = ops.reshape(inputs, (-1, size))
        kth = ops.top_k(flat, self.k_for(size), sorted=True)[0][:, -1:]
        kept = ops.logical_and(flat >= kth, flat > 0.0)
        return ops.reshape(ops.where(kept, flat, ops.zeros_like(flat)), ops.shape(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "density": self.density}


SPARSE_ACTIVATIONS = (ThresholdedReLU, KWinners)
"""Custom layers whose output is a ReLU-family activation (never negative, exact zeros)."""


@keras.saving.register_keras_serializable(package=PACKAGE)
class RisingL1(keras.regularizers.Regularizer):
    """An L1 activity penalty whose strength rises during training (ProSparse-style, Song et al. 2024).

    The penalty is ``strength * sum(|x|)``; ``strength`` is a variable that a training callback raises
    from 0 to ``l1`` (``training.resnet.RampL1``), so the network first learns its task and is then
    pushed, more and more, toward exact zeros. Outside training it does nothing; a saved model keeps
    ``l1`` only, and loads with the strength at 0.
    """

    def __init__(self, l1: float) -> None:
        l1 = float(l1)
        if not l1 >= 0.0 or l1 == float("inf"):
            raise ValueError(f"l1 must be a finite number >= 0, got {l1}")
        self.l1 = l1
        self.strength = keras.Variable(0.0, trainable=False, dtype="float32", name="rising_l1_strength")

    def __call__(self, x):
        return ops.cast(self.strength, x.dtype) * ops.sum(ops.abs(x))

    def ramp_to(self, share: float) -> None:
        self.strength.assign(self.l1 * share)

    def get_config(self) -> dict:
        return {"l1": self.l1}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ActivityPenalty(keras.regularizers.Regularizer):
    """An activity penalty of L1 and Hoyer-square terms, optionally ramped in during training.

    Per sample, ``l1 * sum(|x|) + hoyer * HS(x)`` with ``HS(x) = (sum |x|)^2 / (sum x^2) / n`` over the
    sample's ``n`` elements (DeepHoyer, Yang et al. 2020; the ``hs`` penalty of sparseml, Kurtz et al. 2020),
    summed over the batch (Keras 3.15 divides an activity penalty by the batch size, so each term is a mean
    per sample). HS/n runs from 1/n (one element on) to 1 (all equal): the share of the layer in use, and
    unlike L1 it does not change when ``x`` is multiplied by a constant, so the network cannot pay it down by
    shrinking a layer's activations and growing the next layer's weights.

    ``share`` multiplies both terms: 1 unless ``ramped``, when a training callback (``training.resnet.RampL1``)
    raises it from 0 to 1. ``gain`` multiplies them too: 1 unless a per-layer controller
    (``training.controller.ZeroShareController``) moves it. A saved model loads with both at 1 and the penalty
    matters only in training.
    """

    def __init__(self, l1: float = 0.0, hoyer: float = 0.0, ramped: bool = False) -> None:
        for name, value in (("l1", l1), ("hoyer", hoyer)):
            if not float(value) >= 0.0 or float(value) == float("inf"):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        self.l1, self.hoyer, self.ramped = float(l1), float(hoyer), bool(ramped)
        self.share = keras.Variable(0.0 if ramped else 1.0, trainable=False, dtype="float32", name="penalty_share")
        # a per-layer multiplier a training callback may set (training.controller); 1 otherwise, never saved
        self.gain = keras.Variable(1.0, trainable=False, dtype="float32", name="penalty_gain")

    def __call__(self, x):
        flat = ops.reshape(x, (ops.shape(x)[0], -1))
        absolute = ops.sum(ops.abs(flat), axis=1)
        total = self.l1 * ops.sum(absolute)
        if self.hoyer:
            size = ops.cast(ops.shape(flat)[1], x.dtype)
            squares = ops.sum(ops.square(flat), axis=1)
            hoyer = ops.divide_no_nan(ops.square(absolute), squares * size)
            total = total + self.hoyer * ops.sum(hoyer)
        return ops.cast(self.share * self.gain, x.dtype) * total

    def ramp_to(self, share: float) -> None:
        self.share.assign(share)

    def get_config(self) -> dict:
        return {"l1": self.l1, "hoyer": self.hoyer, "ramped": self.ramped}


def hoyer_density(x) -> float:
    """The mean over samples of HS(x)/n, the quantity :class:`ActivityPenalty`'s Hoyer term penalises (NumPy)."""
    import numpy as np

    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    squares = (flat**2).sum(axis=1)
    hs = np.divide(np.abs(flat).sum(axis=1) ** 2, squares * flat.shape[1], out=np.zeros(len(flat)), where=squares > 0)
    return float(hs.mean())
