"""Pruning: units that never fired go, units that fired stay, outputs on those inputs do not change."""

from __future__ import annotations

import numpy as np
import pytest

from sparsity import SparsityProbe
from training.models import LayerSpec, build_cnn
from training.prune import count_params, firing_shares, keep_plan, prune_cnn, weight_layer

WIDTHS = (6, 8, 10)
DEAD = {"conv1": [1, 4], "conv2": [0, 5], "dense": [2, 3, 9]}


def _with_dead_units(spec: LayerSpec) -> object:
    """A small CNN whose DEAD units can never fire on inputs >= 0 (negative weights, negative bias)."""
    model = build_cnn(spec, seed=3, widths=WIDTHS)
    for name, units in DEAD.items():
        layer = weight_layer(model, name)
        kernel, bias = (np.asarray(w).copy() for w in layer.get_weights())
        kernel[..., units] = -np.abs(kernel[..., units])
        bias[units] = -1.0
        layer.set_weights([kernel, bias])
    return model


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).random((64, 28, 28), dtype=np.float32)


def test_keep_plan_on_hand_made_shares():
    shares = {"a": np.array([0.0, 0.001, 0.5, 0.0]), "b": np.array([0.0, 0.0])}
    plan = keep_plan(shares, 0.0)
    assert plan["a"].tolist() == [1, 2]  # a unit that fired once is kept at max-firing 0
    assert plan["b"].tolist() == [0]  # an all-dead layer keeps one unit: the model stays a model
    assert keep_plan(shares, 0.01)["a"].tolist() == [2]


@pytest.mark.parametrize(
    "spec",
    [
        LayerSpec(),
        LayerSpec(design="fatrelu", threshold=0.05),
        LayerSpec(design="kwta", kwta_density=0.3),
        LayerSpec(design="kwta-dense", kwta_density=0.3),
    ],
    ids=["relu", "fatrelu", "kwta", "kwta-dense"],
)
def test_dead_units_are_removed_and_outputs_do_not_change(spec, images):
    model = _with_dead_units(spec)
    shares = firing_shares(model, images)
    plan = keep_plan(shares, 0.0)
    for name, units in DEAD.items():
        assert not set(units) & set(plan[name].tolist()), f"{name}: a dead unit was kept"
        assert set(np.flatnonzero(shares[name] > 0)) == set(plan[name].tolist()), f"{name}: a unit that fired went"
    pruned = prune_cnn(model, plan, spec, seed=3)
    assert [weight_layer(pruned, n).get_weights()[1].shape[0] for n in DEAD] == [len(plan[n]) for n in DEAD]
    assert count_params(pruned) < count_params(model)
    before, after = SparsityProbe(model).run(images), SparsityProbe(pruned).run(images)
    np.testing.assert_allclose(after.probabilities, before.probabilities, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(after.labels, before.labels)
    for name in DEAD:  # the same units fired: pruning removed only silent ones
        np.testing.assert_array_equal(after.fired[name], before.fired[name][:, plan[name]])


def test_pruned_model_saves_and_loads(tmp_path, images):
    import keras

    spec = LayerSpec(design="kwta", kwta_density=0.3)
    model = _with_dead_units(spec)
    pruned = prune_cnn(model, keep_plan(firing_shares(model, images), 0.0), spec, seed=3)
    pruned.save(tmp_path / "p.keras")
    loaded = keras.models.load_model(tmp_path / "p.keras", compile=False, safe_mode=True)
    np.testing.assert_array_equal(
        np.asarray(loaded(images, training=False)), np.asarray(pruned(images, training=False))
    )


def test_only_the_cnn_architecture_is_pruned(images):
    from training.models import build_seed_cnn

    model = build_seed_cnn(LayerSpec())
    with pytest.raises(ValueError, match="'cnn' architecture"):
        prune_cnn(model, keep_plan(firing_shares(model, images), 0.0), LayerSpec())


def test_activation_shares_count_positions_and_samples():
    from tests.helpers import conv_dense_model
    from training.prune import activation_shares

    x = np.zeros((2, 4, 4), dtype=np.float32)
    x[0] = 0.5  # channel +x on at all 16 positions, channel -x at none
    x[1].flat[:6] = 1.0  # +x on at 6 positions
    x[1].flat[6:12] = -1.0  # -x on at 6 positions
    shares = activation_shares(conv_dense_model(), x)
    np.testing.assert_allclose(shares["conv"], [(16 + 6) / 32, 6 / 32])
    np.testing.assert_allclose(shares["dense"], [1.0, 0.0, 1.0, 0.0])
    # by samples, the -x channel fired on one image of two: a coarser view of the same unit
    np.testing.assert_allclose(SparsityProbe(conv_dense_model()).run(x).fired["conv"].mean(axis=0), [1.0, 0.5])
