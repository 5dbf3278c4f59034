"""Kind ``keras-relu``: a Keras classifier whose hidden layers are ReLU-family.

- file: ``model.keras``, audited before anything is loaded (:func:`sparsity.keras_file.keras_file_problems`:
  Keras' own objects and the core's layers only, no ``Lambda``, no serialized function), then loaded in
  Keras' safe mode;
- registration: every ReLU-family layer call of the whole graph is probed (:mod:`sparsity.graph`);
- its twin: registration also writes the model out as ONNX with tf2onnx (:mod:`sparsity.keras_onnx`) and runs
  the twin beside the Keras probe over the whole calibration set. Only when every item's zero count in every
  layer, every unit's count of positions on, and the probabilities (within :data:`PROBABILITY_TOLERANCE`)
  agree is the twin stored (``model.onnx``, its hash and the check on the card, ``engine: onnxruntime``);
  otherwise the card says ``engine: tensorflow`` and why, in one line;
- engines: registration compiles the twin for the sparse engine, checks it against the Keras probe on the whole
  calibration set and times TensorFlow, ONNX Runtime and the sparse engine (:mod:`modelstore.engines`);
- serving: through the twin on the sparse engine or ONNX Runtime (:class:`KerasTwinRuntime`: no TensorFlow in
  the process), or, without a twin or with ``ENGINE=tensorflow``, the core's compiled one-pass probe
  (:class:`sparsity.probe.SparsityProbe`), TensorFlow imported then and only then.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

from modelstore.card import ModelCardError, OnnxLayerCard, ReluCard
from modelstore.engines import AgreementCheck, check_engines, choose
from modelstore.kind import Kind, LoadOptions
from modelstore.kinds.onnx_relu import OnnxReluRuntime
from modelstore.register import OpenedModel, RegistrationError, file_sha256, relu_register_file
from modelstore.runtime import Prediction, ReluRuntime
from sparsity.detectors import UnitFiring, load_detector
from sparsity.exactness import PROBABILITY_TOLERANCE
from sparsity.keras_file import keras_file_problems
from sparsity.typicality import UNIT_FIRING

log = logging.getLogger(__name__)

NAME = "keras-relu"
TWIN_FILE = "model.onnx"


class TwinCheck(AgreementCheck):
    """How the twin was checked against the Keras probe at registration."""


class TwinCard(BaseModel):
    """The model written out as ONNX, stored beside it as ``model.onnx``."""

    file: str = TWIN_FILE
    sha256: str
    converter: str = Field(description="what wrote it, e.g. tf2onnx 1.17.0")
    opset: int
    convert_seconds: float
    relu_layers: list[OnnxLayerCard] = Field(min_length=1, description="its ReLU-family nodes, named as in Keras")
    check: TwinCheck


class KerasReluCard(ReluCard):
    PUBLIC: ClassVar[tuple[str, ...]] = (*ReluCard.PUBLIC, "engine", "engine_reason", "twin")
    MODEL_FILE: ClassVar[str] = "model.keras"

    kind: Literal[NAME]
    engine: Literal["onnxruntime", "tensorflow"] = "tensorflow"
    engine_reason: str | None = Field(default=None, description="why it has no twin, when it runs on TensorFlow")
    twin: TwinCard | None = None

    @model_validator(mode="after")
    def _twin_checked(self):
        if self.engine == "onnxruntime" and self.twin is None:
            raise ValueError("engine onnxruntime needs a checked twin")
        return self

    def summary_lines(self) -> list[str]:
        if self.engine == "onnxruntime":
            check = self.twin.check
            same = f"all {check.items}" if not check.tie_items else f"{check.items - check.tie_items} of {check.items}"
            line = (
                f"  engine   onnxruntime: an ONNX twin ({self.twin.converter}, opset {self.twin.opset}) with the same "
                f"zeros on {same} calibration items, probabilities within {check.max_probability_difference:.1e}"
            )
            if check.rounding_ties:
                line += (
                    f"; {check.rounding_ties} of {check.activations:,} activations differ, each a rounding tie "
                    f"(input within {check.tie_tolerance:g} of zero)"
                )
        else:
            line = f"  engine   tensorflow: {self.engine_reason or 'registered before ONNX twins'}"
        return [*super().summary_lines(), line]


class KerasTwinRuntime(OnnxReluRuntime):
    """A Keras model served through its checked ONNX twin (ONNX Runtime or the sparse engine, no TensorFlow),
    under the Keras layer names."""

    def __init__(
        self, tag: str, card: KerasReluCard, path: str, options: LoadOptions | None = None, engine: str = "onnxruntime"
    ) -> None:
        ReluRuntime.__init__(self, tag, card)
        twin = os.path.join(os.path.dirname(path), card.twin.file)
        if not os.path.isfile(twin) or file_sha256(Path(twin)) != card.twin.sha256:
            raise ModelCardError(
                f"model {tag}: {card.twin.file} is missing or not the registered twin; register it again"
            )
        self.start_onnx(twin, card.twin.relu_layers, card.output, options, engine)


_TENSORFLOW_READY: list[bool] = []


def _tensorflow_threads(options: LoadOptions) -> None:
    """TensorFlow's threads, set once per process before its first model (imports TensorFlow)."""
    from sparsity.logs import set_tensorflow_threads

    if not _TENSORFLOW_READY:
        set_tensorflow_threads(options.tf_intra_threads, options.tf_inter_threads)
        _TENSORFLOW_READY.append(True)


class KerasReluRuntime(ReluRuntime):
    engine = "tensorflow"

    def __init__(self, tag: str, card: KerasReluCard, path: str, options: LoadOptions | None = None) -> None:
        _tensorflow_threads(options or LoadOptions())
        try:
            from sparsity.keras_file import load_keras_safely  # TensorFlow: imported only here
            from sparsity.probe import SparsityProbe, UnsupportedModelError
        except ImportError as exc:
            raise ModelCardError(f"model {tag}: runs on TensorFlow, which cannot be imported here ({exc})") from None

        super().__init__(tag, card)
        try:
            model = load_keras_safely(path, audit=False)  # the store's audit checked it: safe mode is the second line
            self.detector = load_detector(card.typicality, os.path.dirname(path))
            # a unit-firing score is computed inside the probe's compiled call (see SparsityProbe._score)
            scorer = self.detector if isinstance(self.detector, UnitFiring) else None
            self.probe = SparsityProbe(model, value_range=self.value_range, field="inputs", scorer=scorer)
        except (ValueError, UnsupportedModelError) as exc:  # DetectorStateError is a ValueError
            raise ModelCardError(f"model {tag}: {exc}") from None
        found = [layer.name for layer in self.probe.layers]
        carded = [layer.name for layer in card.relu_layers]
        if found != carded:
            raise ModelCardError(f"model {tag}: the card's relu_layers {carded} are not the model's {found}")
        missing = [f for f in card.typicality.features if f not in found]
        if missing:
            raise ModelCardError(f"model {tag}: metadata field 'typicality.features' names {missing}, not ReLU layers")
        if isinstance(self.detector, UnitFiring) and card.typicality.features != found:
            raise ModelCardError(f"model {tag}: the typicality state does not fit the model's ReLU layers")
        self.check_input_shape()
        self.layers = found

    def predict(self, x: np.ndarray) -> Prediction:
        result = self.probe.run(x)
        scores = result.scores
        if scores is None:  # a card from before unit-firing: per-layer zero fractions, scored in NumPy
            profiles = np.stack([result.layer_sparsity[name] for name in self.card.typicality.features], axis=1)
            scores = self.detector.scores(profiles)
        return self.prediction(result, scores)


def keras_runtime(tag: str, card: KerasReluCard, path: str, options: LoadOptions | None = None) -> ReluRuntime:
    """The engine :func:`modelstore.engines.choose` picks: the twin (on ONNX Runtime or the sparse engine) when
    the card has one, else TensorFlow."""
    options = options or LoadOptions()
    default = "onnxruntime" if card.engine == "onnxruntime" else "tensorflow"
    available = ("sparse", "onnxruntime", "tensorflow") if card.twin is not None else ("tensorflow",)
    engine, why = choose(card, default, options.engine, available)
    if why:
        log.warning("model %s: %s", tag, why)
    if engine == "tensorflow":
        return KerasReluRuntime(tag, card, path, options)
    return KerasTwinRuntime(tag, card, path, options, engine)


def open_keras(path: Path) -> OpenedModel:
    """A Keras file loaded safely (config audit, then safe mode), with its probe; its twin is made after the
    calibration run (:func:`twin_files`)."""
    from sparsity.keras_file import load_keras_safely
    from sparsity.probe import SparsityProbe, UnsupportedModelError, weight_sparsity

    try:
        model = load_keras_safely(str(path))
        probe = SparsityProbe(model, field="calibration")
    except (ValueError, UnsupportedModelError) as exc:
        raise RegistrationError(str(exc)) from None
    fields = {"kind": NAME, "weight_sparsity": weight_sparsity(model)}
    made: dict = {}  # the checked twin, for the engines' check
    extras = lambda x, result: twin_files(model, probe, x, result, made)  # noqa: E731

    def engines(x: np.ndarray, result, value_range: tuple[float, float]) -> dict:
        twin = made.get("probe")
        return check_engines(
            "tensorflow", probe, result, made.get("model"), twin.layers if twin else [], probe.output, x,
            value_range, onnx_probe=twin,
        )  # fmt: skip

    return OpenedModel(probe, int(model.outputs[0].shape[-1]), KerasReluCard, fields, extras=extras, engines=engines)


def twin_files(model, probe, x: np.ndarray, result, made: dict | None = None) -> tuple[dict, dict[str, bytes]]:
    """The model's ONNX twin, checked against the Keras probe's calibration run ``result`` on ``x``: the card's
    ``engine`` and ``twin`` and the twin's file when every check passes, else ``engine: tensorflow`` and why.
    ``made`` receives the twin (``model``) and its probe (``probe``) when it passes."""
    from sparsity.keras_onnx import ConversionError, convert
    from sparsity.onnx_graph import OnnxModelError
    from sparsity.onnx_probe import OnnxProbe

    try:
        twin = convert(model, [layer.name for layer in probe.layers])
        twin_probe = OnnxProbe(twin.model, field="calibration", output=probe.output)
        check, problem = compare_twin(probe, twin_probe, x, result)
    except (ConversionError, OnnxModelError) as exc:
        check, problem = None, str(exc)
    if problem is not None:
        log.warning("the model stays on TensorFlow: %s", problem)
        return {"engine": "tensorflow", "engine_reason": problem}, {}
    if made is not None:
        made.update(probe=twin_probe, model=twin.model)
    data = twin.model.SerializeToString()
    card = TwinCard(
        sha256=_sha256(data),
        converter=twin.converter,
        opset=twin_probe.opset,
        convert_seconds=round(twin.seconds, 3),
        relu_layers=[OnnxLayerCard(**vars(layer)) for layer in twin_probe.layers],
        check=check,
    )
    return {"engine": "onnxruntime", "twin": card.model_dump(mode="json")}, {TWIN_FILE: data}


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def compare_twin(probe, twin_probe, x: np.ndarray, result) -> tuple[TwinCheck | None, str | None]:
    """Run the twin on ``x`` and compare it with the Keras probe's ``result`` (:func:`sparsity.exactness.agreement`):
    (the check, None) when they agree, else (None, the first difference in one line)."""
    from sparsity.exactness import agreement

    keras_layers = [(layer.name, layer.units, layer.size) for layer in probe.layers]
    twin_layers = [(layer.name, layer.units, layer.size) for layer in twin_probe.layers]
    if keras_layers != twin_layers:
        return None, f"the twin's ReLU layers {twin_layers} are not the Keras model's {keras_layers}"
    twin = twin_probe.run_batched(x)
    found, problem = agreement(
        result, twin, probe.layers, x.astype(twin_probe.input_type), twin_probe.model, twin_probe.layers,
        twin_probe.input_name, tolerance=PROBABILITY_TOLERANCE, what="the ONNX twin", against="Keras'",
    )  # fmt: skip
    if problem is not None:
        return None, problem
    return TwinCheck(**vars(found)), None


def file_problems(path: str) -> list[str]:
    """The Keras file's audit, and the twin's (valid ONNX, standard operators) when there is one."""
    problems = keras_file_problems(path)
    twin = os.path.join(os.path.dirname(path), TWIN_FILE)
    if os.path.exists(twin):
        from sparsity.onnx_graph import problems as onnx_problems

        problems += [f"{TWIN_FILE}: {problem}" for problem in onnx_problems(twin)]
    return problems


def upgrade_reason(card: KerasReluCard) -> str | None:
    if card.typicality.detector != UNIT_FIRING:
        return "it has the per-layer typicality score of before the unit-firing detector"
    if card.engine == "tensorflow" and card.engine_reason is None:
        return "it was registered before Keras models got an ONNX Runtime twin"
    if not card.engines:
        return "it was registered before engines were checked and timed (the sparse engine)"
    return None


KIND = Kind(
    name=NAME,
    card=KerasReluCard,
    runtime=keras_runtime,
    suffixes=(".keras",),
    register_file=relu_register_file(open_keras),
    describes="A Keras ReLU model's card and baselines",
    file_problems=file_problems,
    upgrade_reason=upgrade_reason,
)
