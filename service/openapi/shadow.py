"""``/models/{name}/shadow`` in the API document (:mod:`service.rest.shadowroutes`): its three operations and the
schemas of the request and the answer."""

from __future__ import annotations

from service.openapi.parts import answer, json_content, ref, schemas_of
from service.protocol import Shadow, ShadowRequest

TAG = "Shadows and canaries"


def _error(description: str) -> dict:
    return answer(description, "Error")


UNAUTHORIZED = _error("A key is needed and missing or wrong (`WWW-Authenticate: Bearer`)")


def schemas() -> dict[str, dict]:
    """The request and the answer (:mod:`service.protocol`)."""
    return schemas_of((ShadowRequest,), "validation") | schemas_of((Shadow,))


def paths(name: dict) -> dict[str, dict]:
    """The route's operations; ``name``: the ``{name}`` path parameter the model routes share."""
    ok = answer("The shadow and its figures so far", "Shadow")
    management = {"security": [{"bearer": []}], "tags": [TAG], "parameters": [name]}
    forbidden = _error("The management routes are off (MANAGEMENT_KEY_FILE unset)")
    return {
        "/models/{name}/shadow": {
            "get": {
                "tags": [TAG],
                "operationId": "get_shadow",
                "description": "The name's shadow (or canary) and its comparison so far, summed over every worker.",
                "parameters": [name],
                "security": [{"bearer": []}, {}],
                "responses": {
                    "200": ok,
                    "401": UNAUTHORIZED,
                    "404": _error("No model of that name is served, or it has no shadow"),
                },
            },
            "put": {
                **management,
                "operationId": "set_shadow",
                "description": "Mirror `share` of the name's requests to `version` (loaded first in every worker if "
                "it is not), or with `mode: canary` answer them with it. Replaces the name's shadow; never changes "
                "the version answering the name.",
                "requestBody": {"required": True, "content": json_content(ref("ShadowRequest"))},
                "responses": {
                    "200": ok,
                    "400": _error("A field breaks its rule (named in `error`), or the version is the primary"),
                    "401": UNAUTHORIZED,
                    "403": forbidden,
                    "404": _error("No model of that name is served, or the version is not in the store"),
                    "413": _error("The body is larger than 64 KiB"),
                    "503": _error("Not every worker loaded the candidate in time"),
                },
            },
            "delete": {
                **management,
                "operationId": "remove_shadow",
                "description": "Stop the name's shadow at once in every worker (and unload its candidate if the shadow "
                "loaded it); answers with the figures as they stood.",
                "responses": {
                    "200": ok,
                    "401": UNAUTHORIZED,
                    "403": forbidden,
                    "404": _error("No model of that name is served, or it has no shadow"),
                    "503": _error("Not every worker applied it in time"),
                },
            },
        }
    }
