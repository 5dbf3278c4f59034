"""The sparse engine: a compiled program (:mod:`sparsity.sparse.program`) run by the kernels
(:mod:`sparsity.sparse.kernels`), with the ONNX probe's interface (``run`` gives a
:class:`~sparsity.result.ProbeResult`), so registration, the runtimes and the metrics take it as they take
ONNX Runtime.

:class:`SparseProbe` compiles an ONNX classifier for its probed ReLU-family tensors and compacts it: the units that
can never fire on an input in the card's range (:mod:`sparsity.sparse.bounds`) leave the program.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np
import onnx

from sparsity.onnx_graph import ProbedTensor, inline, survey, with_outputs
from sparsity.result import ProbeResult, from_counts, in_chunks
from sparsity.sparse import kernels as K
from sparsity.sparse.bounds import provably_dead
from sparsity.sparse.program import Buffer, Compiler, SparseUnsupported, Step
from sparsity.validation import check_batch

ENGINE = "sparse"


def observed_shapes(model: onnx.ModelProto, input_name: str, item_shape, input_type) -> tuple[dict, dict]:
    """Every tensor's shape per input (those with a batch axis) and the values of those without one, from two
    ONNX Runtime runs (batch 1 and 2) of the unoptimised graph."""
    from sparsity.onnx_probe import session

    names = [o for node in model.graph.node for o in node.output if o]
    runner = session(with_outputs(model, names), layout_optimizations=False)
    outputs = [o.name for o in runner.get_outputs()]
    shapes, values = {}, {}
    runs = []
    for n in (1, 2):
        x = np.zeros((n, *item_shape), dtype=input_type)
        runs.append(dict(zip(outputs, runner.run(outputs, {input_name: x}), strict=True)))
    for name in outputs:
        one, two = np.asarray(runs[0][name]), np.asarray(runs[1][name])
        if (
            one.ndim >= 1
            and two.ndim == one.ndim
            and one.shape[:1] == (1,)
            and two.shape[:1] == (2,)
            and one.shape[1:] == two.shape[1:]
        ):
            shapes[name] = one.shape[1:]
        elif one.shape == two.shape and np.array_equal(one, two):
            values[name] = one
    for tensor in model.graph.initializer:
        values[tensor.name] = onnx.numpy_helper.to_array(tensor)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    values[node.output[0]] = onnx.numpy_helper.to_array(attribute.t)
    return shapes, values


class Program:
    """A compiled program's arrays, ready for :func:`sparsity.sparse.kernels.run`."""

    def __init__(
        self, compiler: Compiler, layers: list[ProbedTensor], classes: int, level: str | None = "best"
    ) -> None:
        self.layers = layers
        self.classes = classes
        self.softmax = compiler.softmax
        steps = compiler.steps
        unit_starts = np.concatenate([[0], np.cumsum([p.units for p in layers])])
        buffers: list[Buffer] = [compiler.input]
        for step in steps:
            for b in (step.src, step.res, step.dst):
                if b is not None and all(b is not seen for seen in buffers):
                    buffers.append(b)
        offset = 0
        for b in buffers:
            if b.base is None:  # every buffer starts on a 64-byte line (whole vectors never straddle two)
                b.offset = offset
                offset += -(-b.size // K.LANES) * K.LANES
        for b in buffers:
            if b.base is not None:
                b.offset = b.base.offset
        self.workspace_size = offset
        convs = [s for s in steps if s.op == K.CONV]
        self.lists = max([s.src.size + s.src.h * s.src.w for s in convs] + [1]) + K.LANES  # room to read past
        self.widest = max([-(-s.weights.shape[3] // K.LANES) * K.LANES for s in convs] + [b.c for b in buffers])
        padded = [  # a stride-1 convolution's scatter accumulator
            (s.src.h + (s.ints["kh"] - 1) * s.ints["dh"]) * (s.src.w + (s.ints["kw"] - 1) * s.ints["dw"])
            * -(-s.weights.shape[3] // K.LANES) * K.LANES
            for s in convs
        ]  # fmt: skip
        self.accumulator = max([self.widest, *padded])
        self.zeros = np.zeros(self.widest, dtype=np.float32)
        self.contributions = max([s.src.size * s.ints.get("kh", 1) * s.ints.get("kw", 1) for s in convs] + [1]) + 8
        weights: list[np.ndarray] = []
        ints: list[np.ndarray] = []
        sizes = {"weights": 0, "ints": 0}

        def put(values, kind: str) -> int:
            if values is None:
                return -1
            array = np.ascontiguousarray(values, dtype=np.float32 if kind == "weights" else np.int64).ravel()
            if kind == "weights":  # each block on a 64-byte line: a row of weights is whole aligned vectors
                array = np.pad(array, (0, -array.size % K.LANES))
            at = sizes[kind]
            (weights if kind == "weights" else ints).append(array)
            sizes[kind] += array.size
            return at

        code = np.zeros((len(steps), len(K.FIELDS)), dtype=np.int64)
        fparams = np.zeros(len(steps), dtype=np.float32)
        for i, step in enumerate(steps):
            row = dict.fromkeys(K.FIELDS, 0)
            src, dst = step.src, step.dst
            flat = step.ints.get("flat_input", 0)
            row.update(
                op=step.op,
                src=src.offset,
                dst=dst.offset,
                res=step.res.offset if step.res is not None else -1,
                h=1 if flat else src.h,
                w=1 if flat else src.w,
                cin=src.size if flat else src.c,
                ho=dst.h,
                wo=dst.w,
                cout=dst.c if step.op != K.PERMUTE else dst.size,
                kh=1, kw=1, sh=1, sw=1, dh=1, dw=1, groups=1,
            )  # fmt: skip
            row.update({k: v for k, v in step.ints.items() if k in K.F})
            weights_, bias_ = step.weights, step.bias
            if step.op == K.CONV:  # rows padded to whole vectors with zero columns
                cout_g = weights_.shape[3]
                cpad = -(-cout_g // K.LANES) * K.LANES
                weights_ = np.pad(weights_, [(0, 0)] * 3 + [(0, cpad - cout_g)])
                row["cpad"] = cpad
            row["weights"] = put(weights_, "weights")
            row["bias"] = put(bias_, "weights")
            row["act"] = step.act
            row["layer"] = step.layer
            row["units"] = int(unit_starts[step.layer]) if step.layer >= 0 else 0
            row["unit_map"] = put(step.unit_map, "ints")
            if step.op == K.PERMUTE:
                row["extra"] = put(step.index, "ints")
            code[i] = [row[f] for f in K.FIELDS]
            fparams[i] = step.param
        self.code = code
        self.fparams = fparams
        self.weights = aligned(np.concatenate(weights) if weights else np.zeros(1, dtype=np.float32))
        self.ints = np.concatenate(ints) if ints else np.zeros(1, dtype=np.int64)
        self.output = compiler.output.offset
        self.input_size = compiler.input.size
        self.multiply_adds = dense_multiply_adds(steps)
        self._local = threading.local()
        self._run = K.library(level).sparse_run
        self.units = int(unit_starts[-1])

    def _memory(self) -> tuple:
        """This thread's memory for the program (kept: a call then allocates only its outputs)."""
        memory = getattr(self._local, "memory", None)
        if memory is None:
            arrays = dict(
                ws=aligned(np.empty(self.workspace_size, dtype=np.float32)),
                rows=np.empty(self.contributions, dtype=np.int32),
                vals=np.empty(self.contributions, dtype=np.float32),
                idx=np.empty(max(self.lists, self.contributions), dtype=np.int32),
                val=np.empty(self.lists, dtype=np.float32),
                cnt=np.empty(self.lists, dtype=np.int32),
                acc=aligned(np.empty(self.accumulator, dtype=np.float32)),
                counts=np.empty(self.widest, dtype=np.int32),
            )
            struct = K.ProgramStruct(
                code=self.code.ctypes.data, n_steps=len(self.code), fparams=self.fparams.ctypes.data,
                weights=self.weights.ctypes.data, ints=self.ints.ctypes.data, n_in=self.input_size,
                output=self.output, classes=self.classes, softmax=int(self.softmax), n_units=self.units,
                n_layers=len(self.layers), zeros=self.zeros.ctypes.data,
                **{name: array.ctypes.data for name, array in arrays.items()},
            )  # fmt: skip
            memory = self._local.memory = (struct, arrays, ctypes.addressof(struct))
        return memory

    def __call__(self, x: np.ndarray):
        """(scores (N, classes), nonzero (N, layers) int64, on-counts (N, units) int64) for ``x`` (N, input size),
        float32 and C-contiguous. Threads may call it at once: each has its own memory."""
        n, layers = len(x), len(self.layers)
        # one allocation for the three outputs, addresses through ctypes.c_char.from_buffer: a one-image call
        # spent 3.2 of its 32 us on four ndarray.ctypes.data lookups
        counts = np.empty(n * (self.units + layers), dtype=np.int64)
        scores = np.empty((n, self.classes), dtype=np.float32)
        at = address(counts)
        self._run(self._memory()[2], address(x), n, address(scores), at, at + 8 * n * self.units)
        return scores, counts[n * self.units :].reshape(n, layers), counts[: n * self.units].reshape(n, self.units)


def address(array: np.ndarray) -> int:
    """Where ``array``'s data starts (a quarter of the time of ``ndarray.ctypes.data``; read-only arrays too)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(array))
    except (TypeError, ValueError):  # read-only or empty
        return array.ctypes.data


def aligned(array: np.ndarray, boundary: int = 64) -> np.ndarray:
    """``array`` (1-D) copied into memory that starts on a ``boundary``-byte line."""
    raw = np.empty(array.nbytes + boundary, dtype=np.uint8)
    start = -raw.ctypes.data % boundary
    out = raw[start : start + array.nbytes].view(array.dtype)
    out[:] = array
    return out


def dense_multiply_adds(steps: list[Step]) -> int:
    """What the program's convolutions and dense layers would multiply and add with no zero skipped."""
    total = 0
    for s in steps:
        if s.op == K.CONV:
            kh, kw, cin, _ = s.weights.shape
            total += s.dst.size * kh * kw * cin // s.ints.get("groups", 1)
    return total


def check_units(compiler: Compiler, layers: list[ProbedTensor]) -> None:
    """Each probed layer computed by one step whose channels are the layer's units."""
    for i, layer in enumerate(layers):
        step = compiler.layer_steps.get(i)
        if step is None:
            raise SparseUnsupported(f"layer {layer.name!r}: its ReLU-family node is not one step of the program")
        tensor = compiler.tensors[layer.tensor]
        index = tensor.index
        axis = 0 if layer.axis == 1 else index.ndim - 1
        units = np.indices(index.shape)[axis]
        by_offset = np.empty(tensor.buffer.size, dtype=np.int64)
        by_offset[index.ravel()] = units.ravel()
        c = tensor.buffer.c
        if layer.units != c or not np.array_equal(by_offset, np.arange(tensor.buffer.size) % c):
            raise SparseUnsupported(f"layer {layer.name!r}: its units are not the channels of the step computing it")


def compact(compiler: Compiler, dead: dict[int, np.ndarray]) -> dict[int, int]:
    """Remove each layer's ``dead`` units (indices) from the step computing them and from the steps reading them,
    where every reader is a convolution, a dense layer or a pooling step that only such steps read. Returns the
    units removed per layer."""
    steps = compiler.steps
    removed = {}

    def readers(buffer):
        return [s for s in steps if s.src is buffer or s.res is buffer]

    viewed = {id(b.base) for s in steps for b in (s.src, s.res, s.dst) if b is not None and b.base is not None}

    def eligible(buffer) -> list[Step] | None:
        """Every step that must change with the buffer's channels (pools and their buffers included)."""
        if buffer is compiler.output or id(buffer) in viewed:
            return None
        found = []
        for s in readers(buffer):
            if s.res is buffer:
                return None
            if s.op == K.CONV and (s.ints.get("flat_input") or s.ints.get("groups", 1) == 1):
                found.append(s)
            elif s.op in (K.MAXPOOL, K.AVGPOOL):
                below = eligible(s.dst)
                if below is None:
                    return None
                found += [s, *below]
            else:
                return None
        return found

    for layer, units in dead.items():
        step = compiler.layer_steps.get(layer)
        if step is None or step.op != K.CONV or step.unit_map is not None or not len(units):
            continue
        buffer = step.dst
        affected = eligible(buffer)
        if affected is None:
            continue
        c = buffer.c
        keep = np.setdiff1d(np.arange(c), units)
        if not len(keep):
            keep = np.array([0])
        step.weights = step.weights[..., keep]
        if step.bias is not None:
            step.bias = step.bias[keep]
        step.unit_map = keep
        buffer.c = len(keep)
        for s in affected:
            if s.op in (K.MAXPOOL, K.AVGPOOL):
                s.dst.c = len(keep)
            elif s.ints.get("flat_input"):
                rows = np.isin(np.arange(s.weights.shape[2]) % c, keep)
                s.weights = s.weights[:, :, rows, :]
            else:
                s.weights = s.weights[:, :, keep, :]
        removed[layer] = int(c - len(keep))
    return removed


class SparseProbe:
    """Predictions and ReLU-family sparsity of an ONNX classifier from the sparse engine, as
    :class:`sparsity.onnx_probe.OnnxProbe` gives them."""

    engine = ENGINE

    def __init__(
        self,
        model: onnx.ModelProto,
        *,
        layers: list[ProbedTensor],
        output: str,
        value_range: tuple[float, float] | None = None,
        field: str = "inputs",
        dead: dict[str, list[int]] | None = None,
        level: str | None = "best",
    ) -> None:
        """``value_range``: the inputs' range (the card's), which the interval bounds of :mod:`~sparsity.sparse.bounds`
        start from; ``dead``: per layer, the units to leave out (a card's), each checked to be provably dead; None:
        every provably dead unit."""
        model = inline(model)
        found = survey(model)
        self.item_shape = found.item_shape
        self.input_type = np.float32
        self.input_name = found.input_name
        self.opset = found.opset
        self.not_probed = found.not_probed
        self.layers = layers
        self.output = output
        self.value_range = value_range
        self.field = field
        self.units = [p.units for p in layers]
        self.unit_offsets = np.cumsum(self.units)[:-1]
        self._names = [p.name for p in layers]
        self._sizes = np.array([p.size for p in layers], dtype=np.int64)
        # each unit's share of positions on, computed as the ONNX counting copy computes it (a product with
        # units / size in float32), so both engines give the same float for the same count
        self._inverse = np.repeat(np.array(self.units) / self._sizes, self.units).astype(np.float32)
        if found.fixed_batch is not None:
            raise SparseUnsupported("an input with its batch size fixed; export with a free batch axis")
        if np.dtype(found.input_type) != np.float32:
            raise SparseUnsupported(f"a {np.dtype(found.input_type).name} input; the sparse engine runs float32")
        shapes, values = observed_shapes(model, found.input_name, found.item_shape, found.input_type)
        compiler = Compiler(model, shapes, values, {p.tensor: i for i, p in enumerate(layers)})
        compiler.compile(found.input_name, found.item_shape, found.output_name)
        check_units(compiler, layers)
        if compiler.softmax and output == "logits":
            raise SparseUnsupported("a graph ending in Softmax whose card says logits")
        by_name = {p.name: i for i, p in enumerate(layers)}
        unknown = sorted(set(dead or {}) - set(by_name))
        if unknown:
            raise SparseUnsupported(f"units to remove from layers {unknown}, which are not the model's")
        proven = provably_dead(compiler, value_range)
        if dead is None:  # every unit that can never fire on an input in the range
            chosen = proven
        else:  # the ones asked for (a card's), each of which must be provably dead
            chosen = {by_name[name]: np.asarray(units, dtype=np.int64) for name, units in dead.items()}
            for i, units in chosen.items():
                if not np.isin(units, proven.get(i, [])).all():
                    raise SparseUnsupported(
                        f"layer {layers[i].name!r}: units {np.setdiff1d(units, proven.get(i, [])).tolist()} are not "
                        "provably dead; removing them could change answers"
                    )
        self.dead = {layers[i].name: units.tolist() for i, units in proven.items() if len(units)}
        removed = compact(compiler, chosen)
        self.removed = {layers[i].name: count for i, count in removed.items()}
        self.removed_layers = set(self.removed)
        classes = int(shapes[found.output_name][0]) if found.output_name in shapes else 0
        self.classes = classes
        self.program = Program(compiler, layers, classes, level)
        if output == "logits":
            self.program.softmax = True

    def _forward(self, arr: np.ndarray):
        return self.program(arr.reshape(len(arr), -1))

    def run(self, x: np.ndarray) -> ProbeResult:
        low, high = self.value_range if self.value_range else (None, None)
        arr = check_batch(x, field=self.field, item_shape=self.item_shape, low=low, high=high)
        probabilities, nonzero, on = self._forward(np.ascontiguousarray(arr, dtype=np.float32))
        shares = on.astype(np.float32) * self._inverse
        return from_counts(
            probabilities, nonzero.astype(np.float32), shares, self._names, self._sizes, self.unit_offsets
        )

    def run_batched(self, x: np.ndarray, batch_size: int = 512) -> ProbeResult:
        return in_chunks(self.run, x, batch_size)
