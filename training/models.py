"""Model architectures. Every ReLU-family layer takes its kernel initialiser (Glorot-uniform/Xavier
by default), its activation design (plain ReLU by default) and an optional L1 activity regulariser
from one :class:`LayerSpec`."""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from sparsity.contract import DEFAULT_DENSITY, DEFAULT_THRESHOLD
from sparsity.layers import ActivityPenalty, KWinners, ThresholdedReLU
from training.choices import ARCHS, DESIGNS, INITS
from training.datasets import MNIST_CLASS_NAMES, MNIST_SHAPE

CNN_LAYERS = ("conv1", "conv2", "dense")
"""The ReLU-family layers of the CNN (and conv1 of the seed CNN), in graph order."""
CNN_WIDTHS = (32, 64, 128)
"""Units of conv1, conv2 and dense in the full CNN; pruning builds the same graph narrower."""
NORMAL_INIT_STDDEV = 0.01


@dataclass(frozen=True)
class LayerSpec:
    """How every ReLU-family layer of a model is made."""

    activity_l1: float = 0.0
    init: str = "glorot"
    design: str = "relu"
    threshold: float = DEFAULT_THRESHOLD  # fatrelu: zero below this
    kwta_density: float = DEFAULT_DENSITY  # kwta: share of each layer's activations kept per sample
    hoyer: float = 0.0
    """Hoyer-square activity penalty on every ReLU-family layer (scale-invariant; see ActivityPenalty)."""
    ramp: float = 0.0
    """Share of training over which the penalties rise from 0 to full strength; 0 = constant from the start."""
    max_norm: float = 0.0
    """If > 0, every kernel that reads a ReLU-family output has each unit's incoming weights' norm capped here:
    the network can no longer shrink a layer's activations and grow the next layer's weights to pay less L1."""
    kwta_layers: tuple[str, ...] = ()
    """Layers that are k-WTA whatever ``design`` says: k-WTA on the layers that fall short only."""
    thresholds: tuple[tuple[str, float], ...] = ()
    """Per-layer FATReLU thresholds ``((layer, threshold), ...)``; a layer named here is a FATReLU."""
    control: float = 0.0
    """If > 0, the zero share a per-layer controller (training.controller) raises each layer's penalty toward."""

    def design_of(self, layer: str) -> str:
        """The activation design of one layer: ``kwta-dense`` is ReLU everywhere but ``dense``; a layer in
        ``thresholds`` is a FATReLU and one in ``kwta_layers`` a k-WTA, whatever ``design`` says."""
        if layer in dict(self.thresholds):
            return "fatrelu"
        if layer in self.kwta_layers:
            return "kwta"
        if self.design == "kwta-dense":
            return "kwta" if layer == "dense" else "relu"
        return self.design

    def threshold_of(self, layer: str) -> float:
        return dict(self.thresholds).get(layer, self.threshold)

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.design not in DESIGNS:
            raise ValueError(f"design must be one of {', '.join(DESIGNS)}, got {self.design!r}")
        if not 0.0 <= self.ramp <= 1.0:
            raise ValueError(f"ramp must be a share of training in [0, 1], got {self.ramp}")
        if self.max_norm < 0 or self.hoyer < 0:
            raise ValueError("max_norm and hoyer must be >= 0")
        if not 0.0 <= self.control < 1.0:
            raise ValueError(f"control must be a zero share in [0, 1), got {self.control}")
        if any(t < 0 for _, t in self.thresholds):
            raise ValueError(f"every threshold must be >= 0, got {dict(self.thresholds)}")


def initializer(name: str, seed: int) -> keras.initializers.Initializer:
    if name == "glorot":
        return keras.initializers.GlorotUniform(seed=seed)
    if name == "he":
        return keras.initializers.HeNormal(seed=seed)
    if name == "normal":
        return keras.initializers.RandomNormal(stddev=NORMAL_INIT_STDDEV, seed=seed)
    raise ValueError(f"init must be one of {', '.join(INITS)}, got {name!r}")


def _regularizer(spec: LayerSpec):
    """The activity penalty of every ReLU-family layer: Keras' own L1 for a constant L1 alone (what models
    saved before the Hoyer term have), else an ActivityPenalty."""
    if spec.hoyer > 0 or spec.control > 0 or (spec.ramp > 0 and spec.activity_l1 > 0):
        return ActivityPenalty(spec.activity_l1, spec.hoyer, ramped=spec.ramp > 0)
    return keras.regularizers.L1(spec.activity_l1) if spec.activity_l1 > 0 else None


def kernel_constraint(spec: LayerSpec, axis) -> keras.constraints.Constraint | None:
    """The cap on each unit's incoming weights of a layer that reads a ReLU-family output (``spec.max_norm``)."""
    return keras.constraints.MaxNorm(spec.max_norm, axis=axis) if spec.max_norm > 0 else None


CONV_AXES = [0, 1, 2]
"""A Conv2D kernel's axes that one output channel's incoming weights span."""


def _sparse_block(make, x: keras.KerasTensor, name: str, spec: LayerSpec, seed: int, **weights) -> keras.KerasTensor:
    """A weight layer plus its activation, the activation's output named ``name``.

    Plain ReLU keeps the activation inside the weight layer (``name`` is the Conv2D/Dense); the
    other designs put the weights in ``name + "_pre"`` and the activation layer under ``name``.
    """
    init = initializer(spec.init, seed)
    design = spec.design_of(name)
    if design == "relu":
        return make(
            name=name, activation="relu", kernel_initializer=init, activity_regularizer=_regularizer(spec), **weights
        )(x)
    x = make(name=f"{name}_pre", kernel_initializer=init, **weights)(x)
    if design == "fatrelu":
        return ThresholdedReLU(spec.threshold_of(name), name=name, activity_regularizer=_regularizer(spec))(x)
    return KWinners(spec.kwta_density, name=name, activity_regularizer=_regularizer(spec))(x)


def _image_input() -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The 28x28 input (the data contract) and its one-channel view for Conv2D."""
    inputs = keras.Input(shape=MNIST_SHAPE, name="image")
    return inputs, layers.Reshape((*MNIST_SHAPE, 1), name="channel")(inputs)


def _classifier(x: keras.KerasTensor, seed: int, constraint=None) -> keras.KerasTensor:
    """The softmax output over the ten digits, Glorot-uniform initialised."""
    return layers.Dense(
        len(MNIST_CLASS_NAMES),
        activation="softmax",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        kernel_constraint=constraint,
        name="probabilities",
    )(x)


def build_seed_cnn(spec: LayerSpec | None = None, seed: int = 0) -> keras.Model:
    """The original example: Conv2D(32, 3x3, ReLU) -> Flatten -> Dense(10, softmax)."""
    spec = spec or LayerSpec()
    inputs, x = _image_input()
    x = _sparse_block(lambda **kw: layers.Conv2D(32, 3, **kw), x, "conv1", spec, seed)
    x = layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, _classifier(x, seed + 1), name="mnist_seed_cnn")


def build_cnn(spec: LayerSpec | None = None, seed: int = 0, widths: tuple[int, int, int] = CNN_WIDTHS) -> keras.Model:
    """Two conv blocks with max-pooling, a ReLU-family dense layer and dropout."""
    spec = spec or LayerSpec()
    c1, c2, d = widths
    inputs, x = _image_input()
    # Augmentation is active only while training; inference sees the image unchanged.
    x = layers.RandomRotation(0.03, fill_mode="constant", seed=seed, name="augment_rotate")(x)
    x = layers.RandomTranslation(0.08, 0.08, fill_mode="constant", seed=seed, name="augment_shift")(x)
    x = _sparse_block(lambda **kw: layers.Conv2D(c1, 3, padding="same", **kw), x, "conv1", spec, seed)
    x = layers.MaxPooling2D(name="pool1")(x)
    capped = kernel_constraint(spec, CONV_AXES)
    x = _sparse_block(
        lambda **kw: layers.Conv2D(c2, 3, padding="same", **kw), x, "conv2", spec, seed + 1, kernel_constraint=capped
    )
    x = layers.MaxPooling2D(name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(0.3, seed=seed, name="dropout1")(x)
    capped = kernel_constraint(spec, 0)
    x = _sparse_block(lambda **kw: layers.Dense(d, **kw), x, "dense", spec, seed + 2, kernel_constraint=capped)
    x = layers.Dropout(0.3, seed=seed + 1, name="dropout2")(x)
    return keras.Model(inputs, _classifier(x, seed + 3, capped), name="mnist_cnn")


def build(arch: str, spec: LayerSpec | None = None, seed: int = 0) -> keras.Model:
    if arch == "cnn":
        return build_cnn(spec, seed)
    if arch == "seed":
        return build_seed_cnn(spec, seed)
    raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
