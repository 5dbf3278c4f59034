"""The depth study's pieces that need no training: its grid, the serving rule, and the rising L1 schedule."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest

from lab.depth import (
    CENTER,
    DEPTHS,
    WIDTHS,
    choose,
    default_points,
    markdown,
    meets_targets,
)
from sparsity.layers import RisingL1
from training.models import LayerSpec
from training.resnet import RAMP_SHARE, RampL1, ResNetSpec, build_resnet
from training.resnet_fit import DepthPoint


def test_the_default_grid_varies_one_factor_at_a_time_with_three_values_each():
    points = default_points()
    keys = [p.key for p in points]
    assert len(keys) == len(set(keys))
    assert {p.depth for p in points} == set(DEPTHS)
    assert {p.width for p in points} == set(WIDTHS) and {p.placement for p in points} == {"post", "pre"}
    assert {p.method for p in points} == {"relu", "l1", "rising-l1", "fatrelu"}
    for p in points:  # every point differs from the centre in one factor at most
        differs = [
            p.depth != CENTER.depth,
            p.width != CENTER.width,
            p.placement != CENTER.placement,
            (p.method, p.l1) != (CENTER.method, CENTER.l1),
        ]
        assert sum(differs) <= 1, p.key


def test_point_keys_and_refusals():
    assert (
        DepthPoint(depth=2, width=0.5, placement="pre", method="rising-l1", l1=1e-4).key
        == "pre/d2/w0.5/rising-l1=0.0001"
    )
    assert DepthPoint(method="relu", l1=1e-3).l1 == 0.0  # no penalty: one key per configuration
    assert DepthPoint(method="fatrelu").layer_spec().design == "fatrelu"
    assert DepthPoint(method="rising-l1").resnet_spec().l1_schedule == "rising"
    with pytest.raises(ValueError, match="method"):
        DepthPoint(method="gelu")


def _point(name: str, accuracy: float, layers: list[float], overall: float) -> dict:
    names = [f"l{i}" for i in range(len(layers))]
    row = {"point": name, "test_accuracy_mean": accuracy, "test_accuracy_std": 0.001, "sparsity_all_mean": overall}
    row["layers"] = "|".join(names)
    row.update({f"sparsity_{n}_mean": v for n, v in zip(names, layers, strict=True)})
    return row


def test_the_rule_takes_the_most_accurate_point_that_meets_both_sparsity_targets():
    points = [
        _point("accurate-but-dense", 0.990, [0.5, 0.6], 0.55),
        _point("sparse-enough", 0.985, [0.9, 0.8], 0.91),
        _point("sparser-less-accurate", 0.980, [0.95, 0.9], 0.95),
        _point("one-layer-short", 0.989, [0.99, 0.7], 0.93),
    ]
    assert [meets_targets(p) for p in points] == [False, True, True, False]
    assert choose(points)["point"] == "sparse-enough"
    # none meets the targets: the sweep's rule, the sparsest within 0.2 points of the best
    fallback = [points[0], points[3], _point("close", 0.9885, [0.7, 0.7], 0.7)]
    assert choose(fallback)["point"] == "one-layer-short"


def test_the_rising_l1_reaches_its_strength_smoothly_and_only_during_training(tmp_path):
    model = build_resnet(
        ResNetSpec(width=0.25, stages=(8, 16), l1_schedule="rising", augment=False), LayerSpec(activity_l1=1e-4)
    )
    regularizers = [
        layer.activity_regularizer for layer in model.layers if isinstance(layer.activity_regularizer, RisingL1)
    ]
    assert len(regularizers) == len(ResNetSpec(stages=(8, 16)).relu_names())
    ramp = RampL1()
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float(regularizers[0].strength.numpy()))

    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((40, 28, 28), dtype=np.float32)
    y = np.arange(40) % 10
    model.fit(x, y, epochs=5, batch_size=10, verbose=0, callbacks=[ramp, Watch()])
    steps = 20
    assert seen[0] == 0.0 and all(b >= a for a, b in itertools.pairwise(seen))
    full = int(steps * RAMP_SHARE)
    assert seen[full - 1] < 1e-4 and seen[full] == pytest.approx(1e-4) and seen[-1] == pytest.approx(1e-4)
    assert 0.2e-4 < seen[full // 2] < 0.8e-4  # about halfway up at half the ramp (sin^2: exactly half)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    reloaded = loaded.get_layer("stem").activity_regularizer
    assert isinstance(reloaded, RisingL1) and reloaded.l1 == 1e-4 and float(reloaded.strength.numpy()) == 0.0


def test_rising_l1_refuses_a_bad_strength():
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="l1"):
            RisingL1(bad)


def test_the_table_has_one_row_per_point_and_marks_the_chosen_one():
    point = _point("post/d1/w1/l1=1e-05", 0.98, [0.9, 0.8, 0.6], 0.77)
    point["layers"] = "stem|s0b0_relu1|s1b0_out"
    point.update({"sparsity_stem_mean": 0.9, "sparsity_s0b0_relu1_mean": 0.8, "sparsity_s1b0_out_mean": 0.6})
    point.update({f"dead_{n}_mean": 0.0 for n in ("stem", "s0b0_relu1", "s1b0_out")}, params_mean=1000.0)
    point.update(train_seconds_mean=12.0, test_accuracy_std=0.002)
    other = {**point, "point": "post/d2/w1/l1=1e-05", "dead_stem_mean": 0.3}
    table = markdown({"points": [point, other], "chosen": "post/d2/w1/l1=1e-05"})
    lines = table.strip().splitlines()
    assert len(lines) == 2 + 2 and lines[3].startswith("| **post/d2/w1/l1=1e-05** |")
    assert "| 98.00 ± 0.20 | 0.770 | s1b0_out 0.60 | 0.80 | 0.60 | 0.000 | 1000 | 12 |" in lines[2]
    assert "| 0.100 |" in lines[3]  # dead channels: the mean share over the layers
