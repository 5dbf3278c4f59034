"""The core's ReLU-family layers: exact zeros on hand-made inputs, found by the probe, saved and loaded."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from sparsity import KWinners, SparsityProbe, ThresholdedReLU, find_relu_layers


def _wrap(activation: keras.layers.Layer, features: int = 6) -> keras.Model:
    """Input(F) -> activation (named 'act') -> Dense(2, softmax): the probe sees the activation's output."""
    inputs = keras.Input(shape=(features,))
    hidden = activation(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="out")(hidden))


def test_thresholded_relu_zeroes_everything_at_or_below_the_threshold():
    x = np.array([[-1.0, 0.0, 0.1, 0.25, 0.2500001, 3.0]], dtype=np.float32)
    layer = ThresholdedReLU(0.25, name="act")
    np.testing.assert_array_equal(np.asarray(layer(x)), [[0.0, 0.0, 0.0, 0.0, np.float32(0.2500001), 3.0]])
    result = SparsityProbe(_wrap(layer)).run(x)
    assert result.layer_sparsity["act"].tolist() == [4 / 6]
    assert result.fired["act"].tolist() == [[False, False, False, False, True, True]]


def test_thresholded_relu_at_zero_is_a_plain_relu():
    x = np.random.default_rng(1).normal(size=(8, 6)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(ThresholdedReLU(0.0)(x)), np.maximum(x, 0))


def test_kwinners_keeps_the_k_largest_positive_values_per_sample():
    x = np.array(
        [
            [5.0, -1.0, 3.0, 0.5, 4.0, 1.0],  # k = 3 of 6: 5, 4, 3 stay
            [-3.0, -2.0, 0.7, -1.0, -4.0, -5.0],  # only one positive value: the others are zeros, not winners
        ],
        dtype=np.float32,
    )
    layer = KWinners(0.5, name="act")
    out = np.asarray(layer(x))
    np.testing.assert_array_equal(out, np.array([[5.0, 0, 3.0, 0, 4.0, 0], [0, 0, 0.7, 0, 0, 0]], dtype=np.float32))
    result = SparsityProbe(_wrap(layer)).run(x)
    assert result.layer_sparsity["act"].tolist() == [0.5, 5 / 6]


def test_kwinners_on_a_conv_map_counts_over_positions_and_channels_together():
    x = np.arange(1, 2 * 2 * 3 + 1, dtype=np.float32).reshape(1, 2, 2, 3)  # 12 positive values
    out = np.asarray(KWinners(0.25)(x))  # k = 3: 12, 11, 10 stay
    assert np.count_nonzero(out) == 3
    assert sorted(out[out > 0].tolist()) == [10.0, 11.0, 12.0]


@pytest.mark.parametrize(("density", "size", "k"), [(0.1, 25088, 2509), (0.1, 128, 13), (1.0, 7, 7), (1e-9, 50, 1)])
def test_kwinners_k_is_the_ceiling_of_density_times_size(density, size, k):
    assert KWinners(density).k_for(size) == k


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ThresholdedReLU(-0.1), "threshold"),
        (lambda: KWinners(0.0), "density"),
        (lambda: KWinners(1.5), "density"),
    ],
)
def test_bad_parameters_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_probe_finds_the_custom_layers_and_thresholded_keras_relu():
    inputs = keras.Input(shape=(4,))
    a = keras.layers.Dense(4, name="pre")(inputs)
    b = ThresholdedReLU(0.1, name="fat")(a)
    c = KWinners(0.5, name="kwta")(b)
    d = keras.layers.ReLU(threshold=0.2, name="keras_thresholded")(c)
    e = keras.layers.ReLU(negative_slope=0.1, name="leaky_relu_layer")(d)
    out = keras.layers.Dense(2, activation="softmax", name="out")(e)
    layers = find_relu_layers(keras.Model(inputs, out))
    assert [(l.name, l.units, l.size) for l in layers] == [
        ("fat", 4, 4),
        ("kwta", 4, 4),
        ("keras_thresholded", 4, 4),
    ]


@pytest.mark.parametrize("layer", [ThresholdedReLU(0.3, name="act"), KWinners(0.5, name="act")])
def test_save_and_load_round_trip_in_safe_mode(tmp_path, layer):
    model = _wrap(layer)
    x = np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False, safe_mode=True)
    assert type(loaded.get_layer("act")) is type(layer)
    assert loaded.get_layer("act").get_config() == layer.get_config()
    a, b = SparsityProbe(model).run(x), SparsityProbe(loaded).run(x)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    np.testing.assert_array_equal(a.layer_sparsity["act"], b.layer_sparsity["act"])
