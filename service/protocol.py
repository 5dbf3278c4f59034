"""The Open Inference Protocol's bodies and the shadows' as typed models: what the API document says of them is
generated from these (:mod:`service.openapi.oip`, :mod:`service.openapi.shadow`), as KServe does from
``v2_datamodels.py``.

The routes keep parsing on the fast path (orjson and the checks of :mod:`service.codecs.oip`, whose refusals name
the field and the rule), so these models are the contract, not the parser: the fuzz test generates requests from
the document these make and checks every answer against it, and the unit tests validate the answers the codecs
build with these models, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from sparsity.contract import MAX_BATCH

Parameters = dict[str, Annotated[str | float | bool, Field()]]
"""The protocol's ``parameters``: names to strings, numbers or booleans."""
SHADOW_MODES = ("mirror", "canary")
"""What a shadow does with its share: mirror (run on the candidate too, compare) or canary (answer with it)."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")  # the protocol lets a client send more than it names


class OipError(BaseModel):
    error: str = Field(description="one line: the field and the rule, or what is missing")


class OipServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class OipTensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for the batch dimension")
    parameters: Parameters | None = None


class OipModelMetadata(BaseModel):
    name: str
    versions: list[str] = Field(description="newest first")
    platform: str = Field(description="the model's kind")
    inputs: list[OipTensorMetadata]
    outputs: list[OipTensorMetadata]
    parameters: Parameters = Field(description="`input_range` (low,high) and the `engine` that runs the model")


class OipReady(BaseModel):
    name: str
    version: str
    ready: bool


class OipLive(BaseModel):
    live: bool


class OipServerReady(BaseModel):
    ready: bool


class OipInputTensor(_Body):
    name: Literal["input"]
    shape: list[int] = Field(description=f"[N, *input_shape], N 1-{MAX_BATCH}")
    datatype: Literal["FP32", "FP64"]
    parameters: Parameters | None = None
    data: list[Any] | None = Field(
        None, description="the values in row-major order, flat or nested as the shape says (numbers)"
    )


class OipRequestedOutput(_Body):
    name: str
    parameters: Parameters | None = None


class OipInferenceRequest(_Body):
    id: str | None = None
    parameters: Parameters | None = Field(
        None,
        description='`{"detail": "units"}` adds each ReLU layer\'s per-unit firing (`units/<layer>`); '
        '`{"binary_data_output": true}` answers every output in binary (Triton\'s extension)',
    )
    inputs: list[OipInputTensor] = Field(min_length=1, max_length=1)
    outputs: list[OipRequestedOutput] | None = None


class OipOutputTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any] | None = Field(None, description="row-major values (absent when sent in binary)")


class OipInferenceResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[OipOutputTensor]


class OipRepositoryEntry(BaseModel):
    name: str
    version: str
    state: Literal["READY", "LOADING", "UNAVAILABLE"]
    reason: str


class OipRepositoryIndex(RootModel[list[OipRepositoryEntry]]):
    pass


class OipIndexRequest(BaseModel):
    ready: bool = Field(False, description="only the versions serving")


class OipRepositoryParameters(_Body):
    version: str | None = Field(None, description="this stored version (served beside the others)")
    replace: bool | None = Field(None, description="on a load: whether the name's other versions leave")


class OipRepositoryRequest(_Body):
    parameters: OipRepositoryParameters | None = None


OIP_REQUESTS = (OipInferenceRequest, OipIndexRequest, OipRepositoryRequest)
OIP_ANSWERS = (
    OipError,
    OipServerMetadata,
    OipLive,
    OipServerReady,
    OipModelMetadata,
    OipReady,
    OipInferenceResponse,
    OipRepositoryIndex,
)

# --- shadows (service.rest.shadowroutes)

Share = Annotated[float, Field(ge=0, le=1)]


class ShadowRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(description="a stored version of the model, not the primary")
    share: Share = Field(description="the share of the name's requests mirrored (or answered)")
    mode: Literal[SHADOW_MODES] = Field(
        "mirror",
        description="mirror: also run on the candidate and compare (the caller gets the primary's answer); canary: "
        "answered by the candidate instead (sticky by `X-Canary-Key`)",
    )


class CountShare(BaseModel):
    count: int
    share: float | None


class LayerMeans(BaseModel):
    primary: float | None = None
    candidate: float | None = None
    difference: float | None = None


class ShadowComparison(BaseModel):
    """Counts and means over the compared inputs (the same as `python -m modelstore compare`)"""

    inputs: int
    label_agreement: CountShare
    mean_total_variation: float | None
    layers: dict[str, LayerMeans]
    atypical: dict[str, CountShare]
    candidate_dead_units: dict[str, int] | None = None


class Shadow(BaseModel):
    model: str
    primary: str = Field(description="the version answering the name")
    candidate: str
    mode: Literal[SHADOW_MODES]
    share: Share
    id: str
    since: str = Field(json_schema_extra={"format": "date-time"})
    state: Literal["loading", "active", "removed"]
    inputs: dict[str, int] | None = Field(
        None,
        description="mirror: inputs mirrored, compared, dropped (the queue was full), failed (the candidate refused "
        "them), pending",
    )
    requests: dict[str, int] | None = Field(None, description="canary: the requests each side answered")
    comparison: ShadowComparison | None = None
