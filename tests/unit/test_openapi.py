"""service.openapi.fix_document on a document shaped like BentoML 1.4's (the served one is tested in
tests/integration/test_openapi.py)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import anyio
import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from predlog.query import PARAMETERS
from service import __version__
from service.openapi.document import OpenAPIDocument, fix_document
from service.openapi.project import REFUSALS

ROOT = Path(__file__).resolve().parents[2]


def _bentoml_operation(name: str, body_schema: dict, media: str, response_title: str) -> dict:
    """One @bentoml.api operation as BentoML 1.4 writes it (int status keys included)."""
    return {
        "post": {
            "responses": {
                200: {
                    "description": "Successful Response",
                    "content": {"application/json": {"schema": {"type": "object", "title": response_title}}},
                },
                400: {
                    "description": "Bad Request",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InvalidArgument"}}},
                },
                404: {
                    "description": "Not Found",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NotFound"}}},
                },
                500: {
                    "description": "Internal Server Error",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InternalServerError"}}},
                },
            },
            "tags": ["Service APIs"],
            "x-bentoml-name": name,
            "requestBody": {"content": {media: {"schema": body_schema}}},
            "operationId": f"sparsity_service__{name}",
        }
    }


def _generated() -> dict:
    image_input = {
        "type": "object",
        "title": "mnist_predict_image__Input",
        "required": ["image"],
        "properties": {"image": {"format": "binary", "title": "Image", "type": "file"}},
    }
    images_input = {"type": "object", "title": "Input", "properties": {"images": {"type": "array"}}}
    error = {"type": "object", "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}}
    return {
        "openapi": "3.0.2",
        "info": {"title": "sparsity_service", "version": "None", "description": "BentoML advert"},
        "servers": [{"url": "."}],
        "tags": [{"name": "Service APIs"}, {"name": "Infrastructure"}],
        "paths": {
            "/readyz": {"get": {"responses": {"200": {"description": "ok"}}, "tags": ["Infrastructure"]}},
            "/mnist/predict": _bentoml_operation(
                "mnist_predict", images_input, "application/json", "PredictResponseIODescriptor"
            ),
            "/mnist/predict_image": _bentoml_operation(
                "mnist_predict_image",
                dict(image_input, title="Input"),
                "multipart/form-data",
                "PredictResponseIODescriptor",
            ),
        },
        "components": {
            "schemas": {
                "mnist_predict_image__Input": image_input,
                "TaskStatusResponse": {
                    "type": "object",
                    "properties": {"executed_at": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
                },
                "InvalidArgument": error,
                "NotFound": error,
                "InternalServerError": error,
            }
        },
    }


def test_the_generated_shape_is_refused_by_the_validator_and_the_fixed_one_passes():
    with pytest.raises(OpenAPIValidationError, match="file"):
        validate(json.loads(json.dumps(_generated())))  # as served: JSON turns the int status keys into strings
    validate(fix_document(_generated(), version="1.2.3"))


def test_a_file_upload_becomes_a_binary_string():
    doc = fix_document(_generated(), version="1")
    body = doc["paths"]["/mnist/predict_image"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    request = doc["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    assert request["properties"]["image"]["type"] == "string"
    assert request["properties"]["image"]["format"] == "binary"
    assert '"type": "file"' not in str(doc).replace("'", '"')


def test_each_post_route_lists_exactly_its_responses_with_the_one_error_schema():
    doc = fix_document(_generated(), version="1")
    generic = ("/models/{name}/predict", "/models/{name}/predict_batch", "/models/{name}/predict_image")
    for path in ("/mnist/predict", "/mnist/predict_image", "/mnist/predict_batch", *generic):
        responses = doc["paths"][path]["post"]["responses"]
        assert set(responses) == {"200", *REFUSALS} == {"200", "400", "404", "408", "413", "415"}
        for status in REFUSALS:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}
    error = doc["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "detail"]
    assert error["properties"]["detail"]["items"] == {"$ref": "#/components/schemas/ErrorItem"}
    for gone in (
        "InvalidArgument",
        "NotFound",
        "InternalServerError",
        "TaskStatusResponse",
        "mnist_predict_image__Input",
    ):
        assert gone not in doc["components"]["schemas"]


def test_operations_get_named_schemas_ids_tags_and_examples():
    doc = fix_document(_generated(), version="1")
    op = doc["paths"]["/mnist/predict"]["post"]
    assert op["operationId"] == "mnist_predict" and op["tags"] == ["service"]
    content = op["requestBody"]["content"]["application/json"]
    assert content["schema"] == {"$ref": "#/components/schemas/MnistPredictRequest"}
    image = content["example"]["images"][0]
    assert len(image) == 28 and all(len(row) == 28 for row in image) and 0 < sum(map(sum, image)) < 784
    ok = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/PredictResponse"}
    assert "PredictResponseIODescriptor" not in doc["components"]["schemas"]
    assert [tag["name"] for tag in doc["tags"]] == [
        "service",
        "Open Inference Protocol (KServe V2)",
        "Model repository (management key)",
        "Shadows and canaries",
        "Prediction log and drift",
        "Infrastructure",
    ]


def test_the_log_routes_are_described_with_their_filters_keys_and_refusals():
    doc = fix_document(_generated(), version="9.9.9")
    page = doc["paths"]["/models/{name}/log"]["get"]
    assert {p["name"] for p in page["parameters"]} == {"name", *PARAMETERS}
    assert set(page["responses"]) == {"200", "400", "401", "404"}
    review = doc["paths"]["/models/{name}/log/{id}/review"]["put"]
    assert review["security"] == [{"bearer": []}] and set(review["responses"]) >= {"400", "401", "403", "404"}
    row = doc["components"]["schemas"]["LogRow"]
    assert {"typicality_score", "layer_sparsity", "atypical", "review", "has_input"} <= set(row["properties"])
    assert doc["components"]["schemas"]["ReviewRequest"]["required"] == ["label"]


def test_the_shadow_route_is_described_with_its_keys_and_refusals():
    doc = fix_document(_generated(), version="9.9.9")
    item = doc["paths"]["/models/{name}/shadow"]
    assert set(item) == {"get", "put", "delete"}
    assert set(item["put"]["responses"]) == {"200", "400", "401", "403", "404", "413", "503"}
    assert item["put"]["security"] == [{"bearer": []}] and {} in item["get"]["security"]
    request = doc["components"]["schemas"]["ShadowRequest"]
    assert request["required"] == ["version", "share"] and request["properties"]["mode"]["enum"] == ["mirror", "canary"]
    comparison = doc["components"]["schemas"]["Shadow"]["properties"]["comparison"]
    assert comparison["allOf"] == [{"$ref": "#/components/schemas/ShadowComparison"}] and comparison["nullable"]


def test_the_open_inference_protocol_routes_are_described():
    doc = fix_document(_generated(), version="1")
    infer = doc["paths"]["/v2/models/{name}/versions/{version}/infer"]["post"]
    assert [p["name"] for p in infer["parameters"]] == ["name", "version"]
    request = infer["requestBody"]["content"]["application/json"]["schema"]
    assert request == {"$ref": "#/components/schemas/OipInferenceRequest"}
    assert set(infer["responses"]) == {"200", "400", "404"}
    schemas = doc["components"]["schemas"]
    assert schemas["OipInputTensor"]["properties"]["datatype"]["enum"] == ["FP32", "FP64"]
    load = doc["paths"]["/v2/repository/models/{name}/load"]["post"]
    assert {"401", "403"} <= set(load["responses"]) and "management key" in load["tags"][0]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_the_routes_bentoml_does_not_know_are_added():
    doc = fix_document(_generated(), version="1")
    batch = doc["paths"]["/mnist/predict_batch"]["post"]
    assert batch["requestBody"]["content"]["application/x-npy"]["schema"] == {"type": "string", "format": "binary"}
    models = doc["paths"]["/models"]["get"]
    assert set(models["responses"]) == {"200"}
    schemas = doc["components"]["schemas"]
    assert schemas["ModelsResponse"]["properties"]["models"]["items"] == {"$ref": "#/components/schemas/ModelInfo"}
    assert {"$ref": "#/components/schemas/KerasReluModelInfo"} in schemas["ModelInfo"]["oneOf"]
    keras = schemas["KerasReluModelInfo"]
    assert {"name", "tag", "kind", "activation_sparsity", "relu_layers", "typicality"} <= set(keras["required"])
    assert keras["properties"]["kind"] == {"enum": ["keras-relu"], "title": "Kind", "type": "string"}
    assert "options" not in keras["properties"]  # only what /models shows, not the whole card
    onnx = schemas["OnnxReluModelInfo"]
    assert {"$ref": "#/components/schemas/OnnxReluModelInfo"} in schemas["ModelInfo"]["oneOf"]
    assert {"kind", "relu_layers", "opset", "producer", "unit_convention"} <= set(onnx["required"])
    assert onnx["properties"]["kind"]["enum"] == ["onnx-relu"]
    layer = schemas[onnx["properties"]["relu_layers"]["items"]["$ref"].rsplit("/", 1)[1]]
    assert {"tensor", "op", "axis", "rank", "units", "size"} <= set(layer["required"])
    card = doc["paths"]["/models/{name}"]["get"]
    assert set(card["responses"]) == {"200", "404"} and card["parameters"][0]["in"] == "path"
    predict = doc["paths"]["/models/{name}/predict"]["post"]
    body = predict["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/PredictRequest"} and len(body["example"]["inputs"]) == 1


def test_null_alternatives_become_nullable():
    doc = fix_document(_generated(), version="1")
    typicality = doc["components"]["schemas"]["TypicalityModel"]["properties"]["measured_on"]
    assert typicality.get("nullable") is True and typicality["type"] == "string" and "anyOf" not in typicality
    assert "'type': 'null'" not in str(doc)


def test_info_carries_the_project_version():
    doc = fix_document(_generated(), version=__version__)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert doc["info"]["version"] == project["version"] == __version__
    assert "BentoML advert" not in doc["info"]["description"]


def _call(app, method: str, path: str) -> list[dict]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    anyio.run(app, {"type": "http", "method": method, "path": path, "headers": []}, receive, send)
    return sent


def test_the_middleware_serves_the_built_document_once_and_passes_the_rest_on():
    builds, passed = [], []

    async def downstream(scope, receive, send):
        passed.append(scope["path"])

    app = OpenAPIDocument(downstream, build=lambda: builds.append(1) or {"openapi": "3.0.3"})
    for _ in range(2):
        start, body = _call(app, "GET", "/docs.json")
        assert start["status"] == 200 and json.loads(body["body"]) == {"openapi": "3.0.3"}
    start, body = _call(app, "HEAD", "/docs.json")
    assert body["body"] == b"" and dict(start["headers"])[b"content-length"] == b"%d" % len(
        json.dumps({"openapi": "3.0.3"})
    )
    assert builds == [1]  # built on first use, then kept
    _call(app, "GET", "/models")
    _call(app, "POST", "/docs.json")
    assert passed == ["/models", "/docs.json"]
