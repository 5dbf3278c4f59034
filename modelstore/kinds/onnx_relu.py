"""Kind ``onnx-relu``: an ONNX classifier (from PyTorch, scikit-learn, Keras, ...) with ReLU-family nodes.

- file: ``model.onnx``, checked before anything runs (:func:`sparsity.onnx_graph.problems`: valid ONNX,
  standard operators only, no external data);
- registration: the ReLU-family nodes are found in the graph (:mod:`sparsity.onnx_graph`), and whether the
  model outputs probabilities or logits is decided on the calibration run;
- engines: registration also compiles the graph for the sparse engine, checks it on the whole calibration set
  and times both (:mod:`modelstore.engines`);
- serving: the sparse program when it passed and is faster (``ENGINE``), else the counting copy of the graph in
  ONNX Runtime (:mod:`sparsity.onnx_probe`), one intra-op thread per worker unless ``ONNX_INTRA_OP_THREADS``
  says otherwise.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from modelstore.card import ModelCardError, OnnxLayerCard, ReluCard
from modelstore.engines import check_engines, choose
from modelstore.kind import Kind, LoadOptions
from modelstore.register import OpenedModel, RegistrationError, relu_register_file
from modelstore.runtime import Prediction, ReluRuntime
from sparsity.detectors import UnitFiring, load_detector

log = logging.getLogger(__name__)

NAME = "onnx-relu"
PROBABILITY_TOLERANCE = 1e-3
"""An ONNX model's scores are taken as probabilities when every calibration row is in [0, 1] and sums to 1
within this; otherwise they are logits, and the service applies a softmax."""


class OnnxReluCard(ReluCard):
    PUBLIC: ClassVar[tuple[str, ...]] = (*ReluCard.PUBLIC, "opset", "producer", "unit_convention")
    MODEL_FILE: ClassVar[str] = "model.onnx"

    kind: Literal[NAME]
    relu_layers: list[OnnxLayerCard] = Field(min_length=1)
    opset: int
    producer: str = Field(description="the program that wrote the file, as the file says (e.g. pytorch 2.9)")
    unit_convention: str

    def summary_lines(self) -> list[str]:
        return [
            *super().summary_lines(),
            f"  onnx     opset {self.opset}, written by {self.producer}; counted inside ONNX Runtime",
        ]


class OnnxReluRuntime(ReluRuntime):
    engine = "onnxruntime"

    def __init__(self, tag: str, card: OnnxReluCard, path: str, options: LoadOptions | None = None) -> None:
        super().__init__(tag, card)
        options = options or LoadOptions()
        engine, why = choose(card, "onnxruntime", options.engine, ("sparse", "onnxruntime"))
        if why:
            log.warning("model %s: %s", tag, why)
        self.start_onnx(path, card.relu_layers, card.output, options, engine)

    def start_onnx(self, path: str, layer_cards, output: str, options: LoadOptions | None, engine: str) -> None:
        """The ONNX file ``path`` whose ReLU-family nodes are ``layer_cards`` on ``engine`` (``onnxruntime``: its
        counting copy; ``sparse``: its sparse program, or ONNX Runtime with one line when that cannot load here).
        What the ONNX kind and a Keras model's ONNX twin share."""
        from sparsity import onnx_graph
        from sparsity.onnx_probe import OnnxProbe

        tag, card = self.tag, self.card
        self.onnx_path = path
        layers = [
            onnx_graph.ProbedTensor(l.name, l.tensor, l.op, units=l.units, size=l.size, axis=l.axis, rank=l.rank)
            for l in layer_cards
        ]
        try:
            self.detector = load_detector(card.typicality, os.path.dirname(path))
            model = onnx_graph.load(path)
            self.probe = self._sparse(model, layers, output) if engine == "sparse" else None
            if self.probe is None:
                self.probe = OnnxProbe(
                    model,
                    layers=layers,
                    output=output,
                    value_range=self.value_range,
                    field="inputs",
                    threads=(options or LoadOptions()).onnx_intra_threads,
                )
        except ValueError as exc:  # OnnxModelError, DetectorStateError
            raise ModelCardError(f"model {tag}: {exc}") from None
        self.engine = self.probe.engine
        self.info["engine"] = self.engine
        self.check_input_shape()
        self.layers = [layer.name for layer in layers]
        if not isinstance(self.detector, UnitFiring) or card.typicality.features != self.layers:
            raise ModelCardError(f"model {tag}: the typicality state does not fit the model's ReLU-family layers")

    def _sparse(self, model, layers, output: str):
        """The sparse program the card checked, or None (ONNX Runtime then) with one line saying why not."""
        from sparsity.sparse.engine import SparseProbe, SparseUnsupported
        from sparsity.sparse.kernels import KernelsUnavailable

        removed = self.card.sparse.removed if self.card.sparse else {}
        try:  # the units the card removed, each proven dead again from the card's input range
            probe = SparseProbe(model, layers=layers, output=output, value_range=self.value_range, dead=removed)
        except (SparseUnsupported, KernelsUnavailable, OSError) as exc:
            log.warning("model %s: the sparse engine cannot load here (%s); it runs on onnxruntime", self.tag, exc)
            return None
        expected = {name: len(units) for name, units in removed.items()}
        if probe.removed != expected:
            raise ModelCardError(
                f"model {self.tag}: the sparse program removes {probe.removed} units, the card {expected}; "
                "register it again"
            )
        return probe

    def predict(self, x: np.ndarray) -> Prediction:
        result = self.probe.run(x)
        return self.prediction(result, self.detector.scores(result.shares))


def open_onnx(path: Path) -> OpenedModel:
    """An ONNX file checked (:func:`sparsity.onnx_graph.load`), with its probe that counts inside ONNX Runtime.
    Whether it outputs probabilities or logits is decided on the calibration run."""
    from sparsity import onnx_graph
    from sparsity.onnx_probe import OnnxProbe

    try:
        model = onnx_graph.load(path)  # its refusals name the file
    except onnx_graph.OnnxModelError as exc:
        raise RegistrationError(str(exc)) from None
    try:
        probe = OnnxProbe(model, field="calibration")
    except onnx_graph.OnnxModelError as exc:
        raise RegistrationError(f"{path.name}: {exc}") from None

    def settle(result) -> None:
        scores = result.probabilities
        rows_sum_to_one = np.allclose(scores.sum(axis=1), 1.0, atol=PROBABILITY_TOLERANCE)
        probe.output = "probabilities" if rows_sum_to_one and scores.min() >= 0 and scores.max() <= 1 else "logits"
        if probe.output == "logits":
            shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
            result.probabilities = shifted / shifted.sum(axis=1, keepdims=True)

    def engines(x: np.ndarray, result, value_range: tuple[float, float]) -> dict:
        timing = OnnxProbe(model, layers=probe.layers, output=probe.output)  # the counting copy as served
        return check_engines("onnxruntime", timing, result, model, probe.layers, probe.output, x, value_range)

    producer = " ".join(part for part in (model.producer_name, model.producer_version) if part) or "unknown"
    fields = {
        "kind": NAME,
        "weight_sparsity": onnx_graph.weight_sparsity(model),
        "opset": probe.opset,
        "producer": producer,
        "unit_convention": onnx_graph.UNIT_CONVENTION,
    }
    return OpenedModel(probe, probe.classes, OnnxReluCard, fields, settle, engines=engines)


def file_problems(path: str) -> list[str]:
    from sparsity.onnx_graph import problems  # the onnx package only, nothing run

    return problems(path)


KIND = Kind(
    name=NAME,
    card=OnnxReluCard,
    runtime=OnnxReluRuntime,
    suffixes=(".onnx",),
    register_file=relu_register_file(open_onnx),
    describes="An ONNX ReLU model's card and baselines",
    file_problems=file_problems,
)
