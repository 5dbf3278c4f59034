"""The Open Inference Protocol's routes in the API document (:mod:`service.http.oiproutes`): paths and schemas,
as KServe's ``required_api.md`` and Triton's repository extension describe them, with this service's outputs."""

from __future__ import annotations

from sparsity.contract import MAX_BATCH

TAG = "Open Inference Protocol (KServe V2)"
MANAGEMENT_TAG = "Model repository (management key)"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _error(description: str) -> dict:
    return {"description": description, "content": _json(_ref("OipError"))}


NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}, "description": "the model's name"}
VERSION = {
    "name": "version",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "the version: the model's store tag version",
}
PARAMETERS = {
    "type": "object",
    "additionalProperties": {"oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]},
}


def schemas() -> dict[str, dict]:
    tensor_data = {
        "type": "array",
        "items": {},
        "description": "the values in row-major order, flat or nested as the shape says (numbers)",
    }
    return {
        "OipError": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "OipServerMetadata": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "OipTensorMetadata": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "datatype": {"type": "string"},
                "shape": {"type": "array", "items": {"type": "integer"}},
                "parameters": PARAMETERS,
            },
        },
        "OipModelMetadata": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}, "description": "newest first"},
                "platform": {"type": "string", "description": "the model's kind"},
                "inputs": {"type": "array", "items": _ref("OipTensorMetadata")},
                "outputs": {"type": "array", "items": _ref("OipTensorMetadata")},
                "parameters": PARAMETERS,
            },
        },
        "OipInputTensor": {
            "type": "object",
            "required": ["name", "shape", "datatype"],
            "properties": {
                "name": {"type": "string", "enum": ["input"]},
                "shape": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "description": f"[N, *input_shape], N 1-{MAX_BATCH}",
                },
                "datatype": {"type": "string", "enum": ["FP32", "FP64"]},
                "parameters": PARAMETERS,
                "data": tensor_data,
            },
        },
        "OipInferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {
                    **PARAMETERS,
                    "description": '`{"detail": "units"}` adds each ReLU layer\'s per-unit firing (`units/<layer>`); '
                    '`{"binary_data_output": true}` answers every output in binary (Triton\'s extension)',
                },
                "inputs": {"type": "array", "items": _ref("OipInputTensor"), "minItems": 1, "maxItems": 1},
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}, "parameters": PARAMETERS},
                    },
                },
            },
        },
        "OipOutputTensor": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "shape": {"type": "array", "items": {"type": "integer"}},
                "datatype": {"type": "string"},
                "parameters": PARAMETERS,
                "data": tensor_data,
            },
        },
        "OipInferenceResponse": {
            "type": "object",
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {"type": "array", "items": _ref("OipOutputTensor")},
            },
        },
        "OipRepositoryIndex": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "string"},
                    "state": {"type": "string", "enum": ["READY", "LOADING", "UNAVAILABLE"]},
                    "reason": {"type": "string"},
                },
            },
        },
    }


def _get(operation_id: str, description: str, schema: str | None, parameters: list | None = None) -> dict:
    responses = {"200": {"description": "Successful Response"} | ({"content": _json(_ref(schema))} if schema else {})}
    if parameters:
        responses["404"] = _error("no such model or version is served")
    return {
        "get": {
            "tags": [TAG],
            "operationId": operation_id,
            "description": description,
            "parameters": parameters or [],
            "responses": responses,
        }
    }


def _infer(operation_id: str, parameters: list) -> dict:
    return {
        "post": {
            "tags": [TAG],
            "operationId": operation_id,
            "description": "Classify 1-"
            f"{MAX_BATCH} inputs (one FP32 tensor named `input`). Outputs: `probabilities` [N, classes], `label` "
            "[N] (INT64), `sparsity` [N, layers] (the layer names in its `parameters.layers`), "
            "`sparsity_overall` [N], `typicality_score` [N], `atypical` [N] (BOOL), and with "
            '`parameters: {"detail": "units"}` `units/<layer>` [N, units]. Triton\'s binary tensor extension '
            "(`Inference-Header-Content-Length`) is read and written.",
            "parameters": parameters,
            "requestBody": {"required": True, "content": _json(_ref("OipInferenceRequest"))},
            "responses": {
                "200": {"description": "Successful Response", "content": _json(_ref("OipInferenceResponse"))},
                "400": _error("the request breaks a rule: `error` names the field and the rule"),
                "404": _error("no such model or version is served"),
            },
        }
    }


def _repository(operation_id: str, description: str) -> dict:
    return {
        "post": {
            "tags": [MANAGEMENT_TAG],
            "operationId": operation_id,
            "description": description
            + " Needs `Authorization: Bearer <key>` from MANAGEMENT_KEY_FILE (403 when unset).",
            "parameters": [NAME],
            "requestBody": {
                "required": False,
                "content": _json(
                    {
                        "type": "object",
                        "properties": {"parameters": {"type": "object", "properties": {"version": {"type": "string"}}}},
                    }
                ),
            },
            "responses": {
                "200": {"description": "Done in every worker"},
                "400": _error("refused: one line saying why (the previous version keeps serving)"),
                "401": _error("a missing or wrong management key"),
                "403": _error("the repository routes are off (MANAGEMENT_KEY_FILE unset)"),
                "404": _error("no such model in the store, or not loaded"),
            },
        }
    }


def paths() -> dict:
    versioned = [NAME, VERSION]
    return {
        "/v2": _get("oip_server_metadata", "The server's name, version and protocol extensions.", "OipServerMetadata"),
        "/v2/health/live": _get("oip_live", 'Live: `{"live": true}`.', None),
        "/v2/health/ready": _get("oip_ready", 'Ready: `{"ready": true}`.', None),
        "/v2/models/{name}": _get(
            "oip_model_metadata",
            "The newest serving version's inputs and outputs, and every serving version.",
            "OipModelMetadata",
            [NAME],
        ),
        "/v2/models/{name}/versions/{version}": _get(
            "oip_model_version_metadata", "One version's metadata.", "OipModelMetadata", versioned
        ),
        "/v2/models/{name}/ready": _get("oip_model_ready", "200 when the model is served.", None, [NAME]),
        "/v2/models/{name}/versions/{version}/ready": _get(
            "oip_model_version_ready", "200 when the version is served.", None, versioned
        ),
        "/v2/models/{name}/infer": _infer("oip_infer", [NAME]),
        "/v2/models/{name}/versions/{version}/infer": _infer("oip_infer_version", versioned),
        "/v2/repository/index": {
            "post": {
                "tags": [MANAGEMENT_TAG],
                "operationId": "repository_index",
                "description": "Every stored version with its state here. Needs the management key.",
                "responses": {
                    "200": {"description": "Successful Response", "content": _json(_ref("OipRepositoryIndex"))},
                    "401": _error("a missing or wrong management key"),
                    "403": _error("the repository routes are off (MANAGEMENT_KEY_FILE unset)"),
                },
            }
        },
        "/v2/repository/models/{name}/load": _repository(
            "repository_load",
            "Load the model's latest stored version (replacing the versions serving) or `parameters.version` "
            "(served beside them) in every worker: audited, loaded, its card's examples replayed and checked, "
            "then switched to.",
        ),
        "/v2/repository/models/{name}/unload": _repository(
            "repository_unload",
            "Stop serving the model (every version, or `parameters.version`) in every worker, after its requests "
            "in flight.",
        ),
    }
