"""Model cards: the typed metadata that training writes with each model and the service validates at
start. One class per model kind; the field names live here and nowhere else.

Training builds a card and stores ``card.metadata()`` as the BentoML model's metadata; the service
calls :func:`load_card`, which refuses a model whose metadata lacks a field or has one of the wrong
type with one line naming the model's tag and the field.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from sparsity.typicality import TypicalityModel


class MeanStd(BaseModel):
    mean: float
    std: float


class ReluLayerCard(BaseModel):
    name: str
    units: int
    size: int


class ModelCard(BaseModel):
    """What every stored model says about itself."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    PUBLIC: ClassVar[tuple[str, ...]] = (
        "dataset",
        "dataset_size",
        "train_size",
        "test_size",
        "test_accuracy",
        "weight_sparsity",
        "class_names",
        "typicality",
    )
    """The fields /models shows (besides the tag)."""

    dataset: str
    dataset_size: int
    train_size: int
    test_size: int
    test_accuracy: float
    weight_sparsity: dict[str, float]
    class_names: list[str]
    typicality: TypicalityModel
    options: dict[str, Any]
    seed: int
    versions: dict[str, str]
    provenance: dict[str, Any] = {}

    def metadata(self) -> dict:
        """The card as the JSON-safe dict BentoML stores (which refuses None: unset fields are left out)."""
        return self.model_dump(mode="json", exclude_none=True)

    def describe(self) -> dict:
        return self.model_dump(mode="json", include=set(self.PUBLIC), exclude_none=True)


class MnistCard(ModelCard):
    PUBLIC: ClassVar[tuple[str, ...]] = (
        *ModelCard.PUBLIC,
        "relu_layers",
        "activation_sparsity",
        "dead_unit_ratio",
        "input_shape",
        "input_range",
        "pruned",
        "parent",
    )

    activation_sparsity: dict[str, MeanStd]  # per ReLU-family layer, and "all"
    dead_unit_ratio: dict[str, float]
    relu_layers: list[ReluLayerCard]
    input_shape: list[int]
    input_range: list[float]
    train_seconds: float | None = None
    pruned: dict[str, Any] | None = None  # how it was pruned, when it was
    parent: str | None = None  # the tag it was pruned from


class IrisCard(ModelCard):
    PUBLIC: ClassVar[tuple[str, ...]] = (*ModelCard.PUBLIC, "contribution_sparsity", "feature_names")

    contribution_sparsity: MeanStd
    coefficients: list[list[float]]
    feature_names: list[str]


class ModelCardError(ValueError):
    """A stored model's metadata is not a valid card: one line with the tag and the field."""


Card = TypeVar("Card", bound=ModelCard)


def load_card(kind: type[Card], tag: str, metadata: dict) -> Card:
    try:
        return kind.model_validate(metadata)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(metadata)"
        problem = "is missing" if first["type"] == "missing" else f"is invalid: {first['msg']}"
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise ModelCardError(
            f"model {tag}: metadata field '{field}' {problem}{more}; retrain it (make train)"
        ) from None
