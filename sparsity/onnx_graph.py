"""ONNX classifiers: the audit of a file, its ReLU-family tensors, and the counting copy of its graph.

Only the ``onnx`` package, no ONNX Runtime and no TensorFlow: the service's supervising process audits
files with this before any worker starts. Nothing in a file is ever executed by the audit; ONNX has no
code in it except custom operators, which are refused (only the standard domains run), and tensors in
external files, which are refused too (a path in a model could point anywhere).

**What is probed.** ``Relu``; ``Clip`` whose lower bound is the constant 0 (ReLU6 and other capped
ReLUs); ``Max(x, 0)`` with a constant all-zero operand; ``ThresholdedRelu`` with ``alpha >= 0`` (FATReLU).
Each is named by its node name, or its output's name when the node has none. Local functions are
inlined first, so their ReLUs are counted like the main graph's. Other activations (``Gelu``, ``Sigmoid``,
``LeakyRelu``, ...) are listed as ``not_probed``, and so is a ReLU inside an ``If``/``Loop``/``Scan``
body: such a tensor exists once per branch taken or iteration, not once per input.

**Units** (:data:`UNIT_CONVENTION`): axis 1 of a tensor of rank 2 (dense: the last axis) or of a
convolution's output (NCHW, NCL, NCDHW: the channel axis); the last axis of any other tensor of rank 3
or more (a dense layer applied along a sequence). A tensor counts as a convolution's output when a
``Conv``/``ConvTranspose`` reaches it through element-wise steps and normalisation only.

**The counting copy** (:func:`counting_model`): for every probed tensor ``T``, ``T != 0`` (ReLU-family
outputs are never negative: true where on, false where off) summed over every axis but the batch and the
units gives each unit's on-count (for a convolution, one integer matrix product with a column of ones);
these are concatenated into one ``(N, units)`` tensor scaled by the positions per unit (:data:`SHARES`,
each unit's share of positions on), and their per-layer sums into one ``(N, layers)`` tensor
(:data:`NONZERO`). ONNX Runtime computes them in the same run as the class scores and returns only those
small tensors. The counting copy runs without ONNX Runtime's layout optimisations (see
:class:`sparsity.onnx_probe.OnnxProbe`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sparsity.contract import ALL_LAYERS

STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
OPSETS = (9, 28)
"""The ``ai.onnx`` opsets served: ONNX Runtime 1.32 runs 7 to 28; counting needs ``Cast`` to bool (opset 9)."""
UNIT_CONVENTION = (
    "units: axis 1 of a (N, units) tensor and of a convolution's output (NCHW, NCL, NCDHW: channels); the last "
    "axis of any other tensor; size: the activations one input produces there"
)
NONZERO = "sparsity.nonzero"
SHARES = "sparsity.shares"
PROBABILITIES = "sparsity.probabilities"
OTHER_ACTIVATIONS = frozenset(
    {
        "Gelu",
        "Sigmoid",
        "Tanh",
        "LeakyRelu",
        "PRelu",
        "Elu",
        "Selu",
        "Celu",
        "Softplus",
        "Softsign",
        "HardSigmoid",
        "HardSwish",
        "Mish",
        "Swish",
        "Erf",
    }
)
"""Hidden activations without exact zeros (``Erf`` is how older exports spell GELU)."""
CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})
PASS_THROUGH = frozenset(
    {"Add", "Sub", "Mul", "Div", "BatchNormalization", "InstanceNormalization", "Identity", "Dropout", "Relu", "Clip"}
)
"""Steps that keep a convolution's channel axis where it was (for the unit convention)."""
FLOAT_TYPES = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64, TensorProto.FLOAT16: np.float16}


class OnnxModelError(ValueError):
    """A file that is not a servable ONNX classifier: one line that says why."""


@dataclass(frozen=True)
class ProbedTensor:
    """One ReLU-family node's output: ``units`` along ``axis``, ``size`` activations per input."""

    name: str
    tensor: str
    op: str
    units: int = 0
    size: int = 0
    axis: int = 1  # in the batched tensor: 1, or its last axis
    rank: int = 0  # axes per input (the batch axis not counted)


@dataclass(frozen=True)
class NotProbed:
    """A hidden activation that is not counted: no exact zeros, or inside a control-flow body."""

    name: str
    activation: str


@dataclass(frozen=True)
class Survey:
    """What the graph holds, before any shape is known."""

    probed: list[ProbedTensor]
    not_probed: list[NotProbed]
    input_name: str
    item_shape: tuple[int, ...]
    fixed_batch: int | None  # the batch size the input is fixed at, or None when it is free
    input_type: type
    output_name: str
    opset: int


def load(path: Path | str) -> onnx.ModelProto:
    """The model in ``path``, checked (:func:`problems`); OnnxModelError with the first problem."""
    model, found = _read(Path(path))
    if found:
        raise OnnxModelError(found[0])
    return model


def problems(path: Path | str) -> list[str]:
    """Why the file at ``path`` cannot be served (empty when it can), without running anything."""
    return _read(Path(path))[1]


def _read(path: Path) -> tuple[onnx.ModelProto | None, list[str]]:
    try:
        model = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        return None, [f"{path}: no such file"]
    except Exception as exc:  # protobuf's DecodeError and friends
        return None, [f"{path.name} is not an ONNX model ({type(exc).__name__}: {_first_line(exc)})"]
    return model, model_problems(model, path.name)


def model_problems(model: onnx.ModelProto, what: str = "the model") -> list[str]:
    found = []
    external = [t.name for t in _all_initializers(model) if t.data_location == TensorProto.EXTERNAL]
    if external:
        found.append(f"{what} keeps tensors in external files ({external[0]}, ...); save it as one file")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx.checker.ValidationError, or a model too odd to check
        found.append(f"{what} is not valid ONNX (onnx.checker: {_first_line(exc)})")
        return found
    local = {f.domain for f in model.functions}
    custom = sorted({n.domain for n in _all_nodes(model) if n.domain not in STANDARD_DOMAINS | local})
    if custom:
        found.append(f"{what} uses custom operator domains {custom}: only the standard ONNX operators are served")
    version = opset_of(model)
    if version is None or not OPSETS[0] <= version <= OPSETS[1]:
        found.append(
            f"{what} has ai.onnx opset {version}; ONNX Runtime here runs opsets {OPSETS[0]} to {OPSETS[1]} "
            "(export again with opset 17, say)"
        )
    return found


def opset_of(model: onnx.ModelProto) -> int | None:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    return versions[0] if versions else None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _subgraphs(node: onnx.NodeProto):
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            yield attribute.g
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            yield from attribute.graphs


def _graph_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for sub in _subgraphs(node):
            yield from _graph_nodes(sub)


def _all_nodes(model: onnx.ModelProto):
    yield from _graph_nodes(model.graph)
    for function in model.functions:
        for node in function.node:
            yield node
            for sub in _subgraphs(node):
                yield from _graph_nodes(sub)


def _all_initializers(model: onnx.ModelProto):
    def walk(graph):
        yield from graph.initializer
        for node in graph.node:
            for sub in _subgraphs(node):
                yield from walk(sub)

    yield from walk(model.graph)


def inline(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its local functions expanded into the main graph (a copy when it has any)."""
    if not model.functions:
        return model
    import onnx.inliner

    return onnx.inliner.inline_local_functions(model)


class _Constants:
    """The graph's constant tensors by name: initializers and ``Constant`` nodes' outputs."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.values = {t.name: t for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                for attribute in node.attribute:
                    if attribute.name == "value":
                        self.values[node.output[0]] = attribute.t

    def get(self, name: str) -> np.ndarray | None:
        tensor = self.values.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)

    def is_zero(self, name: str) -> bool:
        value = self.get(name)
        return value is not None and value.size > 0 and value.size <= 1 and np.all(value == 0)


def relu_kind(node: onnx.NodeProto, constants: _Constants) -> str | None:
    """The node's op as a ReLU-family name (``Relu``, ``Clip(0, 6)``, ``Max(x, 0)``, ...), else None."""
    if node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type == "Relu":
        return "Relu"
    if node.op_type == "Clip":
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if "min" in attributes:  # opset < 11
            low, high = attributes["min"], attributes.get("max")
        else:
            low = constants.get(node.input[1]) if len(node.input) > 1 and node.input[1] else None
            high = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if low is not None and np.size(low) == 1 and float(np.asarray(low).ravel()[0]) == 0.0:
            cap = "" if high is None else f", {float(np.asarray(high).ravel()[0]):g}"
            return f"Clip(0{cap})"
        return None
    if node.op_type == "Max" and len(node.input) == 2:
        if any(constants.is_zero(name) for name in node.input):
            return "Max(x, 0)"
        return None
    if node.op_type == "ThresholdedRelu":
        alpha = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "alpha"), 1.0)
        return f"ThresholdedRelu({alpha:g})" if alpha >= 0 else None
    return None


def _type_of(value_info: onnx.ValueInfoProto) -> tuple[int, list]:
    tensor = value_info.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    return tensor.elem_type, dims


def survey(model: onnx.ModelProto) -> Survey:
    """The probed tensors (no shapes yet), the activations not probed, and the input and output."""
    model = inline(model)
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise OnnxModelError(f"the model has {len(inputs)} inputs ({names}); one input is served")
    elem, dims = _type_of(inputs[0])
    if elem not in FLOAT_TYPES:
        kind = TensorProto.DataType.Name(elem) if elem else "not a tensor"
        raise OnnxModelError(f"input {inputs[0].name!r} is {kind}; the served input is a float tensor")
    if len(dims) < 2 or any(d is None for d in dims[1:]):
        raise OnnxModelError(
            f"input {inputs[0].name!r} has shape {_shape_text(dims)}; every dimension but the batch must be fixed"
        )
    fixed = dims[0]
    if fixed is not None and fixed != 1:
        raise OnnxModelError(
            f"input {inputs[0].name!r} has its batch dimension fixed at {fixed}; export with a free batch axis "
            "(torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}}))"
        )
    scores = [o for o in graph.output if _type_of(o)[0] in FLOAT_TYPES]
    if len(scores) != 1:
        listed = ", ".join(f"{o.name} ({_type_name(o)})" for o in graph.output)
        raise OnnxModelError(
            f"the model's outputs are {listed}; a classifier has one float output of class scores (batch, classes) "
            "(integer label outputs may sit beside it; scikit-learn: convert with options={'zipmap': False})"
        )
    constants = _Constants(graph)
    probed, not_probed = [], []
    producers = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        kind = relu_kind(node, constants)
        name = node.name or node.output[0]
        if kind is not None:
            probed.append(ProbedTensor(name=name, tensor=node.output[0], op=kind, axis=_unit_axis(node, producers)))
        elif node.op_type in OTHER_ACTIVATIONS and node.domain in ("", "ai.onnx"):
            not_probed.append(NotProbed(name, node.op_type))
        elif node.op_type in CONTROL_FLOW:
            for sub in _subgraphs(node):
                inner = _Constants(sub)
                for child in _graph_nodes(sub):
                    other = child.op_type if child.op_type in OTHER_ACTIVATIONS else None
                    child_kind = relu_kind(child, inner) or other
                    if child_kind:
                        inner_name = f"{name}/{child.name or child.output[0]}"
                        not_probed.append(NotProbed(inner_name, f"{child_kind} inside {node.op_type}"))
    # a name must be unique and not the overall entry's ("all"): else the output's (unique in a valid graph)
    counts = Counter(p.name for p in probed)
    probed = [
        p if counts[p.name] == 1 and p.name != ALL_LAYERS else ProbedTensor(p.tensor, p.tensor, p.op, axis=p.axis)
        for p in probed
    ]
    return Survey(
        probed=probed,
        not_probed=not_probed,
        input_name=inputs[0].name,
        item_shape=tuple(int(d) for d in dims[1:]),
        fixed_batch=fixed,
        input_type=FLOAT_TYPES[elem],
        output_name=scores[0].name,
        opset=opset_of(model) or 0,
    )


def _type_name(value_info: onnx.ValueInfoProto) -> str:
    field = value_info.type.WhichOneof("value")
    if field != "tensor_type":
        return field or "unknown"
    elem, dims = _type_of(value_info)
    return f"{TensorProto.DataType.Name(elem).lower()} {_shape_text(dims)}"


def _shape_text(dims: list) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


def _unit_axis(node: onnx.NodeProto, producers: dict) -> int:
    """1 when a convolution's output reaches ``node`` through pass-through steps, else -1 (decided once the
    rank is known: for rank 2 both are the same axis)."""
    seen, frontier = set(), [node]
    while frontier:
        current = frontier.pop()
        for name in current.input:  # weights and constants have no producer
            producer = producers.get(name)
            if producer is None or id(producer) in seen:
                continue
            seen.add(id(producer))
            if producer.op_type in ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv"):
                return 1
            if producer.op_type in PASS_THROUGH or relu_kind(producer, _NO_CONSTANTS) is not None:
                frontier.append(producer)
    return -1


class _NoConstants(_Constants):
    def __init__(self) -> None:
        self.values = {}


_NO_CONSTANTS = _NoConstants()


def with_outputs(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also returns ``tensors`` (any type and shape): the slow, independent way to see
    intermediate activations, used to learn their shapes and to check the in-graph counts."""
    copy = onnx.ModelProto()
    copy.CopyFrom(inline(model))
    present = {o.name for o in copy.graph.output}
    copy.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in tensors if t not in present)
    return copy


def with_shapes(found: Survey, shapes: dict[str, tuple[int, ...]]) -> list[ProbedTensor]:
    """The probed tensors with units, size and axis from their shapes per input (batch axis removed)."""
    sized = []
    for p in found.probed:
        shape = shapes[p.tensor]
        if len(shape) == 0:
            raise OnnxModelError(f"ReLU-family node {p.name!r} gives one value per input; nothing to count")
        axis = 1 if len(shape) == 1 or p.axis == 1 else len(shape)
        units, size = int(shape[axis - 1]), int(np.prod(shape))
        sized.append(ProbedTensor(p.name, p.tensor, p.op, units=units, size=size, axis=axis, rank=len(shape)))
    return sized


def counting_model(
    model: onnx.ModelProto, found: Survey, probed: list[ProbedTensor], *, softmax: bool
) -> onnx.ModelProto:
    """A copy of ``model`` whose outputs are the class probabilities (:data:`PROBABILITIES`, the softmax of
    the scores when ``softmax``), :data:`NONZERO` (N, layers) and :data:`SHARES` (N, units), all float32."""
    copy = onnx.ModelProto()
    copy.CopyFrom(inline(model))
    graph = copy.graph
    axes_as_input = found.opset >= 13
    nodes, initializers = [], []

    def const(name: str, value: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(value, name))
        return name

    def reduce_sum(source: str, out: str, axes: list[int], keepdims: int) -> None:
        if axes_as_input:
            axes_name = const(f"{out}.axes", np.asarray(axes, dtype=np.int64))
            nodes.append(helper.make_node("ReduceSum", [source, axes_name], [out], keepdims=keepdims))
        else:
            nodes.append(helper.make_node("ReduceSum", [source], [out], axes=axes, keepdims=keepdims))

    on_counts = []
    for i, p in enumerate(probed):
        prefix = f"sparsity.{i}"
        # T != 0, exact for any float type (float16 and float64 too), counted per unit in int32. For a
        # convolution's output, one integer matrix product: (N * units, positions) uint8 times a column of ones.
        # Measured at 256 images of mnist_cnn's first ReLU (3M activations), one thread, per-channel counts:
        # Sign then ReduceSum 5.5-7.5 ms (ONNX Runtime's Sign is a scalar loop), Greater, Cast and ReduceSum
        # 3.0-3.5, two Casts and ReduceSum 2.3, two Casts and MatMulInteger 1.5.
        nodes.append(helper.make_node("Cast", [p.tensor], [f"{prefix}.on_bool"], to=TensorProto.BOOL))
        others = [a for a in range(1, p.rank + 1) if a != p.axis]
        if others and p.axis == 1 and found.opset >= 10:  # MatMulInteger is an operator from opset 10
            positions = p.size // p.units
            nodes.append(helper.make_node("Cast", [f"{prefix}.on_bool"], [f"{prefix}.on_u8"], to=TensorProto.UINT8))
            rows = const(f"{prefix}.rows", np.array([-1, positions], dtype=np.int64))
            nodes.append(helper.make_node("Reshape", [f"{prefix}.on_u8", rows], [f"{prefix}.rows_u8"]))
            ones = const(f"{prefix}.ones", np.ones((positions, 1), dtype=np.uint8))
            nodes.append(helper.make_node("MatMulInteger", [f"{prefix}.rows_u8", ones], [f"{prefix}.on_rows"]))
            units = const(f"{prefix}.units", np.array([-1, p.units], dtype=np.int64))
            nodes.append(helper.make_node("Reshape", [f"{prefix}.on_rows", units], [f"{prefix}.on"]))
        else:
            nodes.append(helper.make_node("Cast", [f"{prefix}.on_bool"], [f"{prefix}.on_i32"], to=TensorProto.INT32))
            if others:
                reduce_sum(f"{prefix}.on_i32", f"{prefix}.on", others, 0)
            else:
                nodes[-1].output[0] = f"{prefix}.on"
        on_counts.append(f"{prefix}.on")
    # every unit's count in one tensor; its shares, and each layer's total as one product with a 0/1 matrix
    # that picks the layer's units (fewer nodes: each costs a few microseconds on a one-image request)
    sizes = [(p.units, p.size) for p in probed]
    positions = np.concatenate([np.full(units, units / size) for units, size in sizes]).astype(np.float32)
    layer_of = np.repeat(np.arange(len(probed)), [units for units, _ in sizes])
    picks = (layer_of[:, None] == np.arange(len(probed))[None, :]).astype(np.float32)
    nodes.append(helper.make_node("Concat", on_counts, ["sparsity.on_i32"], axis=1))
    nodes.append(helper.make_node("Cast", ["sparsity.on_i32"], ["sparsity.on"], to=TensorProto.FLOAT))
    nodes.append(helper.make_node("Mul", ["sparsity.on", const("sparsity.inverse_positions", positions)], [SHARES]))
    nodes.append(helper.make_node("MatMul", ["sparsity.on", const("sparsity.layer_picks", picks)], [NONZERO]))
    nodes.append(helper.make_node("Cast", [found.output_name], ["sparsity.scores"], to=TensorProto.FLOAT))
    scores = "sparsity.scores"
    nodes.append(
        helper.make_node("Softmax", [scores], [PROBABILITIES], axis=1)
        if softmax
        else helper.make_node("Identity", [scores], [PROBABILITIES])
    )
    graph.node.extend(nodes)
    graph.initializer.extend(initializers)
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, None),
            helper.make_tensor_value_info(NONZERO, TensorProto.FLOAT, None),
            helper.make_tensor_value_info(SHARES, TensorProto.FLOAT, None),
        ]
    )
    return copy


def weight_sparsity(model: onnx.ModelProto) -> dict[str, float]:
    """Fraction of exact zeros of every weight initializer (two or more axes: kernels and matrices, not biases)."""
    result = {}
    for tensor in model.graph.initializer:
        if len(tensor.dims) >= 2 and tensor.data_type in FLOAT_TYPES:
            values = numpy_helper.to_array(tensor)
            result[tensor.name] = float(np.mean(values == 0))
    return result
