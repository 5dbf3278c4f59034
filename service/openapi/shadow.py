"""``/models/{name}/shadow`` in the API document (:mod:`service.http.shadowroutes`): its three operations and the
schemas of the request and the answer."""

from __future__ import annotations

from service.openapi.oip import _json, _ref
from service.shadow.spec import MODES

TAG = "Shadows and canaries"


def _error(description: str) -> dict:
    return {"description": description, "content": _json(_ref("Error"))}


UNAUTHORIZED = _error("A key is needed and missing or wrong (`WWW-Authenticate: Bearer`)")


def schemas() -> dict[str, dict]:
    share = {"type": "number", "minimum": 0, "maximum": 1}
    ratio = {"type": "number", "nullable": True}
    count_share = {
        "type": "object",
        "properties": {"count": {"type": "integer"}, "share": ratio},
        "required": ["count", "share"],
    }
    return {
        "ShadowRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["version", "share"],
            "properties": {
                "version": {"type": "string", "description": "a stored version of the model, not the primary"},
                "share": {**share, "description": "the share of the name's requests mirrored (or answered)"},
                "mode": {
                    "type": "string",
                    "enum": list(MODES),
                    "default": "mirror",
                    "description": "mirror: also run on the candidate and compare (the caller gets the primary's "
                    "answer); canary: answered by the candidate instead (sticky by `X-Canary-Key`)",
                },
            },
        },
        "ShadowComparison": {
            "type": "object",
            "description": "Counts and means over the compared inputs (the same as `python -m modelstore compare`)",
            "properties": {
                "inputs": {"type": "integer"},
                "label_agreement": count_share,
                "mean_total_variation": ratio,
                "layers": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "properties": {"primary": ratio, "candidate": ratio, "difference": ratio},
                    },
                },
                "atypical": {"type": "object", "additionalProperties": count_share},
                "candidate_dead_units": {
                    "type": "object",
                    "nullable": True,
                    "additionalProperties": {"type": "integer"},
                },
            },
            "required": ["inputs", "label_agreement", "mean_total_variation", "layers", "atypical"],
        },
        "Shadow": {
            "type": "object",
            "properties": {
                "model": {"type": "string"},
                "primary": {"type": "string", "description": "the version answering the name"},
                "candidate": {"type": "string"},
                "mode": {"type": "string", "enum": list(MODES)},
                "share": share,
                "id": {"type": "string"},
                "since": {"type": "string", "format": "date-time"},
                "state": {"type": "string", "enum": ["loading", "active", "removed"]},
                "inputs": {
                    "type": "object",
                    "description": "mirror: inputs mirrored, compared, dropped (the queue was full), failed "
                    "(the candidate refused them), pending",
                    "additionalProperties": {"type": "integer"},
                },
                "requests": {
                    "type": "object",
                    "description": "canary: the requests each side answered",
                    "additionalProperties": {"type": "integer"},
                },
                "comparison": _ref("ShadowComparison"),
            },
            "required": ["model", "primary", "candidate", "mode", "share", "id", "since", "state"],
        },
    }


def paths(name: dict) -> dict[str, dict]:
    """The route's operations; ``name``: the ``{name}`` path parameter the model routes share."""
    ok = {"description": "The shadow and its figures so far", "content": _json(_ref("Shadow"))}
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
                "requestBody": {"required": True, "content": _json(_ref("ShadowRequest"))},
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
