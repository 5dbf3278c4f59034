"""The Open Inference Protocol's routes in the API document (:mod:`service.rest.oiproutes`): paths and schemas,
as KServe's ``required_api.md`` and Triton's repository extension describe them, with this service's outputs."""

from __future__ import annotations

from service.openapi.parts import answer, json_content, ref, schemas_of
from service.protocol import OIP_ANSWERS, OIP_REQUESTS
from sparsity.contract import MAX_BATCH

TAG = "Open Inference Protocol (KServe V2)"
MANAGEMENT_TAG = "Model repository (management key)"


def _error(description: str) -> dict:
    return answer(description, "OipError")


NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}, "description": "the model's name"}
VERSION = {
    "name": "version",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "the version: the model's store tag version",
}


def schemas() -> dict[str, dict]:
    """The protocol's bodies (:mod:`service.protocol`): requests as clients may send them, answers as sent."""
    return schemas_of(OIP_REQUESTS, "validation") | schemas_of(OIP_ANSWERS)


def _get(operation_id: str, description: str, schema: str | None, parameters: list | None = None) -> dict:
    responses = {"200": answer("Successful Response", schema)}
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
            "requestBody": {"required": True, "content": json_content(ref("OipInferenceRequest"))},
            "responses": {
                "200": answer("Successful Response", "OipInferenceResponse"),
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
            "requestBody": {"required": False, "content": json_content(ref("OipRepositoryRequest"))},
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
        "/v2/health/live": _get("oip_live", 'Live: `{"live": true}`.', "OipLive"),
        "/v2/health/ready": _get("oip_ready", 'Ready: `{"ready": true}`.', "OipServerReady"),
        "/v2/models/{name}": _get(
            "oip_model_metadata",
            "The newest serving version's inputs and outputs, and every serving version.",
            "OipModelMetadata",
            [NAME],
        ),
        "/v2/models/{name}/versions/{version}": _get(
            "oip_model_version_metadata", "One version's metadata.", "OipModelMetadata", versioned
        ),
        "/v2/models/{name}/ready": _get("oip_model_ready", "200 when the model is served.", "OipReady", [NAME]),
        "/v2/models/{name}/versions/{version}/ready": _get(
            "oip_model_version_ready", "200 when the version is served.", "OipReady", versioned
        ),
        "/v2/models/{name}/infer": _infer("oip_infer", [NAME]),
        "/v2/models/{name}/versions/{version}/infer": _infer("oip_infer_version", versioned),
        "/v2/repository/index": {
            "post": {
                "tags": [MANAGEMENT_TAG],
                "operationId": "repository_index",
                "description": "Every stored version with its state here. Needs the management key.",
                "requestBody": {"required": False, "content": json_content(ref("OipIndexRequest"))},
                "responses": {
                    "200": answer("Successful Response", "OipRepositoryIndex"),
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
