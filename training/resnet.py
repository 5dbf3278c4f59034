"""A residual CNN family for the deeper-networks study (issue 19; the study itself is not built yet).

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

Every activation is the :class:`training.models.LayerSpec`'s design (ReLU, FATReLU or k-WTA) with its
optional L1 activity penalty, as in the lab's first study, and is named so that the probe's layer names
say where it sits: ``stem``, ``s{stage}b{block}_relu1``, ``s{stage}b{block}_relu2`` (pre) or
``s{stage}b{block}_out`` (post), ``final_relu`` (pre).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from sparsity.layers import KWinners, ThresholdedReLU
from training.models import LayerSpec, _classifier, _image_input, _regularizer, initializer

PLACEMENTS = ("post", "pre")
STAGE_CHANNELS = (16, 32)
"""Channels of each stage at width 1; every stage after the first halves the resolution."""


@dataclass(frozen=True)
class ResNetSpec:
    depth: int = 1
    width: float = 1.0
    placement: str = "post"
    stages: tuple[int, ...] = STAGE_CHANNELS

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ValueError(f"depth must be at least 1 block per stage, got {self.depth}")
        if not self.width > 0:
            raise ValueError(f"width must be a positive multiplier, got {self.width}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {self.placement!r}")

    def channels(self, stage: int) -> int:
        return max(1, round(self.stages[stage] * self.width))

    def relu_names(self) -> list[str]:
        """The ReLU-family layers the model has, in graph order (what the probe must find)."""
        names = ["stem"]
        for stage in range(len(self.stages)):
            for block in range(self.depth):
                tail = "relu2" if self.placement == "pre" else "out"
                names += [f"s{stage}b{block}_relu1", f"s{stage}b{block}_{tail}"]
        return [*names, "final_relu"] if self.placement == "pre" else names


def _activation(x: keras.KerasTensor, name: str, spec: LayerSpec) -> keras.KerasTensor:
    design = spec.design_of(name)
    regularizer = _regularizer(spec)
    if design == "relu":
        return layers.ReLU(name=name, activity_regularizer=regularizer)(x)
    if design == "fatrelu":
        return ThresholdedReLU(spec.threshold, name=name, activity_regularizer=regularizer)(x)
    return KWinners(spec.kwta_density, name=name, activity_regularizer=regularizer)(x)


def _conv(x, channels: int, name: str, seed: int, spec: LayerSpec, kernel: int = 3, strides: int = 1):
    init = initializer(spec.init, seed)
    return layers.Conv2D(
        channels, kernel, strides=strides, padding="same", use_bias=False, kernel_initializer=init, name=name
    )(x)


def _block(x, channels: int, strides: int, prefix: str, rspec: ResNetSpec, spec: LayerSpec, seed: int):
    """One residual block; a 1x1 projection on the shortcut when the shape changes."""
    reshaped = strides != 1 or x.shape[-1] != channels
    if rspec.placement == "post":
        y = _conv(x, channels, f"{prefix}_conv1", seed, spec, strides=strides)
        y = layers.BatchNormalization(name=f"{prefix}_bn1")(y)
        y = _activation(y, f"{prefix}_relu1", spec)
        y = _conv(y, channels, f"{prefix}_conv2", seed + 1, spec)
        y = layers.BatchNormalization(name=f"{prefix}_bn2")(y)
        shortcut = x
        if reshaped:
            shortcut = _conv(x, channels, f"{prefix}_project", seed + 2, spec, kernel=1, strides=strides)
            shortcut = layers.BatchNormalization(name=f"{prefix}_project_bn")(shortcut)
        return _activation(layers.Add(name=f"{prefix}_add")([y, shortcut]), f"{prefix}_out", spec)
    y = layers.BatchNormalization(name=f"{prefix}_bn1")(x)
    y = _activation(y, f"{prefix}_relu1", spec)
    # the projection takes the pre-activated input, as in He et al. 2016b
    shortcut = _conv(y, channels, f"{prefix}_project", seed + 2, spec, kernel=1, strides=strides) if reshaped else x
    y = _conv(y, channels, f"{prefix}_conv1", seed, spec, strides=strides)
    y = layers.BatchNormalization(name=f"{prefix}_bn2")(y)
    y = _activation(y, f"{prefix}_relu2", spec)
    y = _conv(y, channels, f"{prefix}_conv2", seed + 1, spec)
    return layers.Add(name=f"{prefix}_add")([y, shortcut])


def build_resnet(rspec: ResNetSpec | None = None, spec: LayerSpec | None = None, seed: int = 0) -> keras.Model:
    """The residual CNN of ``rspec`` with every activation made by ``spec``, on 28x28 digits."""
    rspec = rspec or ResNetSpec()
    spec = spec or LayerSpec()
    inputs, x = _image_input()
    x = _conv(x, rspec.channels(0), "stem_conv", seed, spec)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = _activation(x, "stem", spec)
    for stage in range(len(rspec.stages)):
        for block in range(rspec.depth):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _block(
                x, rspec.channels(stage), strides, f"s{stage}b{block}", rspec, spec, seed + 10 * (stage + 1) + block
            )
    if rspec.placement == "pre":
        x = layers.BatchNormalization(name="final_bn")(x)
        x = _activation(x, "final_relu", spec)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    name = f"mnist_resnet_{rspec.placement}_d{rspec.depth}_w{rspec.width:g}"
    return keras.Model(inputs, _classifier(x, seed + 99), name=name)
