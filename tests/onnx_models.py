"""Small ONNX classifiers built with ``onnx.helper`` (no PyTorch): what the ONNX tests register and serve."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 20  # Gelu is an operator from opset 20
ITEM_SHAPE = (1, 12, 12)
CLASSES = 3


def _init(rng: np.random.Generator, name: str, shape: tuple[int, ...], scale: float = 1.0):
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return numpy_helper.from_array((rng.normal(size=shape) * scale / np.sqrt(fan_in)).astype(np.float32), name)


def cnn(
    seed: int = 0,
    *,
    opset: int = OPSET,
    batch: int | str | None = "batch",
    names: bool = True,
    channels: int = 1,
    gelu: bool = True,
) -> onnx.ModelProto:
    """Conv -> Relu -> MaxPool -> Conv -> Clip(0, 6) -> Flatten -> Gemm -> Gelu -> Gemm -> Max(x, 0) -> Gemm ->
    Softmax, on (batch, channels, 12, 12) inputs: every kind of node the probe must find or pass over. Below
    opset 20 (no Gelu) the not-probed activation is a Sigmoid; below 11, Clip takes its bounds as attributes.
    ``gelu=False`` puts a Relu in its place (every node then one the sparse engine runs)."""
    rng = np.random.default_rng(seed)
    inits = [
        _init(rng, "conv1.weight", (4, channels, 3, 3), 2.0),
        numpy_helper.from_array(rng.normal(scale=0.1, size=4).astype(np.float32), "conv1.bias"),
        _init(rng, "conv2.weight", (6, 4, 3, 3), 2.0),
        numpy_helper.from_array(np.full(6, -0.05, np.float32), "conv2.bias"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(6.0, np.float32), "six"),
        _init(rng, "fc1.weight", (16, 6 * 6 * 6), 2.0),
        numpy_helper.from_array(np.zeros(16, np.float32), "fc1.bias"),
        _init(rng, "fc2.weight", (8, 16), 2.0),
        numpy_helper.from_array(np.full(8, -0.1, np.float32), "fc2.bias"),
        _init(rng, "fc3.weight", (CLASSES, 8), 2.0),
        numpy_helper.from_array(np.zeros(CLASSES, np.float32), "fc3.bias"),
    ]
    n = (lambda name: name) if names else (lambda name: "")
    nodes = [
        helper.make_node("Conv", ["x", "conv1.weight", "conv1.bias"], ["c1"], name=n("conv1"), pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name=n("relu1")),
        helper.make_node("MaxPool", ["r1"], ["p1"], name=n("pool1"), kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "conv2.weight", "conv2.bias"], ["c2"], name=n("conv2"), pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c2", "zero", "six"], ["r2"], name=n("relu6"))
        if opset >= 11
        else helper.make_node("Clip", ["c2"], ["r2"], name=n("relu6"), min=0.0, max=6.0),
        helper.make_node("Flatten", ["r2"], ["f"], name=n("flatten"), axis=1),
        helper.make_node("Gemm", ["f", "fc1.weight", "fc1.bias"], ["g1"], name=n("fc1"), transB=1),
        helper.make_node(("Gelu" if opset >= 20 else "Sigmoid") if gelu else "Relu", ["g1"], ["h1"], name=n("gelu")),
        helper.make_node("Gemm", ["h1", "fc2.weight", "fc2.bias"], ["g2"], name=n("fc2"), transB=1),
        helper.make_node("Max", ["g2", "zero"], ["h2"], name=n("max0")),
        helper.make_node("Gemm", ["h2", "fc3.weight", "fc3.bias"], ["logits"], name=n("fc3"), transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name=n("softmax"), axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "small_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, channels, *ITEM_SHAPE[1:]])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [batch, CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tests")
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def calibration(count: int = 120, seed: int = 1, channels: int = 1) -> np.ndarray:
    """Inputs in [0, 1] with some structure (a bright square at a random place, in one random channel of
    colour inputs), float32, channels first."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.2, size=(count, channels, *ITEM_SHAPE[1:])).astype(np.float32)
    for item in x:
        r, c = rng.integers(0, 8, size=2)
        item[rng.integers(0, channels) if channels > 1 else 0, r : r + 4, c : c + 4] += 0.8
    return np.clip(x, 0, 1)


def tiny(nodes: list, inputs: list, outputs: list, inits: list | None = None, opset: int = 17):
    """A model from nodes and value infos (for refusals and odd graphs), not checked."""
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, inits or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def labels(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """What :func:`cnn` predicts for ``x`` (its random weights have no other truth), from a plain ONNX Runtime run."""
    import onnxruntime as ort

    model = cnn(seed, channels=x.shape[1])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.argmax(session.run(None, {"x": x})[0], axis=1).astype(np.int64)
