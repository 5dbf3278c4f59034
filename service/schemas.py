"""Request and response shapes of the HTTP API (also the OpenAPI at /docs).

Validation fails fast: the first broken rule is reported, with its location, so a malformed
1024-image batch yields one short message instead of a million.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, Strict, ValidationError, model_serializer
from pydantic_core import InitErrorDetails, PydanticCustomError

from sparsity.contract import IRIS_FEATURE_LIMIT, MAX_BATCH, MNIST_SHAPE

StrictFinite = Annotated[float, Strict(), AllowInfNan(False)]
"""A JSON number: no strings, no booleans, no NaN/Infinity."""

Pixel = Annotated[StrictFinite, Field(ge=0.0, le=1.0)]
PixelRow = Annotated[list[Pixel], Field(min_length=MNIST_SHAPE[1], max_length=MNIST_SHAPE[1], fail_fast=True)]
Image = Annotated[list[PixelRow], Field(min_length=MNIST_SHAPE[0], max_length=MNIST_SHAPE[0], fail_fast=True)]
Images = Annotated[
    list[Image],
    Field(
        min_length=1,
        max_length=MAX_BATCH,
        fail_fast=True,
        description=f"1 to {MAX_BATCH} images, each 28 rows of 28 numbers in [0, 1] (pixel / 255), "
        "white digit on black as in MNIST",
    ),
]
IrisValue = Annotated[StrictFinite, Field(ge=-IRIS_FEATURE_LIMIT, le=IRIS_FEATURE_LIMIT)]
IrisRow = Annotated[list[IrisValue], Field(min_length=4, max_length=4, fail_fast=True)]
IrisRows = Annotated[
    list[IrisRow],
    Field(
        min_length=1,
        max_length=MAX_BATCH,
        fail_fast=True,
        description=f"1 to {MAX_BATCH} rows of 4 numbers: sepal length, sepal width, petal length, petal width "
        f"(cm), each within +/-{IRIS_FEATURE_LIMIT:g}",
    ),
]


class Sparsity(BaseModel):
    overall: float = Field(
        description="ReLU models: zeros over activations across all probed layers; linear models: the share of "
        "coefficient x feature terms that are exactly zero"
    )
    layers: dict[str, float] = Field(
        description="exact-zero fraction of each probed ReLU-family layer call (nested blocks 'outer/inner', a "
        "layer called k times 'name@1'..'name@k'); linear models: {'coefficients': contributions}"
    )
    weights: float | None = Field(None, description="linear models: share of exactly-zero coefficients")
    contributions: float | None = Field(
        None, description="linear models: share of coefficient x feature terms that are zero"
    )

    @model_serializer(mode="wrap")
    def _without_nulls(self, handler):
        """Fields a model kind does not have are left out, not null: the alias and generic routes answer alike."""
        return {key: value for key, value in handler(self).items() if value is not None}


class TypicalityAnswer(BaseModel):
    score: float = Field(
        description="how unlike the calibration data this input is; higher is less typical. ReLU models "
        "(detector unit-firing): per layer, the distance of its per-unit firing shares from the nearest class's "
        "calibration pattern, standardised (0 is an average calibration item, so it can be negative) and summed "
        "over layers; linear models: the Mahalanobis distance of the standardized features. "
        "See /models/{name} for the detector and its threshold"
    )
    atypical: bool = Field(description="score above the threshold calibrated at registration (see /models/{name})")


class PredictionAnswer(BaseModel):
    label: int = Field(description="index of the most probable class")
    name: str = Field(description="the class's name (the card's class_names)")
    probabilities: list[float]
    sparsity: Sparsity
    typicality: TypicalityAnswer
    units: dict[str, list[float]] | None = Field(
        default=None,
        description="with ?detail=units: per ReLU layer, each unit's share of its positions that were on (0: it did "
        "not fire)",
    )

    @model_serializer(mode="wrap")
    def _without_nulls(self, handler):
        """``units`` only when asked for."""
        return {key: value for key, value in handler(self).items() if value is not None}


class ExamplesResponse(BaseModel):
    inputs: list[Any] = Field(description="a few calibration items, each of the model's input shape")
    labels: list[int] | None = Field(description="their labels, when registration had labels")


class PredictResponse(BaseModel):
    model: str = Field(description="the tag of the model that answered")
    predictions: list[PredictionAnswer] = Field(description="one per input, in input order")


class PredictRequest(BaseModel):
    """The body of POST /models/{name}/predict."""

    # the route parses it on its fast path (service.codecs.json_inputs) with the same rules, and the card's shape
    # and range; the fuzz test sends what this allows and checks the answers against the document

    model_config = ConfigDict(extra="forbid")

    inputs: list[list[Any]] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description=f"1 to {MAX_BATCH} inputs, each nested lists of numbers of the model's input_shape, within its "
        "input_range (both on its card: GET /models/{name})",
    )


class RefusedModel(BaseModel):
    tag: str
    reason: str


class ModelsResponse(BaseModel):
    """The served models' cards and the refused ones."""

    # the cards are the kinds' own models: ``models`` refers to their one-of, ModelInfo (service.openapi.project)

    models: list[dict[str, Any]] = Field(
        description="the served models, by name",
        json_schema_extra={"items": {"$ref": "#/components/schemas/ModelInfo"}},
    )
    refused: list[RefusedModel] = Field(description="stored models that are not served, and why (one line each)")


def input_error(loc: tuple[str | int, ...], message: str) -> ValidationError:
    """A ValidationError shaped like pydantic's own, so every 400 of the API looks the same:
    ``{"error": ..., "detail": [{"type", "loc", "msg"}]}``."""
    detail = InitErrorDetails(type=PydanticCustomError("invalid_input", message), loc=loc, input=None)
    return ValidationError.from_exception_data("request", [detail])


class ErrorItem(BaseModel):
    type: str = Field(
        description="the broken rule, machine-readable: e.g. less_than_equal, json_invalid, body_too_large"
    )
    loc: list[str | int] = Field(
        description="where: field names and list indexes (images, 0, 3, 4); 'body' or [] for the body as a whole, "
        "'Content-Type' for the header"
    )
    msg: str = Field(description="the rule, in words")


class Error(BaseModel):
    """The body of every refusal (400, 408, 413, 415)."""

    error: str = Field(
        description="one line naming the field and the rule, e.g. 'images[0][3][4]: Input should be less than or "
        "equal to 1'"
    )
    detail: list[ErrorItem] = Field(description="each broken rule (validation stops at the first one)")
