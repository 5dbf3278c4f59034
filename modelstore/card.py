"""Model cards: the typed metadata stored with each model in the BentoML store (the store's contract).

This module holds what every kind's card shares: :class:`ModelCard`, the ReLU-family :class:`ReluCard`
and their parts. Each kind's own card class lives in its module under :mod:`modelstore.kinds`;
:func:`modelstore.kinds.load_card` picks the class from the card's ``kind``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelstore.engines import EngineCheck, SparseCard
from sparsity.contract import ALL_LAYERS, PREPROCESSING, image_shaped
from sparsity.typicality import TypicalityModel


class MeanStd(BaseModel):
    mean: float
    std: float


class ReluLayerCard(BaseModel):
    name: str
    units: int
    size: int


class OnnxLayerCard(ReluLayerCard):
    """An ONNX ReLU-family node: the tensor it outputs, its op, and where its units are."""

    tensor: str
    op: str
    axis: int = Field(description="the units' axis in the batched tensor (1: channels of NCHW, or dense units)")
    rank: int = Field(description="the tensor's axes per input (the batch axis not counted)")


class NotProbedCard(BaseModel):
    name: str
    activation: str


class CalibrationFacts(BaseModel):
    """What the calibration set was and how registration split it (reproducibly, by ``seed``)."""

    size: int
    sha256: str
    baseline_size: int = Field(
        description="items for the per-layer baseline, dead units and the fit of the typicality detector"
    )
    typicality_size: int = Field(
        description="items that, with the baseline part, set the typicality threshold (out-of-fold scores)"
    )
    measured_size: int = Field(description="items used for neither: the false-alarm rate and accuracy")
    seed: int = 0


class ModelCard(BaseModel):
    """What every stored model says about itself."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    PUBLIC: ClassVar[tuple[str, ...]] = (
        "kind",
        "input_shape",
        "input_range",
        "class_names",
        "test_accuracy",
        "accuracy_on",
        "weight_sparsity",
        "typicality",
        "calibration",
        "dataset",
        "dataset_size",
        "train_size",
        "test_size",
        "feature_ranges",
        "provenance",
    )
    """The fields /models shows (besides the tag; the examples have their own route)."""

    kind: str
    input_shape: list[int] = Field(min_length=1)
    input_range: list[float] = Field(min_length=2, max_length=2)
    class_names: list[str] = Field(min_length=2)
    typicality: TypicalityModel
    weight_sparsity: dict[str, float]
    test_accuracy: float | None = None  # with labels: on the calibration part used for nothing else
    accuracy_on: str | None = None
    calibration: CalibrationFacts | None = None
    provenance: dict[str, Any] = {}
    versions: dict[str, str] = {}
    feature_ranges: list[list[float]] | None = Field(
        default=None, description="tabular inputs: each feature's [min, max] over the calibration set"
    )
    examples: list[Any] | None = Field(
        default=None, description="a few calibration items used for nothing else, for GET /models/{name}/examples"
    )
    example_labels: list[int] | None = None
    # facts of the project's own training runs (a registered model has none)
    dataset: str | None = None
    dataset_size: int | None = None
    train_size: int | None = None
    test_size: int | None = None
    options: dict[str, Any] = {}
    seed: int | None = None

    def metadata(self) -> dict:
        """The card as the JSON-safe dict BentoML stores (which refuses None: unset fields are left out)."""
        return self.model_dump(mode="json", exclude_none=True)

    def describe(self) -> dict:
        return self.model_dump(mode="json", include=set(self.PUBLIC), exclude_none=True)

    @property
    def image_shaped(self) -> bool:
        return image_shaped(self.input_shape)

    def summary_lines(self) -> list[str]:
        """The registration summary's lines about this kind's own figures (:mod:`modelstore.summary`)."""
        return []

    def log_text(self) -> str:
        """This kind's figures in the start-up log's line of a served model."""
        return ""


class ReluCard(ModelCard):
    """What every model with ReLU-family layers says: the layers, their baselines and dead units."""

    PUBLIC: ClassVar[tuple[str, ...]] = (
        *ModelCard.PUBLIC,
        "relu_layers",
        "not_probed",
        "activation_sparsity",
        "dead_unit_ratio",
        "unit_firing",
        "output",
        "preprocessing",
        "pruned",
        "parent",
        "engines",
        "sparse",
    )
    relu_layers: list[ReluLayerCard] = Field(min_length=1)
    not_probed: list[NotProbedCard] = []
    activation_sparsity: dict[str, MeanStd]  # per ReLU-family layer call, and "all"
    dead_unit_ratio: dict[str, float]
    unit_firing: dict[str, list[float]] | None = Field(
        default=None,
        description="per layer, each unit's share of the baseline calibration items on which it fired (0: dead)",
    )
    output: Literal["probabilities", "logits"] = "probabilities"
    preprocessing: Literal[PREPROCESSING] | None = None  # image-shaped inputs only
    train_seconds: float | None = None
    example_zeros: dict[str, list[int]] | None = Field(
        default=None,
        description="per layer, the exact-zero count of each stored example at registration (a load replays them)",
    )
    pruned: dict[str, Any] | None = None  # how it was pruned, when it was
    parent: str | None = None  # the tag it was pruned from
    engines: list[EngineCheck] = Field(
        default=[], description="each engine's check against the reference and its time, at registration"
    )
    sparse: SparseCard | None = Field(default=None, description="the sparse engine's program, when it passed")
    drift_baseline: dict[str, dict[str, list[float]]] | None = Field(
        default=None,
        description="per signal (each layer's zero share, the typicality score), the calibration items' quantile "
        "bins: edges and shares (sparsity.drift); the service's drift windows compare served items with them",
    )

    def summary_lines(self) -> list[str]:
        """The registration summary's lines of a ReLU-family model: output, layers, baselines, dead units."""
        lines = [
            f"  output   {self.output}" + (f"; picture uploads: {self.preprocessing}" if self.preprocessing else ""),
            f"  probed   {len(self.relu_layers)} ReLU-family layer call(s): "
            "zeros at baseline (mean +/- std), dead units",
        ]
        width = max(len(layer.name) for layer in self.relu_layers)
        for layer in self.relu_layers:
            stats = self.activation_sparsity[layer.name]
            lines.append(
                f"    {layer.name:<{width}}  {layer.units:>5} units  {stats.mean:.3f} +/- {stats.std:.3f}  "
                f"dead {self.dead_unit_ratio[layer.name]:.3f}"
            )
        overall = self.activation_sparsity[ALL_LAYERS]
        lines.append(f"    {ALL_LAYERS:<{width}}  {'':>11}  {overall.mean:.3f} +/- {overall.std:.3f}")
        not_probed = ", ".join(f"{layer.name} ({layer.activation})" for layer in self.not_probed) or "none"
        lines.append(f"  not_probed  {not_probed}")
        for check in self.engines:
            timing = f"{check.ms_1:.3f} ms at 1, {check.ms_256:.2f} ms at 256 images" if check.passed else ""
            lines.append(f"  engine {check.engine:<12} " + (timing if check.passed else f"not used: {check.reason}"))
        if self.sparse is not None:
            removed = ", ".join(f"{name} {len(units)}" for name, units in self.sparse.removed.items()) or "none"
            lines.append(f"  sparse   never-firing units left out of the program: {removed}")
        return lines

    def log_text(self) -> str:
        baseline = ", ".join(f"{layer} {stats.mean:.3f}" for layer, stats in self.activation_sparsity.items())
        dead = ", ".join(f"{layer} {ratio:.3f}" for layer, ratio in self.dead_unit_ratio.items())
        return f"activation sparsity baseline {baseline}; dead units {dead}"


class ModelCardError(ValueError):
    """A stored model's metadata is not a valid card: one line with the tag and the field."""
