"""Model architectures. Every ReLU-family layer takes its kernel initialiser (Glorot-uniform/Xavier
by default), its activation design (plain ReLU by default) and an optional L1 activity regulariser
from one :class:`LayerSpec`."""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from sparsity.contract import DEFAULT_DENSITY, DEFAULT_THRESHOLD
from sparsity.layers import KWinners, ThresholdedReLU
from training.choices import ARCHS, DESIGNS, INITS
from training.datasets import MNIST_CLASS_NAMES, MNIST_SHAPE

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

    def design_of(self, layer: str) -> str:
        """The activation design of one layer: ``kwta-dense`` is ReLU everywhere but ``dense``."""
        if self.design == "kwta-dense":
            return "kwta" if layer == "dense" else "relu"
        return self.design

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.design not in DESIGNS:
            raise ValueError(f"design must be one of {', '.join(DESIGNS)}, got {self.design!r}")


def initializer(name: str, seed: int) -> keras.initializers.Initializer:
    if name == "glorot":
        return keras.initializers.GlorotUniform(seed=seed)
    if name == "he":
        return keras.initializers.HeNormal(seed=seed)
    if name == "normal":
        return keras.initializers.RandomNormal(stddev=NORMAL_INIT_STDDEV, seed=seed)
    raise ValueError(f"init must be one of {', '.join(INITS)}, got {name!r}")


def _regularizer(spec: LayerSpec):
    return keras.regularizers.L1(spec.activity_l1) if spec.activity_l1 > 0 else None


def _sparse_block(make, x: keras.KerasTensor, name: str, spec: LayerSpec, seed: int) -> keras.KerasTensor:
    """A weight layer plus its activation, the activation's output named ``name``.

    Plain ReLU keeps the activation inside the weight layer (``name`` is the Conv2D/Dense); the
    other designs put the weights in ``name + "_pre"`` and the activation layer under ``name``.
    """
    init = initializer(spec.init, seed)
    design = spec.design_of(name)
    if design == "relu":
        return make(name=name, activation="relu", kernel_initializer=init, activity_regularizer=_regularizer(spec))(x)
    x = make(name=f"{name}_pre", kernel_initializer=init)(x)
    if design == "fatrelu":
        return ThresholdedReLU(spec.threshold, name=name, activity_regularizer=_regularizer(spec))(x)
    return KWinners(spec.kwta_density, name=name, activity_regularizer=_regularizer(spec))(x)


def _image_input() -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The 28x28 input (the data contract) and its one-channel view for Conv2D."""
    inputs = keras.Input(shape=MNIST_SHAPE, name="image")
    return inputs, layers.Reshape((*MNIST_SHAPE, 1), name="channel")(inputs)


def _classifier(x: keras.KerasTensor, seed: int) -> keras.KerasTensor:
    """The softmax output over the ten digits, Glorot-uniform initialised."""
    return layers.Dense(
        len(MNIST_CLASS_NAMES),
        activation="softmax",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
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
    x = _sparse_block(lambda **kw: layers.Conv2D(c2, 3, padding="same", **kw), x, "conv2", spec, seed + 1)
    x = layers.MaxPooling2D(name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(0.3, seed=seed, name="dropout1")(x)
    x = _sparse_block(lambda **kw: layers.Dense(d, **kw), x, "dense", spec, seed + 2)
    x = layers.Dropout(0.3, seed=seed + 1, name="dropout2")(x)
    return keras.Model(inputs, _classifier(x, seed + 3), name="mnist_cnn")


def build(arch: str, spec: LayerSpec | None = None, seed: int = 0) -> keras.Model:
    if arch == "cnn":
        return build_cnn(spec, seed)
    if arch == "seed":
        return build_seed_cnn(spec, seed)
    raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
