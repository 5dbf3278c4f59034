"""A model kind from outside the project, in one module: a NumPy MLP with one ReLU hidden layer, stored as a
plain ``.npz`` of its weights (``w1``, ``b1``, ``w2``, ``b2``). It shows that a kind is one module plus one
entry in the kinds table (``MODEL_KINDS=tests.toy_kind`` for the service and the register command)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from modelstore.card import ModelCardError, ReluCard
from modelstore.kind import Kind, LoadOptions
from modelstore.register import OpenedModel, RegistrationError, relu_register_file
from modelstore.runtime import Prediction, ReluRuntime
from sparsity.detectors import load_detector
from sparsity.result import ProbeResult, from_counts
from sparsity.validation import check_batch

NAME = "numpy-mlp"
KEYS = ("w1", "b1", "w2", "b2")


class NumpyMlpCard(ReluCard):
    MODEL_FILE: ClassVar[str] = "model.npz"

    kind: Literal[NAME]


@dataclass(frozen=True)
class Hidden:
    name: str
    units: int
    size: int


class MlpProbe:
    """Probabilities and the hidden layer's zeros from one NumPy pass."""

    output = "probabilities"
    not_probed: ClassVar[list] = []

    def __init__(self, weights: dict[str, np.ndarray], value_range=None) -> None:
        self.w1, self.b1, self.w2, self.b2 = (weights[k].astype(np.float64) for k in KEYS)
        self.item_shape = (self.w1.shape[0],)
        self.layers = [Hidden("hidden", self.w1.shape[1], self.w1.shape[1])]
        self.units = [self.w1.shape[1]]
        self.unit_offsets = np.array([], dtype=np.int64)
        self.classes = self.w2.shape[1]
        self.value_range = value_range

    def run(self, x: np.ndarray) -> ProbeResult:
        low, high = self.value_range or (None, None)
        x = check_batch(x, field="inputs", item_shape=self.item_shape, low=low, high=high, dtype=np.float64)
        hidden = np.maximum(x @ self.w1 + self.b1, 0.0)
        logits = hidden @ self.w2 + self.b2
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        on = (hidden > 0).astype(np.float64)
        return from_counts(
            exp / exp.sum(axis=1, keepdims=True),
            on.sum(axis=1, keepdims=True),
            on,
            ["hidden"],
            np.array([self.w1.shape[1]]),
            self.unit_offsets,
        )

    run_batched = run


def read(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def file_problems(path: str) -> list[str]:
    try:
        weights = read(path)
    except (OSError, ValueError) as exc:
        return [f"not a plain .npz file ({exc})"]
    missing = [key for key in KEYS if key not in weights]
    return [f"missing arrays {missing}"] if missing else []


class NumpyMlpRuntime(ReluRuntime):
    def __init__(self, tag: str, card: NumpyMlpCard, path: str, options: LoadOptions | None = None) -> None:
        super().__init__(tag, card)
        try:
            self.probe = MlpProbe(read(path), self.value_range)
            self.detector = load_detector(card.typicality, str(Path(path).parent))
        except (OSError, KeyError, ValueError) as exc:
            raise ModelCardError(f"model {tag}: {exc}") from None
        self.check_input_shape()
        self.layers = ["hidden"]

    def predict(self, x: np.ndarray) -> Prediction:
        result = self.probe.run(x)
        return self.prediction(result, self.detector.scores(result.shares))


def open_mlp(path: Path) -> OpenedModel:
    problems = file_problems(str(path))
    if problems:
        raise RegistrationError(f"{path.name}: {'; '.join(problems)}")
    probe = MlpProbe(read(path))
    return OpenedModel(probe, probe.classes, NumpyMlpCard, {"kind": NAME, "weight_sparsity": {}})


KIND = Kind(
    name=NAME,
    card=NumpyMlpCard,
    runtime=NumpyMlpRuntime,
    suffixes=(".npz",),
    register_file=relu_register_file(open_mlp),
    describes="A NumPy ReLU MLP's card and baselines",
    file_problems=file_problems,
)
