"""The prediction log's routes in the API document (:mod:`service.rest.logroutes`), their schemas from
:mod:`service.logtypes`."""

from __future__ import annotations

from predlog.query import MAX_LIMIT, ROLES
from service.logtypes import Drift, LogPage, LogRow, ReviewRequest
from service.openapi.parts import answer, json_content, ref, schemas_of

TAG = "Prediction log and drift"


def _error(description: str) -> dict:
    return answer(description, "Error")


UNAUTHORIZED = _error("A key is needed and missing or wrong (`WWW-Authenticate: Bearer`)")
ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


FILTERS = [
    _query("version", {"type": "string"}, "one version's items"),
    _query("since", {"type": "string"}, "from this time: seconds since the epoch or ISO 8601"),
    _query("until", {"type": "string"}, "before this time"),
    _query("atypical", {"type": "boolean"}, "atypical items only, or typical ones"),
    _query("label", {"type": "string"}, "a class of the model (its name or index)"),
    _query("role", {"type": "string", "enum": list(ROLES)}, "which side answered"),
    _query("reviewed", {"type": "boolean"}, "reviewed items only, or not yet reviewed ones"),
    _query("cursor", {"type": "integer", "minimum": 1}, "the `next` of the page before"),
    _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50}, "items a page"),
]


def schemas() -> dict[str, dict]:
    return schemas_of((ReviewRequest,), "validation") | schemas_of((LogPage, LogRow, Drift))


def paths(name: dict) -> dict[str, dict]:
    inference = {"tags": [TAG], "security": [{"bearer": []}, {}]}
    not_found = _error("No model of that name is served (or no such item, or the log is off)")
    return {
        "/models/{name}/log": {
            "get": {
                **inference,
                "operationId": "get_log",
                "description": "A page of the model's logged items, newest first, filtered.",
                "parameters": [name, *FILTERS],
                "responses": {
                    "200": answer("A page of logged items", "LogPage"),
                    "400": _error("A filter breaks its rule (named in `error`)"),
                    "401": UNAUTHORIZED,
                    "404": not_found,
                },
            }
        },
        "/models/{name}/log/{id}": {
            "get": {
                **inference,
                "operationId": "get_log_item",
                "description": "One logged item, with its input when the log kept it.",
                "parameters": [name, ID],
                "responses": {
                    "200": answer("The item", "LogRow"),
                    "400": _error("The id is not a whole number"),
                    "401": UNAUTHORIZED,
                    "404": not_found,
                },
            }
        },
        "/models/{name}/log/{id}/review": {
            "put": {
                "tags": [TAG],
                "security": [{"bearer": []}],
                "operationId": "review_log_item",
                "description": "A reviewer's label for a logged item (a class of the model, or `invalid`), stored "
                "with the time; `python -m modelstore dataset NAME --reviewed` exports the labelled inputs.",
                "parameters": [name, ID],
                "requestBody": {"required": True, "content": json_content(ref("ReviewRequest"))},
                "responses": {
                    "200": answer("The item, reviewed", "LogRow"),
                    "400": _error("The label is not a class of the model nor `invalid`"),
                    "401": UNAUTHORIZED,
                    "403": _error("The management routes are off (MANAGEMENT_KEY_FILE unset)"),
                    "404": not_found,
                    "413": _error("The body is larger than 4 KiB"),
                },
            }
        },
        "/models/{name}/drift": {
            "get": {
                **inference,
                "operationId": "get_drift",
                "description": "Each serving version's drift: the last closed window's PSI per signal against the "
                "calibration baseline, and the windows so far.",
                "parameters": [name],
                "responses": {"200": answer("The model's drift", "Drift"), "401": UNAUTHORIZED, "404": not_found},
            }
        },
    }
