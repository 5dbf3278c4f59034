"""Model cards: the typed metadata stored with each model in the BentoML store, one class per kind.

Registration (``python -m training register``, which the project's own training goes through too)
builds a card and stores ``card.metadata()`` as the model's metadata; the service calls
:func:`load_card`, which picks the class from the card's ``kind`` and refuses a model whose metadata
lacks a field or has one of the wrong type with one line naming the model's tag and the field.

- ``keras-relu``: a Keras classifier whose hidden layers are ReLU-family, served through the probe.
- ``onnx-relu``: an ONNX classifier (from PyTorch, scikit-learn, ...) with ReLU-family nodes, counted
  inside ONNX Runtime.
- ``linear``: a standardising step plus a linear classifier, served from its coefficients.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from sparsity.typicality import TypicalityModel

KINDS = ("keras-relu", "onnx-relu", "linear")
PREPROCESSING = ("resize", "mnist-digit")
"""Declared steps that turn an uploaded picture into one input (``POST /models/{name}/predict_image``):
``resize`` scales the picture to the input's height and width and its pixels to the input range;
``mnist-digit`` does what MNIST did to its digits (white on black, 20x20 box, centred by mass)."""


def picture_layout(shape) -> tuple[int, int, int | None, bool] | None:
    """``(height, width, channels, channels_first)`` of an input that is a picture, else None: (H, W)
    (channels None), (H, W, C) with 1 or 3 channels, or channels first, (1, H, W) grey or (3, H, W) colour, as
    ONNX exports of NCHW networks (PyTorch's) take them. A shape that reads both ways, (3, H, 3), is channels
    last."""
    shape = tuple(shape)
    if len(shape) == 2:
        return shape[0], shape[1], None, False
    if len(shape) == 3 and shape[2] in (1, 3):
        return shape[0], shape[1], shape[2], False
    if len(shape) == 3 and shape[0] in (1, 3):
        return shape[1], shape[2], shape[0], True
    return None


def image_shaped(shape) -> bool:
    """Inputs that are pictures (see :func:`picture_layout`)."""
    return picture_layout(shape) is not None


def step_makes(step: str, shape) -> bool:
    """Whether the picture step ``step`` (one of :data:`PREPROCESSING`) makes inputs of ``shape``: ``resize``
    any picture, ``mnist-digit`` grey 28x28 ones only."""
    layout = picture_layout(shape)
    return layout is not None and (step != "mnist-digit" or (layout[:2] == (28, 28) and layout[2] in (None, 1)))


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
    preprocessing: Literal["resize", "mnist-digit"] | None = None  # image-shaped inputs only
    train_seconds: float | None = None
    pruned: dict[str, Any] | None = None  # how it was pruned, when it was
    parent: str | None = None  # the tag it was pruned from


class KerasReluCard(ReluCard):
    MODEL_FILE: ClassVar[str] = "model.keras"

    kind: Literal["keras-relu"]


class OnnxReluCard(ReluCard):
    PUBLIC: ClassVar[tuple[str, ...]] = (*ReluCard.PUBLIC, "opset", "producer", "unit_convention")
    MODEL_FILE: ClassVar[str] = "model.onnx"

    kind: Literal["onnx-relu"]
    relu_layers: list[OnnxLayerCard] = Field(min_length=1)
    opset: int
    producer: str = Field(description="the program that wrote the file, as the file says (e.g. pytorch 2.9)")
    unit_convention: str


class LinearCard(ModelCard):
    PUBLIC: ClassVar[tuple[str, ...]] = (*ModelCard.PUBLIC, "contribution_sparsity", "feature_names")
    MODEL_FILE: ClassVar[str] = "model.skops"

    kind: Literal["linear"]
    contribution_sparsity: MeanStd
    coefficients: list[list[float]] = Field(min_length=1)  # (classes, features); one row for two classes
    intercept: list[float] = Field(min_length=1)
    scaler_mean: list[float]
    scaler_scale: list[float]
    feature_names: list[str]


AnyCard = Annotated[KerasReluCard | OnnxReluCard | LinearCard, Field(discriminator="kind")]
_ANY_CARD = TypeAdapter(AnyCard)


class ModelCardError(ValueError):
    """A stored model's metadata is not a valid card: one line with the tag and the field."""


def load_card(tag: str, metadata: dict) -> KerasReluCard | OnnxReluCard | LinearCard:
    """The card of a stored model, of the class its ``kind`` names; ModelCardError otherwise."""
    if not isinstance(metadata, dict) or "kind" not in metadata:
        raise ModelCardError(
            f"model {tag}: metadata field 'kind' is missing "
            "(not registered: python -m training register, or make train)"
        )
    if metadata["kind"] not in KINDS:
        raise ModelCardError(f"model {tag}: kind {metadata['kind']!r} is not one of {', '.join(KINDS)}")
    try:
        return _ANY_CARD.validate_python(metadata)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(part) for part in first["loc"]][1:]  # the first part is the kind's tag
        field = ".".join(loc) or "(metadata)"
        problem = "is missing" if first["type"] == "missing" else f"is invalid: {first['msg']}"
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise ModelCardError(f"model {tag}: metadata field '{field}' {problem}{more}; register it again") from None
