"""The sparse engine's compiler: an ONNX classifier's graph into a program of :mod:`sparsity.sparse.kernels`.

Every activation of one input lives in a buffer laid out channels last, ``(H, W, C)``. Each ONNX tensor is a
buffer plus an *index map*: an integer array of the tensor's shape (batch axis left out) whose entries are
offsets into the buffer. ``Transpose``, ``Reshape``, ``Flatten``, ``Squeeze``, ``Unsqueeze`` and ``Identity``
only rearrange the map, so they cost nothing at run time; a convolution or a pooling step that needs its input
in ``(H, W, C)`` order gets a ``PERMUTE`` step only when the map is not already that order; a dense layer takes
any one-to-one map (its weight rows are put in buffer order instead).

Folded at compile time: a bias ``Add``, a ``Mul``/``Div``/``Sub`` by a per-channel constant and a
``BatchNormalization`` into the convolution or dense layer before them (when nothing else reads that layer's
output); the ReLU family (``Relu``, ``Clip(0, max)``, ``Max(x, 0)``, ``ThresholdedRelu``) and a residual ``Add``
into the step that computes their input, where the counting happens too. Shape arithmetic (``Shape``,
``Gather``, ``Concat`` ... on integer tensors, as tf2onnx writes for a ``Flatten``) is not run at all: every
tensor's shape is read once from ONNX Runtime.

An operator outside this list raises :class:`SparseUnsupported` naming it; the model then keeps its engine.

**Compaction** (:func:`compact`): a probed layer's units that never fired on the calibration set are removed
from the step that computes them and from the weights of every step that reads them. A removed unit is
reported as never on, so the counts keep every original unit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from sparsity.sparse import kernels as K

SHAPE_OPS = frozenset({"Shape", "Gather", "Cast", "Slice", "Concat", "Unsqueeze", "Squeeze", "Constant", "Size"})
LAYOUT_OPS = frozenset({"Identity", "Dropout", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze"})
SUPPORTED = sorted(
    LAYOUT_OPS
    | {"Conv", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "BatchNormalization", "Relu", "Clip", "Max"}
    | {"ThresholdedRelu", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Softmax"}
)
"""The operators a program can hold (besides shape arithmetic on integer tensors)."""


class SparseUnsupported(ValueError):
    """A graph the sparse engine cannot run: one line naming the operator or the case."""


@dataclass(eq=False)
class Buffer:
    """One activation tensor of one input, ``(h, w, c)`` channels last."""

    h: int
    w: int
    c: int
    offset: int = -1
    base: Buffer | None = None  # the same memory seen with another (h, w, c)

    @property
    def size(self) -> int:
        return self.h * self.w * self.c


@dataclass(eq=False)
class Step:
    op: int
    src: Buffer | None
    dst: Buffer
    res: Buffer | None = None
    ints: dict = field(default_factory=dict)  # kh, kw, sh, sw, pt, pl, dh, dw, groups, extra
    weights: np.ndarray | None = None  # CONV: [kh, kw, cin, cout / groups]; AFFINE: scale (c,)
    bias: np.ndarray | None = None
    act: int = K.NONE
    param: float = 0.0
    layer: int = -1
    unit_map: np.ndarray | None = None  # channel -> original unit, after compaction
    index: np.ndarray | None = None  # PERMUTE: dst[j] = src[index[j]]
    folded: bool = True  # a CONV/AFFINE whose output no other step has read yet (bias, scale, activation may fold)


@dataclass
class Tensor:
    buffer: Buffer
    index: np.ndarray  # per-item shape, offsets into buffer


def hwc_index(h: int, w: int, c: int) -> np.ndarray:
    """The map of a (c, h, w) tensor held channels last."""
    return np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1)


def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _spatial_padding(attrs: dict, h: int, w: int, kernel, strides, dilations) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) from ``pads`` or ``auto_pad``."""
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        pads = list(attrs.get("pads", [0] * 4))
        return pads[0], pads[1], pads[2], pads[3]
    if auto == "VALID":
        return 0, 0, 0, 0
    out = []
    for size, k, s, d in zip((h, w), kernel, strides, dilations, strict=True):
        total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
        out.append((total // 2, total - total // 2) if auto == "SAME_UPPER" else (total - total // 2, total // 2))
    return out[0][0], out[1][0], out[0][1], out[1][1]


class Compiler:
    def __init__(self, model: onnx.ModelProto, shapes: dict, values: dict, probed: dict[str, int]) -> None:
        self.model = model
        self.shapes = shapes  # tensor -> per-item shape, for every batch tensor (float data)
        self.values = values  # tensor -> value, for tensors with no batch axis (weights, constants, shape arithmetic)
        self.probed = probed  # ReLU-family output tensor -> its layer index
        self.tensors: dict[str, Tensor] = {}
        self.steps: list[Step] = []
        self.producer: dict[int, Step] = {}  # id(buffer) -> the step writing it
        self.readers: dict[str, int] = {}
        for node in model.graph.node:
            for name in node.input:
                self.readers[name] = self.readers.get(name, 0) + 1
        for out in model.graph.output:
            self.readers[out.name] = self.readers.get(out.name, 0) + 1
        self.layer_steps: dict[int, Step] = {}
        self.softmax = False

    # -- helpers
    def const(self, name: str, node: onnx.NodeProto) -> np.ndarray:
        if name in self.values:
            return np.asarray(self.values[name])
        raise SparseUnsupported(
            f"{node.op_type} node {node.name or node.output[0]!r}: operand {name!r} varies per input"
        )

    def add_step(self, step: Step) -> Step:
        if step.src is not None and id(step.src) in self.producer:
            self.producer[id(step.src)].folded = False
        if step.res is not None and id(step.res) in self.producer:
            self.producer[id(step.res)].folded = False
        self.steps.append(step)
        self.producer[id(step.dst)] = step
        return step

    def hwc(self, tensor: Tensor, node: onnx.NodeProto) -> tuple[Buffer, int, int, int]:
        """The tensor as a channels-last buffer (c, h, w from its shape), with a PERMUTE step when needed."""
        shape = tensor.index.shape
        if len(shape) == 2:
            c, h, w = shape[0], 1, shape[1]
        elif len(shape) == 3:
            c, h, w = shape
        else:
            raise SparseUnsupported(
                f"{node.op_type} node {node.name!r}: input of rank {len(shape) + 1}; 1-D and 2-D only"
            )
        wanted = hwc_index(h, w, c)
        flat = tensor.index.reshape(c, h, w)
        b = tensor.buffer
        if b.size == h * w * c and np.array_equal(flat, wanted):
            return (b if (b.h, b.w, b.c) == (h, w, c) else Buffer(h, w, c, base=b)), c, h, w
        out = Buffer(h, w, c)
        index = np.empty(h * w * c, dtype=np.int64)
        index[wanted.ravel()] = flat.ravel()
        self.add_step(Step(K.PERMUTE, b, out, index=index))
        return out, c, h, w

    def dense_input(self, tensor: Tensor, node: onnx.NodeProto) -> tuple[Buffer, np.ndarray]:
        """A (K,) tensor's buffer and, for each buffer offset, the row of the weights it meets."""
        flat = tensor.index.ravel()
        b = tensor.buffer
        if len(flat) != b.size or not np.array_equal(np.sort(flat), np.arange(b.size)):
            out = Buffer(1, 1, len(flat))
            self.add_step(Step(K.PERMUTE, b, out, index=flat.astype(np.int64)))
            return out, np.arange(len(flat))
        rows = np.empty(len(flat), dtype=np.int64)
        rows[flat] = np.arange(len(flat))
        return b, rows

    def output_tensor(self, name: str, buffer: Buffer, index: np.ndarray, node: onnx.NodeProto) -> None:
        if tuple(index.shape) != tuple(self.shapes.get(name, index.shape)):
            raise SparseUnsupported(
                f"{node.op_type} node {node.name!r}: computed shape {index.shape} is not ONNX Runtime's "
                f"{self.shapes[name]}"
            )
        self.tensors[name] = Tensor(buffer, index)

    def foldable(self, name: str) -> Step | None:
        """The CONV/AFFINE/ADD step that produced tensor ``name`` when a following per-channel step may fold into it:
        nothing else reads the tensor, the step has no activation yet, and the tensor is its whole output in order."""
        tensor = self.tensors[name]
        step = self.producer.get(id(tensor.buffer))
        if step is None or not step.folded or step.act != K.NONE or self.readers.get(name, 0) != 1:
            return None
        if step.op not in (K.CONV, K.AFFINE, K.ADD):
            return None
        return step

    @staticmethod
    def channel_order(tensor: Tensor) -> np.ndarray | None:
        """The buffer channel of each index along the tensor's channel axis (its first per-item axis), or None
        when that axis is not the buffer's channels."""
        index, c = tensor.index, tensor.buffer.c
        if index.ndim == 0 or index.shape[0] != c:
            return None
        order = np.moveaxis(index, 0, -1).reshape(-1, c)
        channels = order % c
        if not (channels == channels[0]).all():
            return None
        return channels[0]

    def channel_vector(self, value: np.ndarray, tensor: Tensor) -> np.ndarray | None:
        """A constant that broadcasts over ``tensor`` per channel, as a (c,) vector in buffer order, else None."""
        shape = tensor.index.shape
        value = np.asarray(value, dtype=np.float64)
        c = tensor.buffer.c
        if value.size == 1:
            return np.full(c, float(value.ravel()[0]))
        order = self.channel_order(tensor)
        if order is None or value.ndim > len(shape) + 1:
            return None
        try:
            full = np.broadcast_to(value.reshape((1,) * (len(shape) + 1 - value.ndim) + value.shape), (1, *shape))[0]
        except ValueError:
            return None
        per = np.moveaxis(full, 0, -1).reshape(-1, shape[0])
        if not (per == per[0]).all():
            return None
        vector = np.empty(c)
        vector[order] = per[0]
        return vector

    # -- the walk
    def compile(self, input_name: str, item_shape: tuple[int, ...], output_name: str) -> None:
        size = int(np.prod(item_shape))
        self.input = Buffer(1, 1, size)
        self.tensors[input_name] = Tensor(self.input, np.arange(size).reshape(item_shape))
        for node in self.model.graph.node:
            data = [name for name in node.input if name in self.tensors]
            if not data or not any(
                out in self.shapes for out in node.output
            ):  # shape arithmetic, constants: read from ONNX Runtime's values when needed
                if node.op_type not in SHAPE_OPS:
                    raise SparseUnsupported(f"operator {node.op_type} (node {node.name!r}) outside the program")
                continue
            handler = getattr(self, f"op_{node.op_type}", None)
            if handler is None or node.domain not in ("", "ai.onnx"):
                raise SparseUnsupported(f"operator {node.op_type} (node {node.name!r})")
            handler(node)
        if output_name not in self.tensors:
            raise SparseUnsupported(f"output {output_name!r} is not computed from the input")
        out = self.tensors[output_name]
        if out.index.ndim != 1:
            raise SparseUnsupported(f"output {output_name!r} has shape {out.index.shape}; (classes,) expected")
        b = out.buffer
        if not np.array_equal(out.index, np.arange(b.size)):
            flat = Buffer(1, 1, out.index.size)
            self.add_step(Step(K.PERMUTE, b, flat, index=out.index.astype(np.int64)))
            b = flat
        self.output = b

    # layout only
    def op_Identity(self, node):
        self.tensors[node.output[0]] = self.tensors[node.input[0]]

    op_Dropout = op_Identity

    def _reshaped(self, node):
        t = self.tensors[node.input[0]]
        shape = self.shapes[node.output[0]]
        if int(np.prod(shape)) != t.index.size:
            raise SparseUnsupported(f"{node.op_type} node {node.name!r} mixes items of the batch")
        self.output_tensor(node.output[0], t.buffer, t.index.reshape(shape), node)

    op_Reshape = op_Flatten = op_Squeeze = op_Unsqueeze = _reshaped

    def op_Transpose(self, node):
        t = self.tensors[node.input[0]]
        perm = _attributes(node).get("perm", list(range(t.index.ndim, -1, -1)))
        if perm[0] != 0:
            raise SparseUnsupported(f"Transpose node {node.name!r} moves the batch axis")
        self.output_tensor(node.output[0], t.buffer, t.index.transpose([p - 1 for p in perm[1:]]), node)

    # arithmetic
    def op_Conv(self, node):
        attrs = _attributes(node)
        t = self.tensors[node.input[0]]
        src, c, h, w = self.hwc(t, node)
        kernel = self.const(node.input[1], node).astype(np.float64)
        if kernel.ndim == 3:  # 1-D convolution as a 1 x L one
            kernel = kernel[:, :, None, :]
            one_d = True
        elif kernel.ndim == 4:
            one_d = False
        else:
            raise SparseUnsupported(f"Conv node {node.name!r}: {kernel.ndim - 2}-D kernels; 1-D and 2-D only")
        cout, cin_g, kh, kw = kernel.shape
        groups = int(attrs.get("group", 1))
        if cin_g * groups != c:
            raise SparseUnsupported(f"Conv node {node.name!r}: {c} input channels for {groups} groups of {cin_g}")

        def pair(key, default):
            v = list(attrs.get(key, [default] * (1 if one_d else 2)))
            return [default, *v] if one_d else v

        strides, dilations = pair("strides", 1), pair("dilations", 1)
        if one_d and "pads" in attrs:
            attrs = {**attrs, "pads": [0, attrs["pads"][0], 0, attrs["pads"][1]]}
        pt, pl, pb, pr = _spatial_padding(attrs, h, w, (kh, kw), strides, dilations)
        ho = (h + pt + pb - dilations[0] * (kh - 1) - 1) // strides[0] + 1
        wo = (w + pl + pr - dilations[1] * (kw - 1) - 1) // strides[1] + 1
        cout_g = cout // groups
        # [kh, kw, ci, cout_g]: ci's group's output channels
        laid = np.empty((kh, kw, c, cout_g))
        for g in range(groups):
            block = kernel[g * cout_g : (g + 1) * cout_g]  # (cout_g, cin_g, kh, kw)
            laid[:, :, g * cin_g : (g + 1) * cin_g] = block.transpose(2, 3, 1, 0)
        bias = self.const(node.input[2], node).astype(np.float64) if len(node.input) > 2 and node.input[2] else None
        dst = Buffer(ho, wo, cout)
        ints = dict(kh=kh, kw=kw, sh=strides[0], sw=strides[1], pt=pt, pl=pl, dh=dilations[0], dw=dilations[1])
        self.add_step(Step(K.CONV, src, dst, ints={**ints, "groups": groups}, weights=laid, bias=bias))
        index = hwc_index(ho, wo, cout)
        self.output_tensor(node.output[0], dst, index[:, 0, :] if one_d else index, node)

    def _dense(self, node, matrix: np.ndarray, bias: np.ndarray | None):
        t = self.tensors[node.input[0]]
        if t.index.ndim != 1:
            raise SparseUnsupported(
                f"{node.op_type} node {node.name!r}: input of shape {t.index.shape}; (features,) only"
            )
        src, rows = self.dense_input(t, node)
        m = matrix.shape[1]
        laid = matrix[rows].reshape(1, 1, src.size, m)
        dst = Buffer(1, 1, m)
        ints = dict(kh=1, kw=1, sh=1, sw=1, pt=0, pl=0, dh=1, dw=1, groups=1)
        # a dense step reads its input buffer as one vector, whatever its (h, w, c)
        self.add_step(Step(K.CONV, src, dst, ints={**ints, "flat_input": 1}, weights=laid, bias=bias))
        self.output_tensor(node.output[0], dst, np.arange(m), node)

    def op_MatMul(self, node):
        if node.input[1] in self.tensors:
            raise SparseUnsupported(f"MatMul node {node.name!r} of two activations")
        matrix = self.const(node.input[1], node).astype(np.float64)
        if matrix.ndim != 2:
            raise SparseUnsupported(f"MatMul node {node.name!r}: a {matrix.ndim}-D weight")
        self._dense(node, matrix, None)

    def op_Gemm(self, node):
        attrs = _attributes(node)
        if attrs.get("transA", 0):
            raise SparseUnsupported(f"Gemm node {node.name!r} with transA")
        matrix = self.const(node.input[1], node).astype(np.float64) * float(attrs.get("alpha", 1.0))
        if attrs.get("transB", 0):
            matrix = matrix.T
        bias = None
        if len(node.input) > 2 and node.input[2]:
            bias = np.broadcast_to(self.const(node.input[2], node).astype(np.float64).ravel(), (matrix.shape[1],))
            bias = bias * float(attrs.get("beta", 1.0))
        self._dense(node, matrix, bias)

    def _affine(self, node, source: str, scale: np.ndarray | None, shift: np.ndarray | None):
        """``source`` times ``scale`` plus ``shift``, per channel: folded into the step before when it can be."""
        t = self.tensors[source]
        step = self.foldable(source)
        if step is not None and step.op == K.CONV:
            if scale is not None:
                step.weights = (
                    step.weights * scale[None, None, None, :] if step.ints["groups"] == 1 else _group_scale(step, scale)
                )
                step.bias = (step.bias if step.bias is not None else np.zeros(len(scale))) * scale
            if shift is not None:
                step.bias = (step.bias if step.bias is not None else np.zeros(len(shift))) + shift
            self.tensors[node.output[0]] = t
            return
        b = t.buffer
        dst = Buffer(b.h, b.w, b.c)
        s = np.ones(b.c) if scale is None else scale
        z = np.zeros(b.c) if shift is None else shift
        self.add_step(Step(K.AFFINE, b, dst, weights=s, bias=z))
        self.output_tensor(node.output[0], dst, t.index, node)

    def _binary(self, node, kind: str):
        a, b = node.input
        if a in self.tensors and b in self.tensors:
            if kind != "Add":
                raise SparseUnsupported(f"{kind} node {node.name!r} of two activations")
            return self._residual(node)
        if b in self.tensors and kind in ("Add", "Mul"):
            a, b = b, a
        if b in self.tensors:
            raise SparseUnsupported(f"{kind} node {node.name!r}: a constant {kind.lower()}ed by an activation")
        t = self.tensors[a]
        vector = self.channel_vector(self.const(b, node), t)
        if vector is None:
            raise SparseUnsupported(f"{kind} node {node.name!r}: a constant that is not per channel")
        if kind == "Add":
            self._affine(node, a, None, vector)
        elif kind == "Sub":
            self._affine(node, a, None, -vector)
        elif kind == "Mul":
            self._affine(node, a, vector, None)
        else:
            self._affine(node, a, 1.0 / vector, None)

    def op_Add(self, node):
        self._binary(node, "Add")

    def op_Sub(self, node):
        self._binary(node, "Sub")

    def op_Mul(self, node):
        self._binary(node, "Mul")

    def op_Div(self, node):
        self._binary(node, "Div")

    def _residual(self, node):
        ta, tb = (self.tensors[n] for n in node.input)
        a = self.hwc(ta, node)[0] if ta.index.ndim > 1 else ta.buffer
        b = self.hwc(tb, node)[0] if tb.index.ndim > 1 else tb.buffer
        if ta.index.ndim != tb.index.ndim or (a.h, a.w, a.c) != (b.h, b.w, b.c):
            raise SparseUnsupported(f"Add node {node.name!r}: operands of different shapes")
        if ta.index.ndim == 1 and not np.array_equal(ta.index, tb.index):
            raise SparseUnsupported(f"Add node {node.name!r}: vectors in different orders")
        # fold into the later of the two steps when it is a convolution nothing else reads
        later = max((self.producer.get(id(x)) for x in (a, b)), key=lambda s: -1 if s is None else self.steps.index(s))
        other = b if later is not None and later.dst is a else a
        name = node.input[0] if other is b else node.input[1]
        if (
            later is not None
            and later.op == K.CONV
            and later.res is None
            and self.foldable(name) is later
            and later.dst in (a, b)
        ):
            later.res = other
            if id(other) in self.producer:
                self.producer[id(other)].folded = False
            index = self.tensors[name].index
            self.output_tensor(node.output[0], later.dst, index, node)
            return
        dst = Buffer(a.h, a.w, a.c)
        self.add_step(Step(K.ADD, a, dst, res=b))
        index = hwc_index(a.h, a.w, a.c) if ta.index.ndim > 1 else np.arange(a.c)
        self.output_tensor(node.output[0], dst, index[:, 0, :] if ta.index.ndim == 2 else index, node)

    def op_BatchNormalization(self, node):
        gamma, beta, mean, var = (self.const(n, node).astype(np.float64) for n in node.input[1:5])
        epsilon = float(_attributes(node).get("epsilon", 1e-5))
        t = self.tensors[node.input[0]]
        order = self.channel_order(t)
        if order is None:
            raise SparseUnsupported(f"BatchNormalization node {node.name!r} not over the channels")
        scale = gamma / np.sqrt(var + epsilon)
        shift = beta - mean * scale
        s, z = np.empty(t.buffer.c), np.empty(t.buffer.c)
        s[order], z[order] = scale, shift
        self._affine(node, node.input[0], s, z)

    def _activation(self, node, act: int, param: float):
        source = node.input[0]
        t = self.tensors[source]
        step = self.foldable(source)
        layer = self.probed.get(node.output[0], -1)
        if step is None:
            b = t.buffer
            dst = Buffer(b.h, b.w, b.c)
            step = self.add_step(Step(K.ACT, b, dst))
            t = Tensor(dst, t.index)
        step.act, step.param, step.layer = act, param, layer
        step.folded = False
        if layer >= 0:
            self.layer_steps[layer] = step
        self.output_tensor(node.output[0], t.buffer, t.index, node)

    def op_Relu(self, node):
        self._activation(node, K.RELU, 0.0)

    def op_ThresholdedRelu(self, node):
        alpha = float(_attributes(node).get("alpha", 1.0))
        if alpha < 0:
            raise SparseUnsupported(f"ThresholdedRelu node {node.name!r} with alpha {alpha} < 0")
        self._activation(node, K.THRESHOLD, alpha)

    def op_Clip(self, node):
        attrs = _attributes(node)
        if "min" in attrs:
            low, high = attrs["min"], attrs.get("max")
        else:
            low = self.const(node.input[1], node) if len(node.input) > 1 and node.input[1] else None
            high = self.const(node.input[2], node) if len(node.input) > 2 and node.input[2] else None
        if low is None or float(np.asarray(low).ravel()[0]) != 0.0:
            raise SparseUnsupported(f"Clip node {node.name!r} with a lower bound other than 0")
        if high is None:
            return self._activation(node, K.RELU, 0.0)
        self._activation(node, K.CLIP, float(np.asarray(high).ravel()[0]))

    def op_Max(self, node):
        data = [n for n in node.input if n in self.tensors]
        others = [n for n in node.input if n not in self.tensors]
        if len(node.input) != 2 or len(data) != 1 or not np.all(self.const(others[0], node) == 0):
            raise SparseUnsupported(f"Max node {node.name!r} other than Max(x, 0)")
        node_copy = onnx.NodeProto()
        node_copy.CopyFrom(node)
        del node_copy.input[:]
        node_copy.input.append(data[0])
        self._activation(node_copy, K.RELU, 0.0)

    def _pool(self, node, op: int, global_: bool):
        attrs = _attributes(node)
        t = self.tensors[node.input[0]]
        src, c, h, w = self.hwc(t, node)
        if global_:
            kernel, strides, pads = (h, w), (1, 1), (0, 0, 0, 0)
        else:
            kernel = list(attrs["kernel_shape"])
            if len(kernel) == 1:
                kernel = [1, kernel[0]]
            strides = list(attrs.get("strides", [1] * len(kernel)))
            strides = [1, *strides] if len(strides) == 1 else strides
            if any(d != 1 for d in attrs.get("dilations", [1])):
                raise SparseUnsupported(f"{node.op_type} node {node.name!r} with dilations")
            pads = _spatial_padding(attrs, h, w, kernel, strides, (1, 1))
        ceil = int(attrs.get("ceil_mode", 0))
        rounding = (lambda a, b: -(-a // b)) if ceil else (lambda a, b: a // b)
        ho = rounding(h + pads[0] + pads[2] - kernel[0], strides[0]) + 1
        wo = rounding(w + pads[1] + pads[3] - kernel[1], strides[1]) + 1
        dst = Buffer(ho, wo, c)
        ints = dict(kh=kernel[0], kw=kernel[1], sh=strides[0], sw=strides[1], pt=pads[0], pl=pads[1])
        ints["extra"] = int(attrs.get("count_include_pad", 0))
        self.add_step(Step(op, src, dst, ints=ints))
        index = hwc_index(ho, wo, c)
        self.output_tensor(node.output[0], dst, index[:, 0, :] if t.index.ndim == 2 else index, node)

    def op_MaxPool(self, node):
        if len(node.output) > 1 and node.output[1]:
            raise SparseUnsupported(f"MaxPool node {node.name!r} with an indices output")
        self._pool(node, K.MAXPOOL, False)

    def op_AveragePool(self, node):
        self._pool(node, K.AVGPOOL, False)

    def op_GlobalAveragePool(self, node):
        self._pool(node, K.AVGPOOL, True)

    def op_GlobalMaxPool(self, node):
        self._pool(node, K.MAXPOOL, True)

    def op_Softmax(self, node):
        t = self.tensors[node.input[0]]
        axis = _attributes(node).get("axis", -1)
        if t.index.ndim != 1 or axis not in (1, -1):
            raise SparseUnsupported(f"Softmax node {node.name!r} other than over the classes of a (N, classes) output")
        if self.readers.get(node.output[0], 0) != 1 or node.output[0] not in {o.name for o in self.model.graph.output}:
            raise SparseUnsupported(f"Softmax node {node.name!r} inside the network; only as the output")
        self.softmax = True
        self.tensors[node.output[0]] = t


def _group_scale(step: Step, scale: np.ndarray) -> np.ndarray:
    groups, cout_g = step.ints["groups"], step.weights.shape[3]
    cin_g = step.weights.shape[2] // groups
    out = step.weights.copy()
    for g in range(groups):
        out[:, :, g * cin_g : (g + 1) * cin_g] *= scale[g * cout_g : (g + 1) * cout_g][None, None, None, :]
    return out
