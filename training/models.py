"""Model architectures. Every ReLU layer uses Glorot-uniform (Xavier) initialisation and may carry
an L1 activity regulariser."""

from __future__ import annotations

import keras
from keras import layers

from sparsity.contract import MNIST_CLASS_NAMES, MNIST_SHAPE
from training.choices import ARCHS


def _relu_kwargs(activity_l1: float, seed: int) -> dict:
    return {
        "activation": "relu",
        "kernel_initializer": keras.initializers.GlorotUniform(seed=seed),
        "activity_regularizer": keras.regularizers.L1(activity_l1) if activity_l1 > 0 else None,
    }


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


def build_seed_cnn(activity_l1: float = 0.0, seed: int = 0) -> keras.Model:
    """The original example: Conv2D(32, 3x3, ReLU) -> Flatten -> Dense(10, softmax)."""
    inputs, x = _image_input()
    x = layers.Conv2D(32, 3, name="conv1", **_relu_kwargs(activity_l1, seed))(x)
    x = layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, _classifier(x, seed + 1), name="mnist_seed_cnn")


def build_cnn(activity_l1: float = 0.0, seed: int = 0) -> keras.Model:
    """Two conv blocks with max-pooling, a ReLU dense layer and dropout."""
    inputs, x = _image_input()
    # Augmentation is active only while training; inference sees the image unchanged.
    x = layers.RandomRotation(0.03, fill_mode="constant", seed=seed, name="augment_rotate")(x)
    x = layers.RandomTranslation(0.08, 0.08, fill_mode="constant", seed=seed, name="augment_shift")(x)
    x = layers.Conv2D(32, 3, padding="same", name="conv1", **_relu_kwargs(activity_l1, seed))(x)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(64, 3, padding="same", name="conv2", **_relu_kwargs(activity_l1, seed + 1))(x)
    x = layers.MaxPooling2D(name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(0.3, seed=seed, name="dropout1")(x)
    x = layers.Dense(128, name="dense", **_relu_kwargs(activity_l1, seed + 2))(x)
    x = layers.Dropout(0.3, seed=seed + 1, name="dropout2")(x)
    return keras.Model(inputs, _classifier(x, seed + 3), name="mnist_cnn")


def build(arch: str, activity_l1: float = 0.0, seed: int = 0) -> keras.Model:
    if arch == "cnn":
        return build_cnn(activity_l1, seed)
    if arch == "seed":
        return build_seed_cnn(activity_l1, seed)
    raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
