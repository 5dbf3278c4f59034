"""The prediction log's routes, typed (:mod:`service.rest.logroutes` answers them; the API document's schemas are
generated from these): a logged item, a page of them, a review, and a model's drift."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Review(BaseModel):
    label: str = Field(description='a class of the model, or "invalid": not a valid input at all')
    at: str = Field(json_schema_extra={"format": "date-time"})


class LogRow(BaseModel):
    id: int
    at: str = Field(json_schema_extra={"format": "date-time"})
    request_id: str = Field(description="the client's X-Request-ID, the protocol request's id, or the service's own")
    item: int = Field(description="the item's place in its request")
    model: str
    version: str
    role: Literal["primary", "canary"]
    route: str = Field(description="the route template that answered")
    label: str
    label_index: int
    top_probability: float
    layer_sparsity: dict[str, float] = Field(description="each ReLU layer's share of exact zeros for this item")
    overall_sparsity: float
    typicality_score: float | None
    atypical: bool
    latency_ms: float
    review: Review | None
    has_input: bool
    input: list | None = Field(None, description="GET /models/{name}/log/{id} only: the input, when the log kept it")


class LogPage(BaseModel):
    model: str
    rows: list[LogRow] = Field(description="newest first")
    next: int | None = Field(description="the cursor of the next page (`cursor=`), null on the last page")


class ReviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(description='a class of the model, or "invalid"')


class VersionDrift(BaseModel):
    version: str
    baseline: bool = Field(description="whether the version's card has a drift baseline (registered since the log)")
    window: int | None = Field(description="items a drift window holds (DRIFT_WINDOW)")
    alarm: float = Field(description="the PSI over which a window has drifted")
    psi: dict[str, float] = Field(description="per signal, the last closed window's PSI, the largest over the workers")
    drifted: bool
    windows: dict[str, int] = Field(description="closed windows so far: clean and drifted")


class Drift(BaseModel):
    model: str
    versions: list[VersionDrift]
