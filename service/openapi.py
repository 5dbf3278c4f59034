"""The OpenAPI document served at ``/docs.json``: BentoML's generated document, corrected in one step.

BentoML 1.4 generates the document from the ``@bentoml.api`` signatures. What it gets wrong for
this service, and what :func:`fix_document` does about each:

1. A file upload is typed ``type: file`` (OpenAPI 2; 3.0 has no such type, and validators and
   client generators refuse the document): it becomes ``type: string, format: binary``. A ``const``
   (a card's ``kind``) becomes a one-value ``enum``.
2. An optional value is ``anyOf: [X, {type: "null"}]`` (JSON Schema; 3.0 has no null type): it
   becomes ``X`` with ``nullable: true``.
3. Every operation lists 404 and 500, none lists 408, 413 or 415, and the error body is described
   as ``{error, detail: string}``. Each operation now lists what it can really answer: 200, and for
   every POST route 400 (validation), 408 (body deadline), 413 (body size) and 415 (Content-Type),
   all with the one ``Error`` schema, the body every refusal has (``service.middleware.error_body``
   and BentoML's validation errors as ``RequestGuard`` rewrites them). No 503: a worker takes
   connections only once its models are loaded (``__init__`` runs before it serves).
4. Operations are tagged "Service APIs"; request and response schemas are inlined under generic titles (``Input``,
   ``PredictResponseIODescriptor``): they become named components (``MnistPredictRequest``,
   ``PredictResponse``) so that generated clients get readable names, and each ``operationId`` is the
   endpoint's name (``mnist_predict``) rather than ``sparsity_service__mnist_predict``, under the tag
   ``service``.
5. Routes served outside ``@bentoml.api`` are missing: every model's ``/models/{name}/...`` routes,
   ``GET /models/{name}``, ``POST /mnist/predict_batch`` (``.npy``)
   and ``GET /models`` (schemas from the model cards of :mod:`modelstore.card`) are added.
6. Request bodies get examples; ``info`` gets the project's title, version and description
   instead of BentoML's advert and ``version: "None"``; components nothing refers to are dropped.

:class:`OpenAPIDocument` serves the result, built once per worker on the first request.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic.json_schema import models_json_schema

from modelstore.card import ModelCard
from modelstore.kinds import KINDS
from service import openapi_oip, openapi_shadow, routes
from service.codecs.npy import ACCEPTED_DTYPES
from service.schemas import Error, ExamplesResponse, PredictResponse
from sparsity.contract import MAX_BATCH, MAX_NPY_ITEMS

DOCUMENT_PATH = "/docs.json"
OPENAPI_VERSION = "3.0.3"
TITLE = "ReLU sparsity service"
DESCRIPTION = (
    "Predictions from every registered model (Keras and ONNX classifiers whose hidden layers are ReLU-family, and "
    "linear classifiers), each answered with the activation sparsity of its own forward pass: the fraction "
    "of exact zeros in every ReLU-family layer, or the share of zero coefficient-times-feature terms, plus "
    "a typicality score. `GET /models` lists the served models; each has `/models/{name}/predict` (JSON), "
    "`/models/{name}/predict_batch` (.npy) and, for picture models, `/models/{name}/predict_image`. The "
    "`/mnist/*` and `/iris/predict` routes are aliases of `mnist_cnn`'s and `iris_l1`'s.\n\n"
    "Every refusal (400, 404, 408, 413, 415) has the same body, the `Error` schema: `error` is one line "
    "naming the field and the rule, `detail` lists it as `{type, loc, msg}`."
)
API_TAG = "service"
"""The tag of the prediction routes and /models (BentoML's is "Service APIs": ``api.service_ap_is`` in a
generated Python client)."""
REFUSALS = {
    "400": "Invalid input: a field, a value or the body breaks a rule (named in `error`)",
    "404": "No model of that name is served (`GET /models` lists them), or it takes no pictures (predict_image)",
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
    properties = {
        "name": {"type": "string", "description": "the model's name: its routes are /models/{name}/..."},
        "tag": {"type": "string", "description": "the model's tag in the BentoML store"},
    }
    properties |= {name: value for name, value in schema["properties"].items() if name in public}
    properties["engine"] = {
        "type": "string",
        "enum": ["sparse", "onnxruntime", "tensorflow", "numpy"],
        "description": "what computes this model's answers in this service: the fastest engine that passed its "
        "check at registration (see engines), unless the ENGINE setting names another",
    }
    required = ["name", "tag", *(name for name in schema.get("required", []) if name in public)]
    entry = {"type": "object", "title": title, "description": what, "properties": properties, "required": required}
    return entry, schema.get("$defs", {})


def component_schemas() -> dict[str, dict]:
    """The named schemas this service defines itself (pydantic models and model cards)."""
    _, top = models_json_schema(
        [(model, "serialization") for model in (PredictResponse, Error, ExamplesResponse)],
        ref_template="#/components/schemas/{model}",
    )
    schemas = dict(top["$defs"])
    entries, definitions = {}, {}
    for kind in KINDS.values():
        title = kind.card.__name__.removesuffix("Card") + "ModelInfo"
        entries[title], defs = _card_schema(kind.card, title, kind.describes)
        definitions |= defs
    schemas |= definitions | entries
    schemas["ModelInfo"] = {
        "title": "ModelInfo",
        "description": "One served model's card (by its kind)",
        "oneOf": [_ref(title) for title in entries],
    }
    schemas["ModelsResponse"] = {
        "type": "object",
        "title": "ModelsResponse",
        "required": ["models", "refused"],
        "properties": {
            "models": {"type": "array", "description": "the served models, by name", "items": _ref("ModelInfo")},
            "refused": {
                "type": "array",
                "description": "stored models that are not served, and why (one line each)",
                "items": {
                    "type": "object",
                    "required": ["tag", "reason"],
                    "properties": {"tag": {"type": "string"}, "reason": {"type": "string"}},
                },
            },
        },
    }
    schemas["PredictRequest"] = {
        "type": "object",
        "title": "PredictRequest",
        "required": ["inputs"],
        "additionalProperties": False,
        "properties": {
            "inputs": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH,
                "description": f"1 to {MAX_BATCH} inputs, each nested lists of numbers of the model's input_shape, "
                "within its input_range (both on its card: GET /models/{name})",
                "items": {"type": "array", "items": {}},
            }
        },
    }
    return schemas


NAME_PARAMETER = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "the model's name (GET /models lists them)",
    "schema": {"type": "string"},
    "example": "mnist_cnn",
}


DETAIL_PARAMETER = {
    "name": "detail",
    "in": "query",
    "required": False,
    "description": "`units`: each answer also carries `units`, per ReLU layer each unit's share of its positions "
    "that were on for this input (0: it did not fire); empty for a linear model",
    "schema": {"type": "string", "enum": ["units"]},
}


VERSION_PARAMETER = {
    "name": "version",
    "in": "query",
    "required": False,
    "description": "one serving version of the model answers (GET /models lists them); without it, the version "
    "that answers the name (and, with a canary set, its candidate for the canary's share of requests)",
    "schema": {"type": "string"},
}


def _post(operation_id: str, description: str, content: dict, example: Any = None, name: bool = True) -> dict:
    body: dict = {"required": True, "content": content}
    if example is not None:
        next(iter(content.values()))["example"] = example
    operation = {
        "tags": [API_TAG],
        "operationId": operation_id,
        "description": description,
        "requestBody": body,
        "responses": {"200": {"description": "Successful Response", "content": _json(_ref("PredictResponse"))}}
        | _refusals(),
    }
    if name:
        operation["parameters"] = [NAME_PARAMETER, DETAIL_PARAMETER, VERSION_PARAMETER]
    return {"post": operation}


def _extra_paths() -> dict:
    """The routes answered outside ``@bentoml.api``: every model's routes, the alias .npy route and /models."""
    dtypes = " or ".join(ACCEPTED_DTYPES.values())
    npy = {"application/x-npy": {"schema": {"type": "string", "format": "binary"}}}
    upload = {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {"image": {"type": "string", "format": "binary", "description": "a PNG or JPEG"}},
            }
        }
    }
    batch_text = (
        f"1-{MAX_NPY_ITEMS} inputs sent as one NumPy `.npy` file (as written by `numpy.save`) of shape "
        f"(N, *input_shape), dtype {dtypes}; uint8 pixels are scaled onto the input range; never unpickled. "
        "The fast route for large batches."
    )
    models = {
        "get": {
            "tags": [API_TAG],
            "operationId": "list_models",
            "description": "The served models' cards: tags, accuracy, sparsity baselines (what Prometheus compares "
            "live sparsity with), typicality calibration; and the stored models that are not served, with why.",
            "responses": {"200": {"description": "Successful Response", "content": _json(_ref("ModelsResponse"))}},
        }
    }
    card = {
        "get": {
            "tags": [API_TAG],
            "operationId": "get_model",
            "description": "One served model's card.",
            "parameters": [NAME_PARAMETER],
            "responses": {
                "200": {"description": "Successful Response", "content": _json(_ref("ModelInfo"))},
                "404": {"description": REFUSALS["404"], "content": _json(_ref("Error"))},
            },
        }
    }
    examples = {
        "get": {
            "tags": [API_TAG],
            "operationId": "get_model_examples",
            "description": "A few items of the model's calibration set that neither fitted nor calibrated anything "
            "(with their labels when registration had labels): inputs to try the model on.",
            "parameters": [NAME_PARAMETER],
            "responses": {
                "200": {"description": "Successful Response", "content": _json(_ref("ExamplesResponse"))},
                "404": {"description": REFUSALS["404"], "content": _json(_ref("Error"))},
            },
        }
    }
    generic = routes.MODEL_ROUTES
    return {
        routes.MNIST_PREDICT_BATCH.path: _post(
            "mnist_predict_batch",
            f"Classify with mnist_cnn {batch_text} The same as /models/mnist_cnn/predict_batch.",
            npy,
            name=False,
        ),
        routes.MODELS_PATH: models,
        routes.MODELS_PATH + "/{name}": card,
        routes.MODELS_PATH + "/{name}/examples": examples,
        generic["predict"].path: _post(
            "predict",
            f"Classify 1-{MAX_BATCH} inputs with the model `name`; each answer carries the sparsity of its own "
            "forward pass and its typicality.",
            _json(_ref("PredictRequest")),
            {"inputs": EXAMPLES["mnist_predict"]["images"]},
        ),
        generic["predict_batch"].path: _post("predict_batch", f"Classify {batch_text}", npy),
        generic["predict_image"].path: _post(
            "predict_image",
            "Classify one uploaded PNG or JPEG with a picture model (input (H, W), (H, W, 1), (H, W, 3), or "
            "channels first (1, H, W) or (3, H, W)), converted by the step its card declares (`preprocessing`: "
            "resize, or mnist-digit).",
            upload,
        ),
    }


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
    operation["responses"] = {"200": ok, **_refusals()}  # 404: the alias's model is not served
    operation["operationId"] = name
    operation["tags"] = [API_TAG]


def _openapi30(node: Any) -> None:
    """JSON Schema forms that OpenAPI 3.0 lacks, rewritten in place (faults 1 and 2)."""
    if isinstance(node, dict):
        if node.get("type") == "file":
            node["type"] = "string"
            node["format"] = "binary"
        if "const" in node:  # a Literal (a card's kind): 3.0 has enum, not const
            node["enum"] = [node.pop("const")]
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
    doc["paths"] |= _extra_paths() | openapi_oip.paths() | openapi_shadow.paths(NAME_PARAMETER)
    infrastructure = [tag for tag in doc.get("tags", []) if tag.get("name") != "Service APIs"]
    doc["tags"] = [{"name": API_TAG, "description": "Predictions with their sparsity, and the served models"}]
    doc["tags"] += [
        {
            "name": openapi_oip.TAG,
            "description": "The Open Inference Protocol's REST routes (Triton, MLServer, KServe)",
        },
        {"name": openapi_oip.MANAGEMENT_TAG, "description": "Load and unload models while serving"},
        {"name": openapi_shadow.TAG, "description": "A candidate version beside the one answering a name"},
    ]
    doc["tags"] += infrastructure
    kept = {name: schema for name, schema in generated_schemas.items() if name not in REPLACED_COMPONENTS}
    kept = {name: schema for name, schema in kept.items() if not name.endswith(("__Input", "IODescriptor"))}
    doc["components"]["schemas"] = kept | schemas | openapi_oip.schemas() | openapi_shadow.schemas()
    doc["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "INFERENCE_KEY_FILE / MANAGEMENT_KEY_FILE keys"}
    }
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
