"""Request and response shapes of the HTTP API (also the OpenAPI at /docs).

Validation fails fast: the first broken rule is reported, with its location, so a malformed
1024-image batch yields one short message instead of a million.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AllowInfNan, BaseModel, Field, Strict, ValidationError
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


class MnistSparsity(BaseModel):
    overall: float = Field(description="zeros over activations across all ReLU layers")
    layers: dict[str, float] = Field(description="exact-zero fraction of each ReLU layer")


class Typicality(BaseModel):
    score: float = Field(
        description="Mahalanobis distance of this input's profile (MNIST: per-layer zero fractions; iris: "
        "standardized features) from the reference data; higher is less typical"
    )
    atypical: bool = Field(description="score above the threshold calibrated at training (see /models)")


class MnistPrediction(BaseModel):
    label: int
    probabilities: list[float]
    sparsity: MnistSparsity
    typicality: Typicality


class MnistResponse(BaseModel):
    model: str
    predictions: list[MnistPrediction]


class IrisSparsity(BaseModel):
    weights: float = Field(description="share of exactly-zero coefficients")
    contributions: float = Field(description="share of coefficient x feature terms that are zero")


class IrisPrediction(BaseModel):
    label: int
    name: str
    probabilities: list[float]
    sparsity: IrisSparsity
    typicality: Typicality


class IrisResponse(BaseModel):
    model: str
    predictions: list[IrisPrediction]


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
