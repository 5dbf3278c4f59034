"""The residual CNN family (issue 19's first part): it builds at every knob setting, and the probe finds
every ReLU-family layer in it, inside the blocks too, with counts equal to Keras' own layer outputs."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from sparsity.probe import SparsityProbe, find_relu_layers
from training.models import LayerSpec
from training.resnet import ResNetSpec, build_resnet


@pytest.mark.parametrize(
    ("placement", "depth", "width", "design"),  # every value of every knob, each at least once
    [
        ("post", 1, 0.5, "relu"),
        ("pre", 1, 0.5, "fatrelu"),
        ("post", 2, 1.0, "fatrelu"),
        ("pre", 2, 1.0, "kwta"),
        ("post", 3, 2.0, "kwta"),
        ("pre", 3, 2.0, "relu"),
    ],
)
def test_the_family_builds_at_every_knob_and_the_probe_finds_every_relu(placement, depth, width, design):
    rspec = ResNetSpec(depth=depth, width=width, placement=placement)
    model = build_resnet(rspec, LayerSpec(design=design, activity_l1=1e-5))
    assert model.output_shape == (None, 10)
    found = find_relu_layers(model)
    assert [layer.name for layer in found] == rspec.relu_names()
    channels = {layer.name: layer.units for layer in found}
    last = f"s2b{depth - 1}_{'relu2' if placement == 'pre' else 'out'}"  # pre: relu1 sees the stage's input
    assert channels["stem"] == rspec.channels(0) and channels[last] == rspec.channels(len(rspec.stages) - 1)
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert len(adds) == depth * len(rspec.stages)


@pytest.mark.parametrize("placement", ["post", "pre"])
def test_probe_counts_equal_keras_outputs_in_a_residual_net(placement):
    rspec = ResNetSpec(depth=2, width=0.5, placement=placement)
    model = build_resnet(rspec, seed=3)
    x = np.random.default_rng(0).random((6, 28, 28), dtype=np.float32)
    result = SparsityProbe(model).run(x)
    names = rspec.relu_names()
    outputs = keras.Model(model.inputs, [model.get_layer(n).output for n in names])([x], training=False)
    for name, out in zip(names, outputs, strict=True):
        zeros = (np.asarray(out).reshape(len(x), -1) == 0).mean(axis=1)
        np.testing.assert_array_equal(result.layer_sparsity[name], zeros)


def test_bad_knobs_are_refused():
    for bad in ({"depth": 0}, {"width": 0.0}, {"placement": "middle"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ResNetSpec(**bad)
