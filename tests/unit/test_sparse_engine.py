"""The sparse engine against ONNX Runtime: one small graph per operator and padding, stride and shape case,
random ReLU networks (hypothesis), compaction, and the one-line refusal of what it cannot run."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from sparsity.onnx_probe import OnnxProbe
from sparsity.sparse.engine import SparseProbe
from sparsity.sparse.kernels import runnable_levels
from sparsity.sparse.program import SparseUnsupported

CLASSES = 4


class Net:
    """A graph written node by node: ``add`` returns the new tensor's name; weights get random values."""

    def __init__(self, shape: tuple[int, ...], seed: int = 0, opset: int = 17) -> None:
        self.rng = np.random.default_rng(seed)
        self.shape, self.opset = shape, opset
        self.nodes, self.inits, self.count = [], [], 0

    def weight(self, shape, scale: float = 1.0, offset: float = 0.0) -> str:
        name = f"w{len(self.inits)}"
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        value = self.rng.normal(size=shape) * scale / np.sqrt(fan_in) + offset
        self.inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def const(self, value, dtype=np.float32) -> str:
        name = f"k{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def add(self, op: str, inputs: list[str], **attributes) -> str:
        self.count += 1
        out = f"t{self.count}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op.lower()}{self.count}", **attributes))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int | tuple = 3, group: int = 1, **attributes) -> str:
        kernel = (k, k) if isinstance(k, int) else k
        w = self.weight((cout, cin // group, *kernel), 2.0)
        b = self.const(self.rng.normal(scale=0.1, size=cout) - 0.05)
        return self.add("Conv", [x, w, b], group=group, **attributes)

    def classifier(self, x: str, features: int, softmax: bool = True) -> onnx.ModelProto:
        flat = self.add("Flatten", [x], axis=1)
        hidden = self.add(
            "Relu", [self.add("Gemm", [flat, self.weight((12, features), 2.0), self.const(np.zeros(12))], transB=1)]
        )
        logits = self.add("Gemm", [hidden, self.weight((CLASSES, 12), 2.0), self.const(np.zeros(CLASSES))], transB=1)
        out = self.add("Softmax", [logits], axis=1) if softmax else logits
        graph = helper.make_graph(
            self.nodes,
            "net",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *self.shape])],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", CLASSES])],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 10
        onnx.checker.check_model(model)
        return model


def inputs(shape, count: int = 24, seed: int = 3) -> np.ndarray:
    """Half zeros (a ReLU network's input is often sparse), the rest positive and negative."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, *shape)).astype(np.float32)
    x[rng.random(x.shape) < 0.5] = 0.0
    return x


def assert_same(model: onnx.ModelProto, x: np.ndarray, dead: dict | None = None, level="best") -> SparseProbe:
    """The sparse engine's answers equal ONNX Runtime's: labels, probabilities within 1e-5, every unit's
    positions on, every layer's zero count."""
    layers = OnnxProbe(model, field="x").layers
    output = "probabilities" if model.graph.node[-1].op_type == "Softmax" else "logits"
    reference = OnnxProbe(model, layers=layers, output=output).run(x)
    value_range = (float(x.min()), float(x.max()))
    sparse = SparseProbe(model, layers=layers, output=output, value_range=value_range, dead=dead, level=level)
    # the interval bounds are sound: a unit proven dead never fires on inputs in the range
    for i, layer in enumerate(layers):
        start = int(np.sum(sparse.units[:i]))
        for unit in sparse.dead.get(layer.name, []):
            assert reference.shares[:, start + unit].max() == 0.0, (layer.name, unit)
    got = sparse.run(x)
    np.testing.assert_array_equal(got.labels, reference.labels)
    np.testing.assert_allclose(got.probabilities, reference.probabilities, atol=1e-5)
    np.testing.assert_array_equal(got.shares, reference.shares)
    for name in reference.layer_sparsity:
        np.testing.assert_array_equal(got.layer_sparsity[name], reference.layer_sparsity[name])
    return sparse


CONVS = {
    "3x3 same": dict(k=3, pads=[1, 1, 1, 1]),
    "3x3 stride 2": dict(k=3, strides=[2, 2], pads=[1, 1, 1, 1]),
    "5x5 valid": dict(k=5),
    "asymmetric pads": dict(k=3, pads=[0, 1, 2, 1]),
    "dilation 2": dict(k=3, pads=[2, 2, 2, 2], dilations=[2, 2]),
    "SAME_UPPER stride 2": dict(k=3, strides=[2, 2], auto_pad="SAME_UPPER"),
    "SAME_LOWER": dict(k=2, auto_pad="SAME_LOWER"),
    "groups 2": dict(k=3, pads=[1, 1, 1, 1], group=2),
    "depthwise": dict(k=3, pads=[1, 1, 1, 1], group=4, cout=4),
    "pointwise": dict(k=1),
    "patchify": dict(k=2, strides=[2, 2]),
    "2x3 kernel stride 1x2": dict(k=(2, 3), strides=[1, 2], pads=[1, 0, 0, 2]),
}


@pytest.mark.parametrize("case", CONVS, ids=list(CONVS))
def test_a_convolution_computes_what_onnx_runtime_computes(case):
    options = dict(CONVS[case])
    cout = options.pop("cout", 6)

    def build(features):
        net = Net((4, 9, 9))
        return net.classifier(net.add("Relu", [net.conv("x", 4, cout, **options)]), features)

    assert_same(build(_flattened(build(1))), inputs((4, 9, 9)))


POOLS = {
    "max 2x2": ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2])),
    "max 3x3 stride 1 padded": ("MaxPool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
    "max ceil mode": ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    "average 2x2": ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2])),
    "average padded, pads not counted": ("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
    "average padded, pads counted": ("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)),
    "global average": ("GlobalAveragePool", {}),
    "global max": ("GlobalMaxPool", {}),
}


@pytest.mark.parametrize("case", POOLS, ids=list(POOLS))
def test_a_pooling_computes_what_onnx_runtime_computes(case):
    op, attributes = POOLS[case]

    def build(features):
        net = Net((3, 10, 10), seed=1)
        y = net.add(op, [net.add("Relu", [net.conv("x", 3, 5, pads=[1, 1, 1, 1])])], **attributes)
        return net.classifier(y, features)

    sparse = assert_same(build(_flattened(build(1))), inputs((3, 10, 10)))
    assert sparse.layers[0].units == 5


def _flattened(model: onnx.ModelProto) -> int:
    """The width of the model's Flatten output (ONNX shape inference: the graph after it need not fit yet)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    flat = next(n.output[0] for n in model.graph.node if n.op_type == "Flatten")
    info = next(v for v in inferred.graph.value_info if v.name == flat)
    return info.type.tensor_type.shape.dim[1].dim_value


ACTIVATIONS = {
    "Relu": lambda net, t: net.add("Relu", [t]),
    "Clip(0, 6)": lambda net, t: net.add("Clip", [t, net.const(0.0), net.const(0.4)]),
    "Clip(0) without a cap": lambda net, t: net.add("Clip", [t, net.const(0.0)]),
    "Max(x, 0)": lambda net, t: net.add("Max", [t, net.const(0.0)]),
    "ThresholdedRelu": lambda net, t: net.add("ThresholdedRelu", [t], alpha=0.3),
}


@pytest.mark.parametrize("case", ACTIVATIONS, ids=list(ACTIVATIONS))
def test_each_relu_family_activation_is_counted_as_onnx_runtime_counts(case):
    def build(features):
        net = Net((2, 8, 8), seed=2)
        return net.classifier(ACTIVATIONS[case](net, net.conv("x", 2, 5, pads=[1, 1, 1, 1])), features)

    assert_same(build(_flattened(build(1))), inputs((2, 8, 8)))


def test_clip_with_bounds_as_attributes_in_an_old_opset():
    def build(features):
        net = Net((2, 6, 6), seed=4, opset=9)
        y = net.add("Clip", [net.conv("x", 2, 3, pads=[1, 1, 1, 1])], min=0.0, max=0.5)
        return net.classifier(y, features)

    assert_same(build(_flattened(build(1))), inputs((2, 6, 6)))


def test_batch_norm_and_channel_constants_fold_into_the_convolution_or_run_on_their_own():
    """Conv -> BatchNormalization -> Mul -> Sub -> Relu folds into one step; a residual Add then a standalone
    BatchNormalization (pre-activation style) and a Div run as their own steps."""

    def build(features):
        net = Net((3, 8, 8), seed=5)
        c = net.conv("x", 3, 4, pads=[1, 1, 1, 1])
        scale, bias = net.const(net.rng.uniform(0.5, 2, 4)), net.const(net.rng.normal(size=4))
        mean, var = net.const(net.rng.normal(size=4)), net.const(net.rng.uniform(0.5, 2, 4))
        b = net.add("BatchNormalization", [c, scale, bias, mean, var], epsilon=1e-3)
        m = net.add("Mul", [b, net.const(net.rng.uniform(0.5, 1.5, (4, 1, 1)))])
        r = net.add("Relu", [net.add("Sub", [m, net.const(0.1)])])
        other = net.add("Relu", [net.conv("x", 3, 4, pads=[1, 1, 1, 1])])
        added = net.add("Add", [r, other])
        s2, b2 = net.const(net.rng.uniform(0.5, 2, 4)), net.const(net.rng.normal(size=4))
        m2, v2 = net.const(net.rng.normal(size=4)), net.const(net.rng.uniform(0.5, 2, 4))
        normed = net.add("BatchNormalization", [added, s2, b2, m2, v2])
        y = net.add("Relu", [net.add("Div", [normed, net.const([[[2.0]], [[1.0]], [[0.5]], [[4.0]]])])])
        return net.classifier(y, features)

    assert_same(build(_flattened(build(1))), inputs((3, 8, 8)))


def test_a_residual_block_with_a_strided_projection():
    def build(features):
        net = Net((4, 8, 8), seed=6)
        stem = net.add("Relu", [net.conv("x", 4, 6, pads=[1, 1, 1, 1])])
        mid = net.add("Relu", [net.conv(stem, 6, 8, strides=[2, 2], pads=[1, 1, 1, 1])])
        out = net.conv(mid, 8, 8, pads=[1, 1, 1, 1])
        shortcut = net.conv(stem, 6, 8, k=1, strides=[2, 2])
        block = net.add("Relu", [net.add("Add", [out, shortcut])])
        same = net.add("Relu", [net.add("Add", [block, net.conv(block, 8, 8, pads=[1, 1, 1, 1])])])
        return net.classifier(net.add("GlobalAveragePool", [same]), features)

    sparse = assert_same(build(8), inputs((4, 8, 8)))
    assert [layer.name for layer in sparse.layers] == ["relu2", "relu4", "relu8", "relu11", "relu15"]


def test_channels_last_input_transposed_and_flattened_as_tf2onnx_writes_it():
    """(N, H, W, C) input -> Transpose to NCHW -> Conv -> Relu -> Transpose back -> Reshape -> MatMul + Add."""
    net = Net((7, 7, 3), seed=7)
    t = net.add("Transpose", ["x"], perm=[0, 3, 1, 2])
    y = net.add("Relu", [net.conv(t, 3, 5, pads=[1, 1, 1, 1])])
    back = net.add("Transpose", [y], perm=[0, 2, 3, 1])
    flat = net.add("Reshape", [back, net.const([-1, 7 * 7 * 5], np.int64)])
    hidden = net.add(
        "Relu", [net.add("Add", [net.add("MatMul", [flat, net.weight((245, 10), 2.0)]), net.const(np.zeros(10))])]
    )
    logits = net.add("Gemm", [hidden, net.weight((10, CLASSES)), net.const(np.ones(CLASSES))], alpha=0.5, beta=2.0)
    graph = helper.make_graph(
        net.nodes, "nhwc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 7, 7, 3])],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["batch", CLASSES])], net.inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    assert_same(model, inputs((7, 7, 3)))


def test_a_one_dimensional_convolution():
    def build(features):
        net = Net((3, 20), seed=8)
        w = net.weight((6, 3, 3), 2.0)
        y = net.add("Relu", [net.add("Conv", ["x", w, net.const(np.zeros(6))], pads=[1, 1], strides=[2])])
        return net.classifier(net.add("MaxPool", [y], kernel_shape=[2], strides=[2]), features)

    assert_same(build(_flattened(build(1))), inputs((3, 20)))


@pytest.mark.parametrize("level", runnable_levels())
def test_every_instruction_set_level_this_cpu_runs_gives_the_same_answers(level):
    """An image built on one machine carries every level and picks one at start: each must be exact. A residual
    CNN (strided, padded and 1x1 convolutions, 10 and 6 channels: whole vectors and a tail) and an MLP."""

    def build(features):
        net = Net((3, 9, 9), seed=13)
        stem = net.add("Relu", [net.conv("x", 3, 10, pads=[1, 1, 1, 1])])
        mid = net.add("Relu", [net.conv(stem, 10, 6, strides=[2, 2], pads=[1, 1, 1, 1])])
        block = net.add(
            "Relu",
            [net.add("Add", [net.conv(mid, 6, 6, pads=[1, 1, 1, 1]), net.conv(stem, 10, 6, k=1, strides=[2, 2])])],
        )
        return net.classifier(net.add("MaxPool", [block], kernel_shape=[2, 2], strides=[2, 2]), features)

    assert_same(build(_flattened(build(1))), inputs((3, 9, 9), count=40), level=level)


def test_an_mlp_on_tabular_input():
    net = Net((10,), seed=9)
    h = net.add("Relu", [net.add("Gemm", ["x", net.weight((16, 10), 2.0), net.const(np.zeros(16))], transB=1)])
    h = net.add("Relu", [net.add("Gemm", [h, net.weight((16, 8), 2.0), net.const(np.zeros(8))])])
    assert_same(net.classifier(h, 8, softmax=False), inputs((10,), count=64))


def test_units_that_provably_never_fire_are_left_out_and_reported_off():
    """A channel whose bias keeps it below zero for every input in the range (interval bounds prove it): compaction
    removes it from its convolution and from the dense step that reads it; the counts still cover every original
    unit (it is reported as never on), and every answer is ONNX Runtime's."""
    net = Net((2, 6, 6), seed=10)
    w = net.weight((5, 2, 3, 3), 2.0)
    bias = np.zeros(5, np.float32)
    bias[3] = -100.0  # channel 3 cannot reach 0 from inputs in [-5, 5]
    y = net.add("Relu", [net.add("Conv", ["x", w, net.const(bias)], pads=[1, 1, 1, 1])])
    model = net.classifier(y, 5 * 36)
    x = np.clip(inputs((2, 6, 6)), -5, 5)
    layers = OnnxProbe(model, field="x").layers
    sparse = SparseProbe(model, layers=layers, output="probabilities", value_range=(-5.0, 5.0))
    assert sparse.dead == {"relu2": [3]} and sparse.removed == {"relu2": 1}
    reference = OnnxProbe(model, layers=layers, output="probabilities").run(x)
    got = sparse.run(x)
    np.testing.assert_array_equal(got.shares, reference.shares)
    np.testing.assert_allclose(got.probabilities, reference.probabilities, atol=1e-5)
    assert got.shares[:, 3].max() == 0.0
    full = SparseProbe(model, layers=layers, output="probabilities", value_range=(-5.0, 5.0), dead={})
    assert full.removed == {} and sparse.program.weights.size < full.program.weights.size
    # a wider range no longer proves it: nothing is removed
    assert SparseProbe(model, layers=layers, output="probabilities", value_range=(-1e4, 1e4)).removed == {}


def test_a_unit_silent_on_some_inputs_is_never_removed_on_their_word():
    """A unit that merely did not fire on the inputs seen (it can on others) is not provably dead: asked to remove
    it, the engine refuses in one line rather than answer differently later."""
    net = Net((2, 6, 6), seed=14)
    bias = np.zeros(5, np.float32)
    bias[1] = -3.0  # off for small inputs, on for large ones
    y = net.add("Relu", [net.add("Conv", ["x", net.weight((5, 2, 3, 3), 2.0), net.const(bias)], pads=[1, 1, 1, 1])])
    model = net.classifier(y, 5 * 36)
    layers = OnnxProbe(model, field="x").layers
    small = np.full((4, 2, 6, 6), 0.01, np.float32)
    assert OnnxProbe(model, layers=layers, output="probabilities").run(small).shares[:, 1].max() == 0.0
    with pytest.raises(SparseUnsupported, match=r"layer 'relu2': units \[1\] are not provably dead"):
        SparseProbe(model, layers=layers, output="probabilities", value_range=(0.0, 10.0), dead={"relu2": [1]})


def test_an_operator_it_lacks_is_named_in_one_line():
    net = Net((2, 6, 6), seed=11)
    y = net.add("Tanh", [net.add("Relu", [net.conv("x", 2, 3, pads=[1, 1, 1, 1])])])
    model = net.classifier(y, 3 * 36)
    layers = OnnxProbe(model, field="x").layers
    with pytest.raises(SparseUnsupported, match=r"^operator Tanh \(node 'tanh3'\)$"):
        SparseProbe(model, layers=layers, output="probabilities")


def test_bad_input_is_refused_before_it_runs():
    net = Net((2, 6, 6), seed=12)
    model = net.classifier(net.add("Relu", [net.conv("x", 2, 3, pads=[1, 1, 1, 1])]), 3 * 36)
    sparse = SparseProbe(model, layers=OnnxProbe(model, field="x").layers, output="probabilities", value_range=(0, 1))
    x = np.zeros((2, 2, 6, 6), np.float32)
    x[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="inputs"):
        sparse.run(x)
    with pytest.raises(ValueError, match="shape"):
        sparse.run(np.zeros((2, 2, 6, 5), np.float32))


@st.composite
def relu_networks(draw):
    """A random ReLU CNN: 1 to 3 convolutions (kernel 1 to 3, stride 1 or 2, padding 0 or 1, 1 to 12 channels),
    each maybe max-pooled, then the dense classifier."""
    cin, size = draw(st.integers(1, 3)), draw(st.integers(5, 11))
    seed = draw(st.integers(0, 2**16))
    layers = []
    h = size
    channels = cin
    for _ in range(draw(st.integers(1, 3))):
        k, stride, pad = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(0, 1))
        out_h = (h + 2 * pad - k) // stride + 1
        if out_h < 1:
            break
        pool = out_h >= 2 and draw(st.booleans())
        cout = draw(st.integers(1, 12))
        layers.append((channels, cout, k, stride, pad, pool))
        h = out_h // 2 if pool else out_h
        channels = cout
    return cin, size, seed, layers


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(relu_networks())
def test_random_relu_networks_compute_what_onnx_runtime_computes(spec):
    cin, size, seed, layers = spec

    def build(features):
        net = Net((cin, size, size), seed=seed)
        t = "x"
        for c_in, c_out, k, stride, pad, pool in layers:
            t = net.add("Relu", [net.conv(t, c_in, c_out, k=k, strides=[stride] * 2, pads=[pad] * 4)])
            if pool:
                t = net.add("MaxPool", [t], kernel_shape=[2, 2], strides=[2, 2])
        return net.classifier(t, features)

    assert_same(build(_flattened(build(1))), inputs((cin, size, size), count=8, seed=seed % 97))
