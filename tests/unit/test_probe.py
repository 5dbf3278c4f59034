"""The sparsity core against hand-computed arrays."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from sparsity import InvalidInputError, SparsityProbe, find_relu_layers, weight_sparsity
from tests.helpers import conv_dense_model, dense_model


@pytest.fixture(scope="module")
def probe() -> SparsityProbe:
    return SparsityProbe(conv_dense_model())


def test_finds_relu_layers_with_units_and_sizes(probe):
    assert [(l.name, l.units, l.size) for l in probe.layers] == [("conv", 2, 32), ("dense", 4, 4)]


def test_finds_every_kind_of_relu_and_nothing_else():
    inputs = keras.Input(shape=(3,))
    a = keras.layers.Dense(4, activation="relu", name="dense_relu")(inputs)
    b = keras.layers.Dense(4, name="linear")(a)
    c = keras.layers.ReLU(name="relu_layer")(b)
    d = keras.layers.Activation("relu", name="activation_relu")(c)
    e = keras.layers.LeakyReLU(negative_slope=0.1, name="leaky")(d)
    f = keras.layers.ReLU(max_value=6.0, name="relu6")(e)
    g = keras.layers.Dense(2, activation="softmax", name="softmax")(f)
    names = [l.name for l in find_relu_layers(keras.Model(inputs, g))]
    assert names == ["dense_relu", "relu_layer", "activation_relu", "relu6"]  # a capped ReLU keeps exact zeros


def test_all_zero_input_gives_all_zero_conv(probe):
    r = probe.run(np.zeros((1, 4, 4), dtype=np.float32))
    assert r.layer_sparsity["conv"][0] == 1.0
    assert r.layer_sparsity["dense"][0] == 0.75  # only the bias-1 unit fires
    assert r.overall[0] == pytest.approx((32 + 3) / 36, abs=1e-12)


def test_positive_input_half_zero(probe):
    r = probe.run(np.full((1, 4, 4), 0.5, dtype=np.float32))
    assert r.layer_sparsity["conv"][0] == 0.5
    assert r.layer_sparsity["dense"][0] == 0.5
    assert r.fired["conv"][0].tolist() == [True, False]
    assert r.fired["dense"][0].tolist() == [True, False, True, False]


def test_no_zeros_in_a_dense_layer():
    model = dense_model(np.eye(3))
    r = SparsityProbe(model).run(np.array([[1.0, 2.0, 3.0]], dtype=np.float32))
    assert r.layer_sparsity["hidden"][0] == 0.0
    assert r.fired["hidden"][0].all()


def test_mixed_dense_layer():
    model = dense_model(np.eye(4))
    r = SparsityProbe(model).run(np.array([[1.0, -1.0, 0.0, 2.0]], dtype=np.float32))
    assert r.layer_sparsity["hidden"][0] == 0.5
    assert r.fired["hidden"][0].tolist() == [True, False, False, True]


def test_batch_samples_are_counted_separately_and_overall_is_size_weighted(probe):
    x = np.zeros((3, 4, 4), dtype=np.float32)
    x[1] = 0.5
    x[2].flat[:6] = 1.0  # 6 positive
    x[2].flat[6:12] = -1.0  # 6 negative, 4 zeros
    r = probe.run(x)
    assert r.layer_sparsity["conv"].tolist() == [1.0, 0.5, 20 / 32]
    assert r.layer_sparsity["dense"].tolist() == [0.75, 0.5, 0.5]
    expected_overall = [(32 + 3) / 36, (16 + 2) / 36, (20 + 2) / 36]
    np.testing.assert_allclose(r.overall, expected_overall, atol=1e-12)
    # a mean of the two layer ratios would be different: the overall figure weights by size
    assert r.overall[0] != pytest.approx((1.0 + 0.75) / 2)
    assert r.fired["conv"].tolist() == [[False, False], [True, False], [True, True]]
    assert r.labels.shape == (3,)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.full((1, 4, 4), np.nan), "finite"),
        (np.full((1, 4, 4), np.inf), "finite"),
        (np.zeros((1, 4, 5)), "shape"),
        (np.zeros((4, 4)), "shape"),
        (np.zeros((0, 4, 4)), "at least one"),
        (np.array([[["a"] * 4] * 4]), "numbers"),
    ],
)
def test_bad_input_is_refused(probe, x, message):
    with pytest.raises(InvalidInputError, match=message):
        probe.run(x)


def test_value_range_is_enforced_and_names_the_element():
    probe = SparsityProbe(conv_dense_model(), value_range=(0.0, 1.0), field="images")
    x = np.zeros((2, 4, 4))
    x[1, 2, 3] = 1.5
    with pytest.raises(InvalidInputError) as info:
        probe.run(x)
    assert info.value.field == "images[1][2][3]"
    assert "[0.0, 1.0]" in info.value.rule


def test_model_without_relu_is_refused():
    inputs = keras.Input(shape=(3,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    with pytest.raises(ValueError, match="no ReLU-family layer to probe"):
        SparsityProbe(model)


def test_weight_sparsity_counts_exact_zeros():
    kernel = np.array([[1.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    model = dense_model(kernel, bias=np.array([0.0, 3.0]))
    # hidden: 8 weights (6 kernel + 2 bias), zeros = 4 + 1
    assert weight_sparsity(model)["hidden"] == pytest.approx(5 / 8)


def test_run_batched_matches_run(probe):
    x = np.random.default_rng(0).normal(size=(10, 4, 4)).astype(np.float32)
    whole, chunked = probe.run(x), probe.run_batched(x, batch_size=3)
    np.testing.assert_array_equal(whole.overall, chunked.overall)
    np.testing.assert_array_equal(whole.fired["conv"], chunked.fired["conv"])
    # a batch of 3 and one of 10 may take different oneDNN kernels: probabilities agree to float32
    # rounding (1 ulp was seen), not bit for bit
    np.testing.assert_allclose(whole.probabilities, chunked.probabilities, rtol=1e-6, atol=1e-7)


def test_unit_shares_and_the_in_graph_score_are_what_numpy_computes_from_the_layer_outputs(probe):
    from sparsity.detectors import UnitFiring
    from sparsity.probe import UnsupportedModelError

    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 4, 4)).astype(np.float32)
    model = probe.model
    outs = keras.Model(model.inputs, [model.get_layer("conv").output, model.get_layer("dense").output])([x])
    # each unit's share of positions with an output > 0, layer after layer (conv: 16 positions, dense: 1)
    expected = np.concatenate([(np.asarray(o).reshape(len(x), -1, o.shape[-1]) > 0).mean(axis=1) for o in outs], 1)
    result = probe.run(x)
    np.testing.assert_array_equal(result.shares, expected.astype(np.float32))
    assert result.scores is None  # no scorer, no score
    detector = UnitFiring.fit(result.shares[:30], probe.units, result.labels[:30])
    scored = SparsityProbe(model, scorer=detector).run(x)
    np.testing.assert_allclose(scored.scores, detector.scores(result.shares), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(scored.shares, result.shares)
    with pytest.raises(UnsupportedModelError, match="units \\[2\\] are not the model's \\[2, 4\\]"):
        SparsityProbe(model, scorer=UnitFiring.fit(result.shares[:30, :2], [2], result.labels[:30]))
