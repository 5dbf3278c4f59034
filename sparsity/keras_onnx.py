"""A Keras classifier written out as ONNX (its twin) with tf2onnx, each ReLU-family node named after the Keras
layer call it comes from, so that ONNX Runtime can serve it and count the same zeros under the same names.

The conversion works on an inference-only clone: the same layers and weights with every activity
regularizer removed (an L1 activity term left in the traced call leaves a dangling constant that tf2onnx
cannot import: ``Fetch node .../conv1_1/mul/x doesn't exist in graph``), called with ``training=False`` so
that augmentation and dropout are gone from the graph.

Whether the twin may serve is not decided here: :mod:`modelstore.kinds.keras_relu` runs it beside the Keras
probe on the whole calibration set and accepts it only when every zero count is the same.
Needs TensorFlow and tf2onnx (registration only; serving the twin needs neither).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

import numpy as np
import onnx

from sparsity.onnx_graph import _Constants, relu_kind

OPSET = 17
INPUT = "input"


class ConversionError(ValueError):
    """The model cannot be written out as a twin: one line that says why."""


@dataclass(frozen=True)
class Twin:
    model: onnx.ModelProto
    converter: str  # "tf2onnx 1.17.0"
    seconds: float


def converter_version() -> str | None:
    """tf2onnx's version, or None when it is not installed."""
    try:
        import tf2onnx
    except ImportError:
        return None
    return tf2onnx.__version__


def _without_activity_regularizers(config):
    if isinstance(config, dict):
        return {
            key: None if key == "activity_regularizer" else _without_activity_regularizers(value)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [_without_activity_regularizers(value) for value in config]
    return config


def inference_clone(model):
    """The same layers and weights, with every activity regularizer (a training-time loss) removed."""
    clone = model.__class__.from_config(_without_activity_regularizers(model.get_config()))
    clone.set_weights(model.get_weights())
    for layer in clone._flatten_layers(include_self=False):
        # state derived from weights, e.g. an adapted Normalization's mean and variance
        getattr(layer, "finalize_state", lambda: None)()
    return clone


def convert(model, layer_names: list[str]) -> Twin:
    """``model`` as ONNX, its ReLU-family nodes renamed to ``layer_names`` (the Keras probe's layer calls, in
    call order); ConversionError says why not."""
    version = converter_version()
    if version is None:
        raise ConversionError("tf2onnx is not installed (pip install -r requirements/train.txt)")
    import tensorflow as tf
    import tf2onnx

    started = time.perf_counter()
    quiet = logging.getLogger("tf2onnx")  # its INFO lines, and ERROR lines for ops handled below (Erfc)
    level, quiet.level = quiet.level, logging.CRITICAL
    try:
        clone = inference_clone(model)
        spec = (tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32, name=INPUT),)
        forward = tf.function(lambda x: clone(x, training=False), input_signature=spec)
        captured = _captured_constants(forward.get_concrete_function())
        proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=OPSET)
    except Exception as exc:  # tf2onnx raises anything from its many handlers
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ConversionError(f"tf2onnx {version} cannot convert it: {text}") from None
    finally:
        quiet.setLevel(level)
    _freeze_inputs(proto, captured)
    _replace_erfc(proto)
    _fuse_thresholded_relus(proto, model)
    unknown = sorted({node.op_type for node in proto.graph.node if not onnx.defs.has(node.op_type, node.domain)})
    if unknown:
        raise ConversionError(f"tf2onnx {version} cannot convert the TensorFlow op(s) {', '.join(unknown)}")
    name_relu_nodes(proto, layer_names)
    proto.producer_name, proto.producer_version = "tf2onnx", version
    return Twin(proto, f"tf2onnx {version}", time.perf_counter() - started)


def _captured_constants(function) -> dict[str, object]:
    """The constant tensors a traced function captured (a layer's NumPy state, e.g. ``Normalization``'s mean), by
    the name of their placeholder: tf2onnx freezes captured variables but leaves these as graph inputs."""
    return {
        inner.name: outer.numpy()
        for outer, inner in zip(function.captured_inputs, function.graph.internal_captures, strict=True)
        if outer.dtype.name != "resource"
    }


def _freeze_inputs(proto: onnx.ModelProto, captured: dict) -> None:
    """Every graph input but the model's own turned into the constant it was captured from."""
    from onnx import numpy_helper

    graph = proto.graph
    for value in [i for i in graph.input if i.name != INPUT]:
        if value.name not in captured:
            raise ConversionError(
                f"the converted graph has an input {value.name!r} that is neither the model's nor a constant"
            )
        graph.initializer.append(numpy_helper.from_array(np.asarray(captured[value.name]), value.name))
        graph.input.remove(value)


def _replace_erfc(proto: onnx.ModelProto) -> None:
    """``Erfc(x)`` (TensorFlow's exact GELU; not an ONNX op) as ``1 - Erf(x)``."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    for node in list(graph.node):
        if node.op_type != "Erfc" or node.domain:
            continue
        one, erf = f"{node.name}/one", f"{node.name}/erf"
        graph.initializer.append(numpy_helper.from_array(np.ones((), np.float32), one))
        position = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(position, helper.make_node("Sub", [one, erf], list(node.output), name=node.name))
        graph.node.insert(position, helper.make_node("Erf", list(node.input), [erf], name=f"{node.name}/Erf"))


def _fuse_thresholded_relus(proto: onnx.ModelProto, model) -> None:
    """Each FATReLU layer (``sparsity.layers.ThresholdedReLU``, ``x if x > t else 0``) as the ONNX operator of the
    same meaning, ``ThresholdedRelu(alpha=t)``: tf2onnx lowers its ``where`` into eight nodes that no probe
    recognises as an activation. The layer's nodes (by name scope) are replaced by one node from the input of
    their ``Greater`` to the one output read outside them; nodes left unread are dropped."""
    from onnx import helper

    from sparsity.layers import ThresholdedReLU

    graph = proto.graph
    for layer in model._flatten_layers(include_self=False):
        if not isinstance(layer, ThresholdedReLU):
            continue
        scope = [node for node in graph.node if _matches(node.name, layer.name)]
        greater = [node for node in scope if node.op_type == "Greater"]
        if len(greater) != 1:
            raise ConversionError(f"FATReLU layer {layer.name!r} converted to {len(greater)} Greater nodes, not 1")
        inside = {id(node) for node in scope}
        produced = {name for node in scope for name in node.output}
        read_outside = {name for node in graph.node if id(node) not in inside for name in node.input} | {
            value.name for value in graph.output
        }
        outputs = sorted(produced & read_outside)
        if len(outputs) != 1:
            raise ConversionError(f"FATReLU layer {layer.name!r} has {len(outputs)} outputs read outside it, not 1")
        position = max(list(graph.node).index(node) for node in scope) - len(scope) + 1
        for node in scope:
            graph.node.remove(node)
        name = f"{layer.name}/ThresholdedRelu"
        fused = helper.make_node("ThresholdedRelu", [greater[0].input[0]], outputs, name=name, alpha=layer.threshold)
        graph.node.insert(position, fused)
    _drop_unread(graph)


def _drop_unread(graph) -> None:
    while True:
        read = {name for node in graph.node for name in node.input} | {value.name for value in graph.output}
        unread = [node for node in graph.node if not any(name in read for name in node.output)]
        if not unread:
            return
        for node in unread:
            graph.node.remove(node)


_SUFFIX = r"(?:_\d+)?"


def _matches(node_name: str, layer: str) -> bool:
    """Whether an ONNX node name (``model_1/block_1/conv_1/Relu``) comes from the Keras layer call ``layer``
    (``block/conv``, or ``relu@2`` for a layer's second call): TensorFlow's name scopes add ``_<n>``."""
    scopes = node_name.split("/")[:-1]  # the last part is the op
    path = layer.split("@")[0].split("/")
    if len(scopes) < len(path):
        return False
    tail = scopes[len(scopes) - len(path) :]
    return all(re.fullmatch(re.escape(part) + _SUFFIX, scope) for part, scope in zip(path, tail, strict=True))


def name_relu_nodes(proto: onnx.ModelProto, layer_names: list[str]) -> None:
    """Rename each ReLU-family node to the Keras layer call it belongs to: the first unused node, in graph
    order, whose name scopes are that layer's. ConversionError when a layer has no node or a node is left."""
    constants = _Constants(proto.graph)
    relus = [node for node in proto.graph.node if relu_kind(node, constants) is not None]
    used: set[int] = set()
    for layer in layer_names:
        found = next((i for i, node in enumerate(relus) if i not in used and _matches(node.name, layer)), None)
        if found is None:
            raise ConversionError(f"no ReLU-family node of the converted graph comes from layer {layer!r}")
        used.add(found)
        relus[found].name = layer
    left = [node.name for i, node in enumerate(relus) if i not in used]
    if left:
        raise ConversionError(f"the converted graph has ReLU-family nodes no Keras layer explains: {', '.join(left)}")
