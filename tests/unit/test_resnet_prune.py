"""Tied-channel pruning of the residual CNN (issue 19): the groups an ``Add`` ties, exactness where the pruned
channels never fire, bit-for-bit identity when nothing is pruned, and clear refusals."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from training.models import LayerSpec, build_cnn
from training.prune import activation_shares
from training.resnet import ResNetSpec, build_resnet
from training.resnet_prune import channels, gates, prune_resnet, spec_of, tied_keep_plan, wiring

TWO = (16, 32)
"""Two stages keep these tests small; the three-stage default is tested bit for bit below."""
KILL = -1e3
"""A batch-norm shift that keeps a channel below zero for any input in [0, 1]."""


def _images(n: int = 24) -> np.ndarray:
    return np.random.default_rng(7).random((n, 28, 28), dtype=np.float32)


def test_gates_follow_where_the_relu_sits():
    post, pre = gates(ResNetSpec(stages=TWO, depth=2)), gates(ResNetSpec(stages=TWO, depth=2, placement="pre"))
    assert post["s0"] == ["stem", "s0b0_out", "s0b1_out"]  # the stream is these ReLUs' output
    assert post["s1"] == ["s1b0_out", "s1b1_out"]
    assert post["s1b1_mid"] == ["s1b1_relu1"]
    assert pre["s0"] == ["s0b0_relu1", "s0b1_relu1", "s1b0_relu1"]  # the stream is only read through these
    assert pre["s1"] == ["s1b1_relu1", "final_relu"]
    assert pre["s0b0_mid"] == ["s0b0_relu2"]
    for placement in ("post", "pre"):
        rspec = ResNetSpec(stages=TWO, depth=3, placement=placement)
        every = [name for relus in gates(rspec).values() for name in relus]
        assert len(every) == len(set(every)) and set(every) <= set(rspec.relu_names())


@pytest.mark.parametrize("placement", ["post", "pre"])
def test_every_weight_layer_is_wired(placement):
    rspec = ResNetSpec(stages=TWO, depth=2, width=0.5, placement=placement)
    model = build_resnet(rspec)
    with_weights = {layer.name for layer in model.layers if layer.weights}
    assert with_weights == set(wiring(rspec))
    assert spec_of(model)[0].placement == placement and spec_of(model)[0].depth == 2


@pytest.mark.parametrize("placement", ["post", "pre"])
def test_keeping_every_channel_is_the_same_model_bit_for_bit(placement):
    model = build_resnet(ResNetSpec(stages=TWO, depth=2, width=0.5, placement=placement), seed=1)
    keep = {group: np.arange(n) for group, n in channels(model).items()}
    pruned = prune_resnet(model, keep)
    x = _images()
    np.testing.assert_array_equal(np.asarray(model(x, training=False)), np.asarray(pruned(x, training=False)))


def test_the_default_three_stage_family_prunes_bit_for_bit_when_nothing_goes():
    model = build_resnet(seed=4)
    assert gates(spec_of(model)[0])["s2"] == ["s2b0_out"]
    keep = {group: np.arange(n) for group, n in channels(model).items()}
    x = _images(8)
    np.testing.assert_array_equal(
        np.asarray(model(x, training=False)), np.asarray(prune_resnet(model, keep)(x, training=False))
    )


def _kill(model: keras.Model, placement: str) -> dict[str, list[int]]:
    """Silence chosen channels through the batch norms before their gates; returns them per group."""
    killed = {"s0": [1, 4], "s1": [0, 5, 9], "s0b1_mid": [2], "s1b0_mid": [3, 7]}

    def shift(layer: str, idx: list[int]) -> None:
        bn = model.get_layer(layer)
        gamma, beta, mean, var = bn.get_weights()
        beta[idx] = KILL
        bn.set_weights([gamma, beta, mean, var])

    if placement == "post":  # every tensor added into the stream is far below zero there
        shift("stem_bn", killed["s0"])
        for b in range(2):
            shift(f"s0b{b}_bn2", killed["s0"])
            shift(f"s1b{b}_bn2", killed["s1"])
        shift("s1b0_project_bn", killed["s1"])
        shift("s0b1_bn1", killed["s0b1_mid"])
        shift("s1b0_bn1", killed["s1b0_mid"])
    else:  # every reader of the stream is shut on those channels
        for layer in ("s0b0_bn1", "s0b1_bn1", "s1b0_bn1"):
            shift(layer, killed["s0"])
        shift("s1b1_bn1", killed["s1"])
        shift("final_bn", killed["s1"])
        shift("s0b1_bn2", killed["s0b1_mid"])
        shift("s1b0_bn2", killed["s1b0_mid"])
    return killed


@pytest.mark.parametrize("placement", ["post", "pre"])
def test_channels_that_never_fire_go_together_and_the_outputs_stay(placement):
    rspec = ResNetSpec(stages=TWO, depth=2, width=1.0, placement=placement)
    model = build_resnet(rspec, LayerSpec(activity_l1=1e-4), seed=2)
    killed = _kill(model, placement)
    x = _images()
    shares = activation_shares(model, x)
    plan = tied_keep_plan(shares, rspec, 0.0)
    full = channels(model)
    for group, idx in killed.items():  # (others may happen to be silent on these few inputs too)
        assert set(idx) <= set(range(full[group])) - set(plan[group].tolist()), group
    pruned = prune_resnet(model, plan)
    assert pruned.count_params() < model.count_params()
    before, after = np.asarray(model(x, training=False)), np.asarray(pruned(x, training=False))
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)
    assert (after.argmax(axis=1) == before.argmax(axis=1)).all()
    # the pruned model is what the probe sees: the killed channels are gone from every gate
    for group, relus in gates(rspec).items():
        for name in relus:
            assert int(pruned.get_layer(name).output.shape[-1]) == len(plan[group])


def test_a_channel_any_gate_uses_is_kept():
    rspec = ResNetSpec(stages=TWO, depth=2)
    shares = {name: np.zeros(16 if name.startswith(("stem", "s0")) else 32) for name in rspec.relu_names()}
    shares["s0b1_out"][3] = 0.5  # only the last block of stage 0 uses stream channel 3
    shares["s1b0_relu1"][[1, 2]] = 0.01
    plan = tied_keep_plan(shares, rspec, 0.0)
    assert plan["s0"].tolist() == [3]
    assert plan["s1b0_mid"].tolist() == [1, 2]
    assert plan["s1"].tolist() == [0]  # nothing fires: the busiest (first) channel stays, the model stays a model
    assert tied_keep_plan(shares, rspec, 0.02)["s1b0_mid"].tolist() == [1]


def test_refusals_name_the_problem():
    with pytest.raises(ValueError, match="residual CNN"):
        spec_of(build_cnn())
    with pytest.raises(ValueError, match="k-WTA"):
        spec_of(build_resnet(spec=LayerSpec(design="kwta")))
    model = build_resnet(ResNetSpec(stages=TWO))
    keep = {group: np.arange(n) for group, n in channels(model).items()}
    del keep["s1"]
    with pytest.raises(ValueError, match="s1"):
        prune_resnet(model, keep)


def test_a_pruned_model_saves_loads_and_prunes_again(tmp_path):
    model = build_resnet(ResNetSpec(stages=TWO, width=0.5, placement="pre"), LayerSpec(design="fatrelu"), seed=3)
    keep = {group: np.arange(max(1, n - 2)) for group, n in channels(model).items()}
    pruned = prune_resnet(model, keep)
    path = tmp_path / "m.keras"
    pruned.save(path)
    loaded = keras.models.load_model(path)
    x = _images(4)
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), np.asarray(pruned(x, training=False)))
    assert channels(loaded) == {group: len(idx) for group, idx in keep.items()}
    assert spec_of(loaded)[1].design == "fatrelu"
