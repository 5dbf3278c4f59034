"""The project's Keras CNN written out as ONNX with ``onnx.helper``, layer by layer, so that the benchmark can
compare ONNX Runtime with TensorFlow on the same architecture and the same weights.

Not a general converter: it covers the layers of ``mnist_cnn`` (``Reshape`` to one channel, ``Conv2D`` with
``same`` or ``valid`` padding, ``MaxPooling2D``, ``Flatten``, ``Dense``; ReLU or softmax activations) and
skips what does nothing at inference (augmentation, dropout). Keras 3's ``model.export(format="onnx")``
and tf2onnx 1.17 did not work with TensorFlow 2.21 here (augmentation layers reached the graph; the
metagraph failed to import), which is why registration does not convert Keras models.

The ONNX graph takes the Keras input as it is ((N, 28, 28)), works channels first (NCHW, what ONNX
Runtime's convolutions are fastest at), and transposes back to channels last before ``Flatten`` so that
the dense kernel applies unchanged.
"""

from __future__ import annotations

import keras
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
SKIPPED = ("RandomRotation", "RandomTranslation", "RandomFlip", "RandomZoom", "Dropout", "InputLayer")


class NotConvertible(ValueError):
    """A layer this writer does not cover."""


def convert(model: keras.Model, name: str = "model") -> onnx.ModelProto:
    """``model`` (Sequential-like: one chain of the layers above) as an ONNX model with the same outputs."""
    item_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    nodes, inits = [], []
    current, layout = "input", "keras"  # keras: as Keras holds it (NHWC or flat); nchw after the first Reshape
    counter = iter(range(10_000))

    def fresh(label: str) -> str:
        return f"{label}_{next(counter)}"

    def activate(source: str, activation: str, label: str) -> str:
        if activation == "linear":
            return source
        op = {"relu": "Relu", "softmax": "Softmax"}.get(activation)
        if op is None:
            raise NotConvertible(f"activation {activation!r} of layer {label}")
        out = fresh(label)
        attributes = {"axis": -1} if op == "Softmax" else {}
        nodes.append(helper.make_node(op, [source], [out], name=f"{label}_{activation}", **attributes))
        return out

    for layer in model.layers:
        kind = type(layer).__name__
        if kind in SKIPPED:
            continue
        config = layer.get_config()
        if kind == "Reshape":
            target = tuple(config["target_shape"])
            if len(target) != 3 or target[-1] != 1:
                raise NotConvertible(f"Reshape to {target}: only to (H, W, 1)")
            shape = numpy_helper.from_array(np.array([-1, 1, target[0], target[1]], np.int64), fresh("shape"))
            inits.append(shape)
            out = fresh("nchw")
            nodes.append(helper.make_node("Reshape", [current, shape.name], [out], name=layer.name))
            current, layout = out, "nchw"
        elif kind == "Conv2D":
            kernel, bias = (np.asarray(w) for w in layer.get_weights())
            height, width = kernel.shape[:2]
            if config["strides"] != (1, 1) or config["dilation_rate"] != (1, 1) or height % 2 == 0:
                raise NotConvertible(f"Conv2D {layer.name}: only stride 1, no dilation, odd kernels")
            pads = [height // 2, width // 2] * 2 if config["padding"] == "same" else [0, 0, 0, 0]
            w = numpy_helper.from_array(kernel.transpose(3, 2, 0, 1).copy(), f"{layer.name}.weight")
            b = numpy_helper.from_array(bias, f"{layer.name}.bias")
            inits += [w, b]
            out = fresh(layer.name)
            nodes.append(helper.make_node("Conv", [current, w.name, b.name], [out], name=layer.name, pads=pads))
            current = activate(out, config["activation"], layer.name)
        elif kind == "MaxPooling2D":
            if config["padding"] != "valid":
                raise NotConvertible(f"MaxPooling2D {layer.name}: only valid padding")
            out = fresh(layer.name)
            pool, strides = list(config["pool_size"]), list(config["strides"] or config["pool_size"])
            nodes.append(
                helper.make_node("MaxPool", [current], [out], name=layer.name, kernel_shape=pool, strides=strides)
            )
            current = out
        elif kind == "Flatten":
            if layout == "nchw":  # back to Keras' order, so that the dense kernel applies unchanged
                out = fresh("nhwc")
                nodes.append(
                    helper.make_node("Transpose", [current], [out], name=f"{layer.name}_nhwc", perm=[0, 2, 3, 1])
                )
                current, layout = out, "keras"
            out = fresh(layer.name)
            nodes.append(helper.make_node("Flatten", [current], [out], name=layer.name, axis=1))
            current = out
        elif kind == "Dense":
            kernel, bias = (np.asarray(w) for w in layer.get_weights())
            w = numpy_helper.from_array(kernel, f"{layer.name}.weight")
            b = numpy_helper.from_array(bias, f"{layer.name}.bias")
            inits += [w, b]
            out = fresh(layer.name)
            nodes.append(helper.make_node("Gemm", [current, w.name, b.name], [out], name=layer.name))
            current = activate(out, config["activation"], layer.name)
        else:
            raise NotConvertible(f"layer {layer.name} ({kind})")
    nodes.append(helper.make_node("Identity", [current], ["scores"], name="scores"))
    classes = int(model.outputs[0].shape[-1])
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *item_shape])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", classes])],
        inits,
    )
    converted = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="benchmarks.keras_onnx"
    )
    converted.ir_version = 10
    onnx.checker.check_model(converted)
    return converted
