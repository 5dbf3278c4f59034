"""Every ReLU-family output of a Keras graph, wherever it is: nested blocks, shared layers, fused and
capped activations; the probe's counts there against an independent count of each layer's output."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from sparsity.graph import call_names, survey
from sparsity.layers import KWinners, ThresholdedReLU
from sparsity.probe import SparsityProbe, UnsupportedModelError


def nested_shared_model() -> tuple[keras.Model, dict]:
    """Input(6) -> Sequential block [Dense relu, ReLU(max 1)] -> Dense -> shared Dense(relu6) called twice
    (once after a GELU) -> Add -> Dense logits. Returns the model and its layers, for a hand count."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    block = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation="relu", name="d1"), keras.layers.ReLU(1.0, name="cap")],
        name="block",
    )
    linear = keras.layers.Dense(6, name="lin")
    gelu = keras.layers.Activation("gelu", name="g")
    shared = keras.layers.Dense(6, activation="relu6", name="shared")
    out = keras.layers.Dense(3, name="logits")
    x = linear(block(inputs))
    y = keras.layers.Add()([shared(x), shared(gelu(x))])
    model = keras.Model(inputs, out(y))
    return model, {"block": block, "lin": linear, "g": gelu, "shared": shared, "out": out}


def test_survey_names_nested_shared_fused_and_capped_calls_and_lists_what_it_cannot_probe():
    model, _ = nested_shared_model()
    found = survey(model, np.zeros((1, 6), dtype=np.float32))
    assert [(layer.name, layer.units, layer.size) for layer in found.relu_layers] == [
        ("block/d1", 8, 8),
        ("block/cap", 8, 8),
        ("shared@1", 6, 6),
        ("shared@2", 6, 6),
    ]
    assert [(layer.name, layer.activation) for layer in found.not_probed] == [("g", "gelu")]
    assert found.output_activation == "linear" and found.output_shape == (3,)


def test_probe_counts_each_call_as_an_independent_recomputation_does():
    model, layers = nested_shared_model()
    x = np.random.default_rng(1).normal(size=(64, 6)).astype(np.float32)
    result = SparsityProbe(model).run(x)
    d1 = layers["block"].get_layer("d1")(x)
    cap = layers["block"].get_layer("cap")(d1)
    h = layers["lin"](cap)
    first, second = layers["shared"](h), layers["shared"](layers["g"](h))
    expected = {"block/d1": d1, "block/cap": cap, "shared@1": first, "shared@2": second}
    for name, out in expected.items():
        np.testing.assert_array_equal(result.layer_sparsity[name], np.mean(np.asarray(out) == 0, axis=1))
        np.testing.assert_array_equal(result.fired[name], np.asarray(out) > 0)
    logits = np.asarray(layers["out"](first + second))
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(result.probabilities, softmax / softmax.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_nested_functional_blocks_and_the_cores_layers_are_found():
    inner_in = keras.Input((4, 4, 1))
    inner = keras.Model(inner_in, keras.layers.Conv2D(3, 1, activation="relu", name="conv")(inner_in), name="stem")
    inputs = keras.Input((4, 4, 1))
    x = keras.layers.Flatten()(inner(inputs))
    x = ThresholdedReLU(0.1, name="fat")(keras.layers.Dense(5, name="pre1")(x))
    x = KWinners(0.5, name="kwta")(keras.layers.Dense(4, name="pre2")(x))
    x = keras.layers.LeakyReLU(0.1, name="leaky")(x)
    x = keras.layers.Dense(4, activation="swish", name="sw")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="p")(x))
    found = survey(model, np.zeros((1, 4, 4, 1), dtype=np.float32))
    assert [(l.name, l.units, l.size) for l in found.relu_layers] == [
        ("stem/conv", 3, 48),
        ("fat", 5, 5),
        ("kwta", 4, 4),
    ]
    assert [(l.name, l.activation) for l in found.not_probed] == [("leaky", "leaky_relu"), ("sw", "silu")]
    assert SparsityProbe(model).output == "probabilities"


def test_call_names_number_only_repeated_paths():
    assert call_names(["a", "b", "a", "c", "a"]) == ["a@1", "b", "a@2", "c", "a@3"]


def test_models_the_probe_cannot_walk_are_refused_with_a_reason():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2, activation="relu")

        def call(self, x):
            return self.dense(x)

    sub = Subclassed()
    sub(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(UnsupportedModelError, match=r"inputs|subclassed"):
        SparsityProbe(sub)
    a, b = keras.Input((2,)), keras.Input((2,))
    two = keras.Model([a, b], keras.layers.Dense(2, activation="softmax")(keras.layers.Concatenate()([a, b])))
    with pytest.raises(UnsupportedModelError, match="has 2 inputs"):
        SparsityProbe(two)
    single = keras.Input((3,))
    hidden = keras.layers.Dense(4, activation="relu")(single)
    with pytest.raises(UnsupportedModelError, match=r"outputs shape \(1,\)"):
        SparsityProbe(keras.Model(single, keras.layers.Dense(1, activation="sigmoid")(hidden)))
