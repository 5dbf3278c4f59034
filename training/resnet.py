"""A residual CNN family for the deeper-networks study (``python -m lab depth``, :mod:`lab.depth`).

Stages of residual blocks with batch norm, after a stem convolution, then global average pooling and the
softmax classifier. Knobs:

- ``depth``: residual blocks per stage;
- ``width``: a multiplier on each stage's channels (:data:`STAGE_CHANNELS`);
- ``placement``, where the ReLU sits relative to the ``Add``:
  - ``post`` (He et al. 2016a): conv, BN, ReLU, conv, BN, ``Add``, then ReLU. Each block's output is a
    ReLU output, so its exact zeros are the ones the next block receives;
  - ``pre`` (He et al. 2016b): BN, ReLU, conv, BN, ReLU, conv, then ``Add`` and nothing after it. The
    residual stream itself is never rectified; only the branches' inputs are, and a final BN + ReLU
    precedes the pooling.

Training sees small random rotations and shifts (the default CNN's augmentation; ``augment=False`` drops it);
inference sees the image unchanged.

Every activation is the :class:`training.models.LayerSpec`'s design (ReLU, FATReLU or k-WTA) with its
optional L1 activity penalty, as in the lab's first study, and is named so that the probe's layer names
say where it sits: ``stem``, ``s{stage}b{block}_relu1``, ``s{stage}b{block}_relu2`` (pre) or
``s{stage}b{block}_out`` (post), ``final_relu`` (pre). With ``l1_schedule="rising"`` the L1 penalty is a
:class:`sparsity.layers.RisingL1` whose strength :class:`RampL1` raises during training (ProSparse-style).

Channels are the units. Pruning (:mod:`training.resnet_prune`) rebuilds the same graph with fewer channels
through ``channels``: ``"s{stage}"`` for a stage's residual stream (every tensor the stage's ``Add`` layers
tie together) and ``"s{stage}b{block}_mid"`` for the channels inside a block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
from keras import layers

from sparsity.layers import ActivityPenalty, KWinners, RisingL1, ThresholdedReLU
from training.models import LayerSpec, _classifier, _image_input, _regularizer, initializer, kernel_constraint

PLACEMENTS = ("post", "pre")
L1_SCHEDULES = ("constant", "rising")
RAMP_SHARE = 0.7
"""A rising L1 reaches its full strength after this share of the training steps."""
STAGE_CHANNELS = (16, 32, 64)
"""Channels of each stage at width 1; every stage after the first halves the resolution."""


@dataclass(frozen=True)
class ResNetSpec:
    depth: int = 1
    width: float = 1.0
    placement: str = "post"
    stages: tuple[int, ...] = STAGE_CHANNELS
    augment: bool = True
    l1_schedule: str = "constant"
    bn_scale: bool = True
    """False: batch norm without its gamma (``scale=False``), so no BN can rescale a ReLU's input to pay less
    penalty: only its beta and the convolution move the zeros."""

    def __post_init__(self) -> None:
        if self.l1_schedule not in L1_SCHEDULES:
            raise ValueError(f"l1_schedule must be one of {', '.join(L1_SCHEDULES)}, got {self.l1_schedule!r}")
        if self.depth < 1:
            raise ValueError(f"depth must be at least 1 block per stage, got {self.depth}")
        if not self.width > 0:
            raise ValueError(f"width must be a positive multiplier, got {self.width}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {self.placement!r}")

    def channels(self, stage: int) -> int:
        return max(1, round(self.stages[stage] * self.width))

    def blocks(self) -> list[tuple[int, int, str]]:
        """``(stage, block, prefix)`` of every residual block, in graph order."""
        return [(s, b, f"s{s}b{b}") for s in range(len(self.stages)) for b in range(self.depth)]

    def relu_names(self) -> list[str]:
        """The ReLU-family layers the model has, in graph order (what the probe must find)."""
        names = ["stem"]
        for stage in range(len(self.stages)):
            for block in range(self.depth):
                tail = "relu2" if self.placement == "pre" else "out"
                names += [f"s{stage}b{block}_relu1", f"s{stage}b{block}_{tail}"]
        return [*names, "final_relu"] if self.placement == "pre" else names


def _activation(x: keras.KerasTensor, name: str, spec: LayerSpec, schedule: str) -> keras.KerasTensor:
    design = spec.design_of(name)
    rising = schedule == "rising" and spec.activity_l1 > 0
    regularizer = RisingL1(spec.activity_l1) if rising else _regularizer(spec)
    if design == "relu":
        return layers.ReLU(name=name, activity_regularizer=regularizer)(x)
    if design == "fatrelu":
        return ThresholdedReLU(spec.threshold_of(name), name=name, activity_regularizer=regularizer)(x)
    return KWinners(spec.kwta_density, name=name, activity_regularizer=regularizer)(x)


def _bn(rspec: ResNetSpec, name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(name=name, scale=rspec.bn_scale)


def _conv(x, channels: int, name: str, seed: int, spec: LayerSpec, kernel: int = 3, strides: int = 1):
    init = initializer(spec.init, seed)
    return layers.Conv2D(
        channels, kernel, strides=strides, padding="same", use_bias=False, kernel_initializer=init, name=name
    )(x)


def _block(x, channels: int, mid: int, reshaped: bool, prefix: str, rspec: ResNetSpec, spec: LayerSpec, seed: int):
    """One residual block; the first of every stage after the first halves the resolution and has a
    1x1 projection on the shortcut. ``mid`` is the channels between the block's two convolutions."""
    strides = 2 if reshaped else 1
    act = lambda y, name: _activation(y, name, spec, rspec.l1_schedule)  # noqa: E731
    if rspec.placement == "post":
        y = _conv(x, mid, f"{prefix}_conv1", seed, spec, strides=strides)
        y = _bn(rspec, f"{prefix}_bn1")(y)
        y = act(y, f"{prefix}_relu1")
        y = _conv(y, channels, f"{prefix}_conv2", seed + 1, spec)
        y = _bn(rspec, f"{prefix}_bn2")(y)
        shortcut = x
        if reshaped:
            shortcut = _conv(x, channels, f"{prefix}_project", seed + 2, spec, kernel=1, strides=strides)
            shortcut = _bn(rspec, f"{prefix}_project_bn")(shortcut)
        return act(layers.Add(name=f"{prefix}_add")([y, shortcut]), f"{prefix}_out")
    y = _bn(rspec, f"{prefix}_bn1")(x)
    y = act(y, f"{prefix}_relu1")
    # the projection takes the pre-activated input, as in He et al. 2016b
    shortcut = _conv(y, channels, f"{prefix}_project", seed + 2, spec, kernel=1, strides=strides) if reshaped else x
    y = _conv(y, mid, f"{prefix}_conv1", seed, spec, strides=strides)
    y = _bn(rspec, f"{prefix}_bn2")(y)
    y = act(y, f"{prefix}_relu2")
    y = _conv(y, channels, f"{prefix}_conv2", seed + 1, spec)
    return layers.Add(name=f"{prefix}_add")([y, shortcut])


def build_resnet(
    rspec: ResNetSpec | None = None, spec: LayerSpec | None = None, seed: int = 0, channels: dict | None = None
) -> keras.Model:
    """The residual CNN of ``rspec`` with every activation made by ``spec``, on 28x28 digits.

    ``channels`` overrides channel counts (pruning): ``"s{stage}"`` a stage's stream, ``"{prefix}_mid"``
    a block's inner channels; anything not given is the width multiplier's."""
    rspec = rspec or ResNetSpec()
    spec = spec or LayerSpec()
    channels = channels or {}
    stream = [channels.get(f"s{s}", rspec.channels(s)) for s in range(len(rspec.stages))]
    inputs, x = _image_input()
    if rspec.augment:  # active only while training, as in the default CNN
        x = layers.RandomRotation(0.03, fill_mode="constant", seed=seed, name="augment_rotate")(x)
        x = layers.RandomTranslation(0.08, 0.08, fill_mode="constant", seed=seed, name="augment_shift")(x)
    x = _conv(x, stream[0], "stem_conv", seed, spec)
    x = _bn(rspec, "stem_bn")(x)
    x = _activation(x, "stem", spec, rspec.l1_schedule)
    for stage, block, prefix in rspec.blocks():
        mid = channels.get(f"{prefix}_mid", rspec.channels(stage))
        reshaped = stage > 0 and block == 0
        x = _block(x, stream[stage], mid, reshaped, prefix, rspec, spec, seed + 10 * (stage + 1) + block)
    if rspec.placement == "pre":
        x = _bn(rspec, "final_bn")(x)
        x = _activation(x, "final_relu", spec, rspec.l1_schedule)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    name = f"mnist_resnet_{rspec.placement}_d{rspec.depth}_w{rspec.width:g}"
    return keras.Model(inputs, _classifier(x, seed + 99, kernel_constraint(spec, 0)), name=name)


class RampL1(keras.callbacks.Callback):
    """Raises every ramped activity penalty of the model (a :class:`~sparsity.layers.RisingL1`, or an
    :class:`~sparsity.layers.ActivityPenalty` made with ``ramped=True``) from 0 to its full strength, step by
    step, along ``sin^2`` over the first ``ramp_share`` of training (a smooth start and a smooth arrival)."""

    def __init__(self, ramp_share: float = RAMP_SHARE) -> None:
        super().__init__()
        if not 0.0 < ramp_share <= 1.0:
            raise ValueError(f"ramp_share must be in (0, 1], got {ramp_share}")
        self.ramp_share = ramp_share
        self.step = 0
        self.total = 1
        self.regularizers: list = []

    def on_train_begin(self, logs=None) -> None:
        self.regularizers = [
            regularizer
            for layer in self.model._flatten_layers(include_self=False)
            if isinstance(regularizer := getattr(layer, "activity_regularizer", None), RisingL1)
            or (isinstance(regularizer, ActivityPenalty) and regularizer.ramped)
        ]
        self.total = max(1, int((self.params.get("steps") or 1) * (self.params.get("epochs") or 1) * self.ramp_share))
        self.step = 0

    def strength_share(self) -> float:
        return math.sin(math.pi / 2 * min(1.0, self.step / self.total)) ** 2

    def on_train_batch_begin(self, batch: int, logs=None) -> None:
        share = self.strength_share()
        for regularizer in self.regularizers:
            regularizer.ramp_to(share)
        self.step += 1
