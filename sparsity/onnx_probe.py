"""One-pass activation probe for ONNX classifiers, counted inside ONNX Runtime.

The probe runs the counting copy of the model (:func:`sparsity.onnx_graph.counting_model`): one
``InferenceSession.run`` returns the class probabilities, each ReLU-family tensor's non-zero count per
input and each unit's share of positions on, and nothing else, so a prediction and its sparsity come from
the same forward pass and no activation is copied out. Its results are the Keras probe's
(:class:`sparsity.result.ProbeResult`), so registration, the runtime and the metrics treat both alike.
"""

from __future__ import annotations

import numpy as np
import onnx

from sparsity.onnx_graph import (
    NONZERO,
    PROBABILITIES,
    SHARES,
    OnnxModelError,
    ProbedTensor,
    _Constants,
    counting_model,
    survey,
    with_outputs,
    with_shapes,
)
from sparsity.result import ProbeResult, from_counts, in_chunks
from sparsity.validation import check_batch

LAYOUT_OPTIMIZATIONS = True
"""Whether the counting copy runs with ONNX Runtime's layout optimisations (see ``OnnxProbe.__init__``)."""


def session(model: onnx.ModelProto, threads: int = 1, *, layout_optimizations: bool = True):
    """An ONNX Runtime session on the CPU with ``threads`` intra-op threads and one inter-op thread, every graph
    optimisation on, or all but the layout ones (``layout_optimizations=False``: ``ORT_ENABLE_EXTENDED``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if layout_optimizations
        else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    )
    options.log_severity_level = 3  # errors only: no warning lines per model
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types are not public
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnnxModelError(f"ONNX Runtime cannot run the model: {text[:300]}") from None


class OnnxProbe:
    """Predictions and ReLU-family sparsity of an ONNX classifier from a single ONNX Runtime run.

    ``layers`` (from a card) gives the probed tensors' shapes; without it (registration) they are
    measured once with the tensors added as outputs. ``output`` says what the model returns:
    ``probabilities`` as they are, ``logits`` get a softmax in the graph, ``None`` (registration, before
    it is known) returns the scores as they are. Input is checked as the Keras probe checks it.
    """

    engine = "onnxruntime"

    def __init__(
        self,
        model: onnx.ModelProto,
        *,
        layers: list[ProbedTensor] | None = None,
        output: str | None = None,
        value_range: tuple[float, float] | None = None,
        field: str = "inputs",
        threads: int = 1,
    ) -> None:
        found = survey(model)
        if not found.probed:
            others = ", ".join(f"{n.name} ({n.activation})" for n in found.not_probed) or "none"
            raise OnnxModelError(
                f"the model has no ReLU-family node to probe (Relu, Clip with min 0, Max(x, 0)); activations without "
                f"exact zeros: {others}"
            )
        self.item_shape = found.item_shape
        self.fixed_batch = found.fixed_batch
        self.input_name = found.input_name
        self.input_type = found.input_type
        self.opset = found.opset
        self.not_probed = found.not_probed
        self.classes: int | None = None  # measured at registration
        if layers is None:
            layers = self._measure(model, found)
        else:
            carded = [(p.name, p.tensor) for p in layers]
            present = [(p.name, p.tensor) for p in found.probed]
            if carded != present:
                raise OnnxModelError(f"the card's ReLU-family tensors {carded} are not the model's {present}")
        self.layers = layers
        self.output = output
        self.value_range = value_range
        self.field = field
        self._sizes = np.array([p.size for p in layers], dtype=np.int64)
        self.units = [p.units for p in layers]
        self.unit_offsets = np.cumsum(self.units)[:-1]
        self._names = [p.name for p in layers]
        self.model = counting_model(model, found, layers, softmax=output == "logits")
        # Every optimisation on, layout ones included. With ONNX Runtime 1.17-era builds the blocked NCHWc layout
        # cost more than it gave (every probed conv output reordered back to NCHW for the counts: 2.9 ms of a
        # 31 ms run at 256 images of the unpruned mnist_cnn). With 1.32 and today's pruned mnist_cnn it is the
        # faster: median ms at 1 / 64 / 256 images 0.115 / 3.14 / 13.8, against 0.15 / 4.6 / 20 without.
        self._session = session(self.model, threads, layout_optimizations=LAYOUT_OPTIMIZATIONS)
        self._outputs = [PROBABILITIES, NONZERO, SHARES]

    def _measure(self, model: onnx.ModelProto, found) -> list[ProbedTensor]:
        """The probed tensors' shapes per input, and the output's, from one run on a batch of one zero input."""
        tensors = [p.tensor for p in found.probed]
        plain = session(with_outputs(model, tensors))
        x = np.zeros((1, *found.item_shape), dtype=found.input_type)
        values = plain.run([found.output_name, *tensors], {found.input_name: x})
        scores = np.asarray(values[0])
        if scores.ndim != 2 or scores.shape != (1, scores.shape[1]) or scores.shape[1] < 2:
            raise OnnxModelError(
                f"output {found.output_name!r} gives shape {scores.shape[1:]} per input; a classifier outputs "
                "(classes,) scores, at least 2"
            )
        self.classes = int(scores.shape[1])
        for p, value in zip(found.probed, values[1:], strict=True):
            if np.shape(value)[:1] != (1,):
                raise OnnxModelError(f"ReLU-family node {p.name!r} does not keep the batch axis first")
        return with_shapes(found, {p.tensor: np.shape(v)[1:] for p, v in zip(found.probed, values[1:], strict=True)})

    def _forward(self, arr: np.ndarray) -> list[np.ndarray]:
        # InferenceSession.run may be called from several threads at once
        return self._session.run(self._outputs, {self.input_name: arr})

    def run(self, x: np.ndarray) -> ProbeResult:
        """Check ``x`` (N, *item_shape) and return predictions and sparsity for each input."""
        low, high = self.value_range if self.value_range else (None, None)
        arr = check_batch(x, field=self.field, item_shape=self.item_shape, low=low, high=high)
        arr = arr.astype(self.input_type, copy=False)
        if self.fixed_batch == 1 and len(arr) > 1:  # an export with its batch fixed at 1: one run per input
            runs = [self._forward(arr[i : i + 1]) for i in range(len(arr))]
            probabilities, nonzero, shares = (np.concatenate(part) for part in zip(*runs, strict=True))
        else:
            probabilities, nonzero, shares = self._forward(arr)
        return from_counts(probabilities, nonzero, shares, self._names, self._sizes, self.unit_offsets)

    def run_batched(self, x: np.ndarray, batch_size: int = 512) -> ProbeResult:
        """``run`` over a large array in chunks."""
        return in_chunks(self.run, x, batch_size)


TIE_TOLERANCE = 1e-6
"""A ReLU-family node's input within this share of the layer's largest input magnitude (for that input) of zero
is a rounding tie: there, the order of a sum's arithmetic can decide between an exact zero and a unit on."""


def near_zero_counts(
    model: onnx.ModelProto,
    layers: list[ProbedTensor],
    x: np.ndarray,
    tolerance: float = TIE_TOLERANCE,
    input_name: str | None = None,
) -> dict[str, np.ndarray]:
    """Per layer, (N, units): how many of each unit's positions have an input to the ReLU-family node within
    ``tolerance`` of zero (relative to the layer's largest input magnitude on that item): where two engines may
    disagree on a zero by rounding alone. Layers whose op has no such input (``ThresholdedRelu``) get zeros.
    Run as the counting copy runs (the same optimisations); ``model`` may be the counting copy itself (then
    give its ``input_name``)."""
    constants = _Constants(model.graph)
    producers = {output: node for node in model.graph.node for output in node.output}
    inputs: dict[str, str] = {}
    for layer in layers:
        node = producers[layer.tensor]
        if node.op_type in ("Relu", "Clip"):
            inputs[layer.name] = node.input[0]
        elif node.op_type == "Max":
            inputs[layer.name] = next(name for name in node.input if not constants.is_zero(name))
    input_name = input_name or survey(model).input_name
    names = list(dict.fromkeys(inputs.values()))
    outputs = session(with_outputs(model, names), layout_optimizations=LAYOUT_OPTIMIZATIONS).run(names, {input_name: x})
    values = dict(zip(names, outputs, strict=True))
    counts = {}
    for layer in layers:
        if layer.name not in inputs:
            counts[layer.name] = np.zeros((len(x), layer.units), dtype=np.int64)
            continue
        magnitude = np.abs(np.asarray(values[inputs[layer.name]], dtype=np.float64))
        scale = magnitude.reshape(len(x), -1).max(axis=1)
        near = magnitude <= (tolerance * scale).reshape(-1, *([1] * (magnitude.ndim - 1)))
        near = np.moveaxis(near, 1 if layer.axis == 1 else -1, 1).reshape(len(x), layer.units, -1)
        counts[layer.name] = near.sum(axis=2)
    return counts
