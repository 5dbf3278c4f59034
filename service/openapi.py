"""The OpenAPI document served at ``/docs.json``: BentoML's generated document, corrected in one step.

BentoML 1.4 generates the document from the ``@bentoml.api`` signatures. What it gets wrong for
this service, and what :func:`fix_document` does about each:

1. A file upload is typed ``type: file`` (OpenAPI 2; 3.0 has no such type, and validators and
   client generators refuse the document): it becomes ``type: string, format: binary``.
2. An optional value is ``anyOf: [X, {type: "null"}]`` (JSON Schema; 3.0 has no null type): it
   becomes ``X`` with ``nullable: true``.
3. Every operation lists 404 and 500, none lists 408, 413 or 415, and the error body is described
   as ``{error, detail: string}``. Each operation now lists what it can really answer: 200, and for
   every POST route 400 (validation), 408 (body deadline), 413 (body size) and 415 (Content-Type),
   all with the one ``Error`` schema, the body every refusal has (``service.middleware.error_body``
   and BentoML's validation errors as ``RequestGuard`` rewrites them). No 503: a worker takes
   connections only once its models are loaded (``__init__`` runs before it serves).
4. Operations are tagged "Service APIs"; request and response schemas are inlined under generic titles (``Input``,
   ``MnistResponseIODescriptor``): they become named components (``MnistPredictRequest``,
   ``MnistResponse``) so that generated clients get readable names, and each ``operationId`` is the
   endpoint's name (``mnist_predict``) rather than ``sparsity_service__mnist_predict``, under the tag
   ``service``.
5. Routes served outside ``@bentoml.api`` are missing: ``POST /mnist/predict_batch`` (``.npy``)
   and ``GET /models`` (schemas from the model cards of :mod:`sparsity.card`) are added.
6. Request bodies get examples; ``info`` gets the project's title, version and description
   instead of BentoML's advert and ``version: "None"``; components nothing refers to are dropped.

:class:`OpenAPIDocument` serves the result, built once per worker on the first request.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic.json_schema import models_json_schema

from service import routes
from service.npy import ACCEPTED_DTYPES, MAX_NPY_IMAGES
from service.schemas import Error, IrisResponse, MnistResponse
from sparsity.card import IrisCard, MnistCard, ModelCard

DOCUMENT_PATH = "/docs.json"
OPENAPI_VERSION = "3.0.3"
TITLE = "ReLU sparsity service"
DESCRIPTION = (
    "Predictions from a ReLU CNN (MNIST) and an L1 logistic regression (iris), each answered with the "
    "activation sparsity of its own forward pass: the fraction of exact zeros in every ReLU layer "
    "(MNIST), or the share of zero coefficient-times-feature terms (iris), plus a typicality score.\n\n"
    "Every refusal (400, 408, 413, 415) has the same body, the `Error` schema: `error` is one line "
    "naming the field and the rule, `detail` lists it as `{type, loc, msg}`."
)
API_TAG = "service"
"""The tag of the prediction routes and /models (BentoML's is "Service APIs": ``api.service_ap_is`` in a
generated Python client)."""
REFUSALS = {
    "400": "Invalid input: a field, a value or the body breaks a rule (named in `error`)",
    "408": "The request body did not arrive within BODY_TIMEOUT_SECONDS (the connection is closed)",
    "413": "The request body is larger than MAX_BODY_BYTES",
    "415": "The Content-Type is not the one this route accepts",
}
REPLACED_COMPONENTS = ("InvalidArgument", "NotFound", "InternalServerError", "TaskStatusResponse")
"""BentoML's error components (replaced by ``Error``) and its task-queue schema (no task endpoints)."""


def _one_digit() -> list[list[float]]:
    """A 28x28 image of a vertical stroke: a plausible "1", small enough to read in the docs."""
    return [[1.0 if 4 <= row < 24 and 13 <= col < 15 else 0.0 for col in range(28)] for row in range(28)]


EXAMPLES: dict[str, Any] = {
    "mnist_predict": {"images": [_one_digit()]},
    "iris_predict": {"features": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]},
}
"""Request body examples, by endpoint name (valid requests: the integration tests send them)."""


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _refusals() -> dict:
    return {status: {"description": text, "content": _json(_ref("Error"))} for status, text in REFUSALS.items()}


def _camel(name: str) -> str:
    return "".join(part.title() for part in name.split("_"))


def _card_schema(card: type[ModelCard], title: str, what: str) -> tuple[dict, dict]:
    """The schema of one entry of ``GET /models`` (``{"tag", **card.describe()}``), and its $defs."""
    schema = card.model_json_schema(mode="serialization", ref_template="#/components/schemas/{model}")
    public = set(card.PUBLIC)
    properties = {"tag": {"type": "string", "description": "the model's tag in the BentoML store"}}
    properties |= {name: value for name, value in schema["properties"].items() if name in public}
    required = ["tag", *(name for name in schema.get("required", []) if name in public)]
    entry = {"type": "object", "title": title, "description": what, "properties": properties, "required": required}
    return entry, schema.get("$defs", {})


def component_schemas() -> dict[str, dict]:
    """The named schemas this service defines itself (pydantic models and model cards)."""
    _, top = models_json_schema(
        [(model, "serialization") for model in (MnistResponse, IrisResponse, Error)],
        ref_template="#/components/schemas/{model}",
    )
    schemas = dict(top["$defs"])
    mnist, mnist_defs = _card_schema(MnistCard, "MnistModelInfo", "The MNIST CNN's card and training baselines")
    iris, iris_defs = _card_schema(IrisCard, "IrisModelInfo", "The iris classifier's card and training baselines")
    schemas |= mnist_defs | iris_defs | {"MnistModelInfo": mnist, "IrisModelInfo": iris}
    schemas["ModelsResponse"] = {
        "type": "object",
        "title": "ModelsResponse",
        "required": ["models"],
        "properties": {
            "models": {
                "type": "array",
                "description": "the served models: the MNIST CNN, then the iris classifier",
                "items": {"oneOf": [_ref("MnistModelInfo"), _ref("IrisModelInfo")]},
            }
        },
    }
    return schemas


def _extra_paths() -> dict:
    """The routes answered outside ``@bentoml.api``: the .npy batch route and /models."""
    dtypes = " or ".join(ACCEPTED_DTYPES.values())
    batch = {
        "post": {
            "tags": [API_TAG],
            "operationId": "mnist_predict_batch",
            "description": f"Classify 1-{MAX_NPY_IMAGES} images sent as one NumPy `.npy` file (as written by "
            f"`numpy.save`) of shape (N, 28, 28), dtype {dtypes}; never unpickled. The answer is that of "
            "/mnist/predict, in the same order. The fast route for large batches.",
            "requestBody": {
                "required": True,
                "content": {"application/x-npy": {"schema": {"type": "string", "format": "binary"}}},
            },
            "responses": {"200": {"description": "Successful Response", "content": _json(_ref("MnistResponse"))}}
            | _refusals(),
        }
    }
    models = {
        "get": {
            "tags": [API_TAG],
            "operationId": "list_models",
            "description": "The served models' tags, test accuracy and training-time sparsity baselines "
            "(the figures Prometheus compares live sparsity with), and their typicality calibration.",
            "responses": {"200": {"description": "Successful Response", "content": _json(_ref("ModelsResponse"))}},
        }
    }
    return {routes.MNIST_PREDICT_BATCH.path: batch, routes.MODELS_PATH: models}


def _name_operation(operation: dict, schemas: dict) -> None:
    """Give one generated operation named schemas, its real responses and an example (faults 3, 4, 6)."""
    name = operation["x-bentoml-name"]
    request = f"{_camel(name)}Request"
    for content in operation.get("requestBody", {}).get("content", {}).values():
        schemas[request] = {**content["schema"], "title": request}
        content["schema"] = _ref(request)
        if name in EXAMPLES:
            content["example"] = EXAMPLES[name]
    operation.setdefault("requestBody", {})["required"] = True
    ok = operation["responses"]["200"]
    for content in ok.get("content", {}).values():
        response = content["schema"].get("title", "").removesuffix("IODescriptor")
        if response not in schemas:
            raise ValueError(f"{name}: response schema {response!r} is not one of the service's own schemas")
        content["schema"] = _ref(response)
    operation["responses"] = {"200": ok, **_refusals()}
    operation["operationId"] = name
    operation["tags"] = [API_TAG]


def _openapi30(node: Any) -> None:
    """JSON Schema forms that OpenAPI 3.0 lacks, rewritten in place (faults 1 and 2)."""
    if isinstance(node, dict):
        if node.get("type") == "file":
            node["type"] = "string"
            node["format"] = "binary"
        for key in ("anyOf", "oneOf"):
            options = node.get(key)
            if isinstance(options, list) and {"type": "null"} in options:
                rest = [option for option in options if option != {"type": "null"}]
                del node[key]
                if len(rest) == 1 and "$ref" in rest[0]:
                    node["allOf"] = rest  # a $ref's siblings are ignored in 3.0
                elif len(rest) == 1:
                    node.update(rest[0])
                else:
                    node[key] = rest
                node["nullable"] = True
        for value in node.values():
            _openapi30(value)
    elif isinstance(node, list):
        for value in node:
            _openapi30(value)


def fix_document(generated: dict, *, version: str) -> dict:
    """BentoML's generated document with faults 1-6 of the module docstring fixed (a new dict)."""
    doc = json.loads(json.dumps(generated))  # a copy, with the int status keys BentoML uses as JSON strings
    doc["openapi"] = OPENAPI_VERSION
    doc["info"] = {"title": TITLE, "version": version, "description": DESCRIPTION}
    generated_schemas = doc.setdefault("components", {}).get("schemas", {})
    schemas = component_schemas()
    for path_item in doc["paths"].values():
        for operation in path_item.values():
            if isinstance(operation, dict) and "x-bentoml-name" in operation:
                _name_operation(operation, schemas)
    doc["paths"] |= _extra_paths()
    infrastructure = [tag for tag in doc.get("tags", []) if tag.get("name") != "Service APIs"]
    doc["tags"] = [{"name": API_TAG, "description": "Predictions with their sparsity, and the served models"}]
    doc["tags"] += infrastructure
    kept = {name: schema for name, schema in generated_schemas.items() if name not in REPLACED_COMPONENTS}
    kept = {name: schema for name, schema in kept.items() if not name.endswith(("__Input", "IODescriptor"))}
    doc["components"]["schemas"] = kept | schemas
    _openapi30(doc)
    return doc


class OpenAPIDocument:
    """ASGI middleware answering ``GET /docs.json`` (and ``HEAD``) with ``build()``'s document, built on first
    use and kept: the document only changes with the code."""

    def __init__(self, app, build: Callable[[], dict]) -> None:
        self.app = app
        self.build = build
        self.body: bytes | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD") or scope["path"] != DOCUMENT_PATH:
            await self.app(scope, receive, send)
            return
        if self.body is None:
            self.body = json.dumps(self.build()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(self.body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.body if scope["method"] == "GET" else b""})
