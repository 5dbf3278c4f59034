"""The benchmark's ONNX twin of a Keras CNN computes what Keras computes, so that the speed comparison is
between two runtimes on one network."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from benchmarks.keras_onnx import NotConvertible, convert
from sparsity.onnx_probe import OnnxProbe, session


def _cnn(padding: str = "same") -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12), name="image")
    x = keras.layers.Reshape((12, 12, 1))(inputs)
    x = keras.layers.RandomRotation(0.1)(x)
    x = keras.layers.Conv2D(3, 3, padding=padding, activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(4, 3, padding=padding, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Dense(6, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_the_twin_gives_keras_probabilities_and_the_same_relu_counts(padding):
    model = _cnn(padding)
    x = np.random.default_rng(1).random((8, 12, 12), dtype=np.float32)
    twin = convert(model)
    np.testing.assert_allclose(session(twin).run(None, {"input": x})[0], model(x, training=False), atol=1e-5)
    probe = OnnxProbe(twin)
    assert [layer.units for layer in probe.layers] == [3, 4, 6]


def test_a_layer_it_does_not_cover_is_named():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="tanh")(keras.layers.BatchNormalization()(inputs)))
    with pytest.raises(NotConvertible, match="BatchNormalization"):
        convert(model)
