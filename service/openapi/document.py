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

from service import routes
from service.openapi import log as openapi_log
from service.openapi import oip as openapi_oip
from service.openapi import shadow as openapi_shadow
from service.openapi.project import (
    API_TAG,
    DESCRIPTION,
    EXAMPLES,
    NAME_PARAMETER,
    OPENAPI_VERSION,
    REPLACED_COMPONENTS,
    TITLE,
    camel,
    component_schemas,
    extra_paths,
    ref,
    refusals,
)


def _name_operation(operation: dict, schemas: dict) -> None:
    """Give one generated operation named schemas, its real responses and an example (faults 3, 4, 6)."""
    name = operation["x-bentoml-name"]
    request = f"{camel(name)}Request"
    for content in operation.get("requestBody", {}).get("content", {}).values():
        schemas[request] = {**content["schema"], "title": request}
        content["schema"] = ref(request)
        if name in EXAMPLES:
            content["example"] = EXAMPLES[name]
    operation.setdefault("requestBody", {})["required"] = True
    ok = operation["responses"]["200"]
    for content in ok.get("content", {}).values():
        response = content["schema"].get("title", "").removesuffix("IODescriptor")
        if response not in schemas:
            raise ValueError(f"{name}: response schema {response!r} is not one of the service's own schemas")
        content["schema"] = ref(response)
    operation["responses"] = {"200": ok, **refusals()}  # 404: the alias's model is not served
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
    doc["paths"] |= (
        extra_paths() | openapi_oip.paths() | openapi_shadow.paths(NAME_PARAMETER) | openapi_log.paths(NAME_PARAMETER)
    )
    infrastructure = [tag for tag in doc.get("tags", []) if tag.get("name") != "Service APIs"]
    doc["tags"] = [{"name": API_TAG, "description": "Predictions with their sparsity, and the served models"}]
    doc["tags"] += [
        {
            "name": openapi_oip.TAG,
            "description": "The Open Inference Protocol's REST routes (Triton, MLServer, KServe)",
        },
        {"name": openapi_oip.MANAGEMENT_TAG, "description": "Load and unload models while serving"},
        {"name": openapi_shadow.TAG, "description": "A candidate version beside the one answering a name"},
        {"name": openapi_log.TAG, "description": "What was answered, kept: review it, train on it, watch drift"},
    ]
    doc["tags"] += infrastructure
    kept = {name: schema for name, schema in generated_schemas.items() if name not in REPLACED_COMPONENTS}
    kept = {name: schema for name, schema in kept.items() if not name.endswith(("__Input", "IODescriptor"))}
    doc["components"]["schemas"] = (
        kept | schemas | openapi_oip.schemas() | openapi_shadow.schemas() | openapi_log.schemas()
    )
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
        found = routes.handled_by(scope, routes.DOCUMENT)
        if found is None:
            await self.app(scope, receive, send)
            return
        if self.body is None:
            self.body = json.dumps(self.build()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(self.body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.body if scope["method"] == "GET" else b""})
