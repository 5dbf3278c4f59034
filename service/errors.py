"""The service's one family of refusals, and the one place each becomes an HTTP answer.

Every refusal the service makes is a :class:`ServiceError`: an HTTP ``status``, the ``field`` it is about, the
rule the request broke (``message``) and a ``kind`` for the body's ``detail``. The data plane's, the model
repository's, the shadows' and the keys' refusals are its subclasses. Two answers are made of them, here
only:

- :func:`answer`: the project's routes (``/models/...``, the aliases, shadows, keys): the ``Error`` body
  (:func:`error_body`), ``{"error": "<field>: <rule>", "detail": [{"type", "loc", "msg"}]}``;
- :func:`oip_answer`: the Open Inference Protocol's routes: ``{"error": "<text>"}``, as its specification says.
"""

from __future__ import annotations

import json

import orjson

from service.schemas import Error, ErrorItem


class ServiceError(Exception):
    """A request the service refuses: ``status`` (HTTP's), ``field`` and the rule (``message``)."""

    status = 400
    kind = "invalid_input"
    headers: tuple[tuple[bytes, bytes], ...] = ()  # more response headers (a 503's Retry-After)

    def __init__(self, message: str, field: str = "body", status: int | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.message, self.field = message, field
        if status is not None:
            self.status = status


class DataPlaneError(ServiceError):
    """A request the data plane refuses (:mod:`service.dataplane`)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message, field)


class InvalidInput(DataPlaneError):
    @classmethod
    def of(cls, exc) -> InvalidInput:
        """The data plane's form of the core's :class:`sparsity.errors.InvalidInputError`."""
        return cls(exc.rule, exc.field)


class ModelNotFound(DataPlaneError):
    status = 404
    kind = "model_not_found"

    def __init__(self, name: str, version: str | None = None) -> None:
        which = f"{name!r}" if version is None else f"{name!r} in version {version!r}"
        super().__init__(f"no model named {which} is served (GET /models lists them)", "model")


class NotAPictureModel(DataPlaneError):
    status = 404
    kind = "not_a_picture_model"

    def __init__(self, runtime) -> None:
        rule = f"model {runtime.name!r} takes inputs of shape {runtime.item_shape}, not pictures; use predict"
        super().__init__(rule, "model")


class ExamplesHidden(DataPlaneError):
    status = 404
    kind = "examples_hidden"

    def __init__(self) -> None:
        super().__init__("the calibration examples are not shown here (EXPOSE_EXAMPLES=false)", "examples")


class RepositoryError(ServiceError):
    """A change to the served set that cannot be done (:mod:`service.repository`): one line saying why. Its text
    is the line alone; on a shadow's route it is about the ``version`` (404: not in the store) or the
    ``shadow``."""

    kind = "shadow_refused"

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message, "version" if status == 404 else "shadow", status)

    def __str__(self) -> str:
        return self.message


class ShadowError(ServiceError, ValueError):
    """A shadow request that cannot be done (:mod:`service.shadow`)."""

    kind = "invalid_shadow"


class KeyRefused(ServiceError):
    """A request without the key its route needs (:mod:`service.rest.keys`): 401, or 403 when the routes are
    off."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message, "Authorization", status)
        self.kind = "unauthorized" if status == 401 else "forbidden"


def answer(exc: ServiceError) -> tuple[int, bytes]:
    """The project's answer to a refusal: its status and the ``Error`` body."""
    return exc.status, error_body(exc.message, exc.field, exc.kind)


def oip_answer(exc: ServiceError, named: bool = True) -> tuple[int, bytes]:
    """The Open Inference Protocol's answer to a refusal: ``{"error": "<field>: <rule>"}`` (``named``), or the rule
    alone (a model's metadata, a repository change: the route names the model already)."""
    return exc.status, oip_error(f"{exc.field}: {exc.message}" if named else exc.message)


def oip_error(message: str) -> bytes:
    return orjson.dumps({"error": message})


def error_body(message: str, loc: str, kind: str) -> bytes:
    """The body of a refusal the service makes itself, built from the one ``Error`` schema (what the
    OpenAPI document declares): ``error`` names the field and the rule, ``detail`` is pydantic-like.
    BentoML's own validation errors are rewritten to the same shape (:func:`summarise_validation_error`)."""
    return (
        Error(error=f"{loc}: {message}", detail=[ErrorItem(type=kind, loc=[loc], msg=message)])
        .model_dump_json()
        .encode()
    )


def location(loc: list) -> str:
    """pydantic's ``loc`` as the API names it: ``images[0][3]``, ``features``, or ``body``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def summarise_validation_error(body: bytes) -> bytes:
    """Turn BentoML/pydantic's ``{"error": "1 validation error for Input", "detail": [...]}`` into
    ``{"error": "images[0]: List should have at least 28 items ...", "detail": [...]}``."""
    try:
        data = json.loads(body)
        detail = data["detail"]
        data["error"] = "; ".join(f"{location(d['loc'])}: {d['msg']}" for d in detail)
        for d in detail:
            d.pop("url", None)
    except (ValueError, KeyError, TypeError):
        return body
    return json.dumps(data).encode()
