"""The prediction routes, declared once: the endpoints take their paths from here and the request
guard its content types and upload fields, so a renamed route cannot silently lose its guard.

Every served model has the generic routes ``/models/{name}/predict|predict_batch|predict_image``.
The project's first routes stay as aliases of two of them: ``/mnist/*`` of the model named
``mnist_cnn`` and ``/iris/predict`` of ``iris_l1``; they answer exactly as the generic routes do.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparsity.contract import IRIS_MODEL_NAME, MNIST_MODEL_NAME


@dataclass(frozen=True)
class RouteSpec:
    path: str  # with ``{name}`` for the generic routes
    content_types: tuple[str, ...]  # what the guard accepts (415 otherwise)
    upload_field: str | None = None  # the multipart field that must be a file upload
    bentoml_api: bool = True  # False: answered by service.http.modelroutes, not by a @bentoml.api endpoint
    model: str | None = None  # an alias: the model it answers for
    action: str = "predict"  # predict (JSON), predict_batch (.npy) or predict_image (an upload)
    json_key: str = "inputs"  # the JSON body's one field


JSON = ("application/json",)
NPY = ("application/x-npy",)
MULTIPART = ("multipart/form-data",)
MNIST_ALIAS_MODEL = MNIST_MODEL_NAME
IRIS_ALIAS_MODEL = IRIS_MODEL_NAME

MNIST_PREDICT = RouteSpec("/mnist/predict", JSON, model=MNIST_ALIAS_MODEL, json_key="images")
MNIST_PREDICT_IMAGE = RouteSpec(
    "/mnist/predict_image", MULTIPART, upload_field="image", model=MNIST_ALIAS_MODEL, action="predict_image"
)
MNIST_PREDICT_BATCH = RouteSpec(
    "/mnist/predict_batch", NPY, bentoml_api=False, model=MNIST_ALIAS_MODEL, action="predict_batch"
)
IRIS_PREDICT = RouteSpec("/iris/predict", JSON, model=IRIS_ALIAS_MODEL, json_key="features")
ALIASES: tuple[RouteSpec, ...] = (MNIST_PREDICT, MNIST_PREDICT_IMAGE, MNIST_PREDICT_BATCH, IRIS_PREDICT)

MODELS_PATH = "/models"
"""GET: the served models' cards (and the refused ones); ``GET /models/{name}``: one card."""
MODEL_ROUTES: dict[str, RouteSpec] = {
    "predict": RouteSpec(MODELS_PATH + "/{name}/predict", JSON, bentoml_api=False),
    "predict_batch": RouteSpec(MODELS_PATH + "/{name}/predict_batch", NPY, bentoml_api=False, action="predict_batch"),
    "predict_image": RouteSpec(
        MODELS_PATH + "/{name}/predict_image",
        MULTIPART,
        upload_field="image",
        bentoml_api=False,
        action="predict_image",
    ),
}
ROUTES: tuple[RouteSpec, ...] = (*ALIASES, *MODEL_ROUTES.values())
_BY_PATH = {route.path: route for route in ALIASES}


def match(path: str) -> tuple[RouteSpec, str] | None:
    """The POST route of ``path`` and the model it is for, or None for a path that is no prediction route."""
    path = path.rstrip("/")
    alias = _BY_PATH.get(path)
    if alias is not None:
        return alias, alias.model
    parts = path.split("/")
    if len(parts) == 4 and parts[0] == "" and "/" + parts[1] == MODELS_PATH and parts[3] in MODEL_ROUTES and parts[2]:
        return MODEL_ROUTES[parts[3]], parts[2]
    return None


def model_card_name(path: str) -> tuple[str | None, str | None]:
    """``(name, "card")`` for ``GET /models/{name}``, ``(name, "examples")`` for
    ``GET /models/{name}/examples``, else ``(None, None)``."""
    parts = path.rstrip("/").split("/")
    if len(parts) in (3, 4) and parts[0] == "" and "/" + parts[1] == MODELS_PATH and parts[2]:
        if len(parts) == 3:
            return parts[2], "card"
        if parts[3] == "examples":
            return parts[2], "examples"
    return None, None


# --- what the request metrics call a path

_FIXED = {
    "/", "/docs", "/docs.json", "/metrics", "/livez", "/readyz", "/healthz", MODELS_PATH, "/ui",
    "/v2", "/v2/health/live", "/v2/health/ready", "/v2/repository/index",
    *(route.path for route in ALIASES),
}  # fmt: skip
UNMATCHED = "/{unmatched}"


def endpoint_label(path: str) -> str:
    """The route a request path is for, as the request metrics' ``endpoint`` label: the path itself for a fixed
    route, its template for a route with a model name or version in it, and :data:`UNMATCHED` for a path no
    route answers. So the number of series does not grow with the paths clients send."""
    path = path.rstrip("/") or "/"
    if path in _FIXED:
        return path
    parts = path.split("/")[1:]
    if len(parts) == 2 and parts[0] in ("ui", "static_content"):
        return f"/{parts[0]}/{{file}}"
    if parts[0] == "models" and len(parts) in (2, 3):
        if len(parts) == 2:
            return "/models/{name}"
        if parts[2] in (*MODEL_ROUTES, "examples", "shadow"):
            return "/models/{name}/" + parts[2]
    if parts[:2] == ["v2", "models"] and len(parts) >= 3:
        rest, template = parts[3:], "/v2/models/{name}"
        if len(rest) >= 2 and rest[0] == "versions":
            rest, template = rest[2:], template + "/versions/{version}"
        if not rest:
            return template
        if len(rest) == 1 and rest[0] in ("ready", "infer"):
            return f"{template}/{rest[0]}"
    if parts[:3] == ["v2", "repository", "models"] and len(parts) == 5 and parts[4] in ("load", "unload"):
        return "/v2/repository/models/{name}/" + parts[4]
    return UNMATCHED
