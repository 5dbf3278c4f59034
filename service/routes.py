"""Every route the service answers, declared once: its methods, path template, the key it needs, what answers it
and, for a prediction route, what its body must be. The path grammar lives here alone: the keys guard, the
request metrics' labels, the routers and the API document all read this table, and a path that matches no
route is refused in one place (:func:`refusal`, answered by :class:`service.rest.keys.RouteGuard`).

Every served model has the generic routes ``/models/{name}/predict|predict_batch|predict_image``. The project's
first routes stay as aliases of two of them: ``/mnist/*`` of the model named ``mnist_cnn`` and
``/iris/predict`` of ``iris_l1``; they answer exactly as the generic routes do.

Keys (:mod:`service.rest.keys`): ``open`` (health, metrics, the API document and the pages), ``inference``
(everything that shows or asks a model) and ``management`` (the repository's routes, setting a shadow).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType

from sparsity.contract import IRIS_MODEL_NAME, MNIST_MODEL_NAME

OPEN, INFERENCE, MANAGEMENT = "open", "inference", "management"
KEYS = (OPEN, INFERENCE, MANAGEMENT)  # in order of strictness


@dataclass(frozen=True)
class RouteSpec:
    """What a prediction route's body must be (the request guard's 415 and upload checks) and how it is read."""

    path: str  # with ``{name}`` for the generic routes
    content_types: tuple[str, ...]  # what the guard accepts (415 otherwise)
    upload_field: str | None = None  # the multipart field that must be a file upload
    bentoml_api: bool = True  # False: answered by service.rest.modelroutes, not by a @bentoml.api endpoint
    model: str | None = None  # an alias: the model it answers for
    action: str = "predict"  # predict (JSON), predict_batch (.npy) or predict_image (an upload)
    json_key: str = "inputs"  # the JSON body's one field


JSON = ("application/json",)
NPY = ("application/x-npy",)
MULTIPART = ("multipart/form-data",)

MNIST_PREDICT = RouteSpec("/mnist/predict", JSON, model=MNIST_MODEL_NAME, json_key="images")
MNIST_PREDICT_IMAGE = RouteSpec(
    "/mnist/predict_image", MULTIPART, upload_field="image", model=MNIST_MODEL_NAME, action="predict_image"
)
MNIST_PREDICT_BATCH = RouteSpec(
    "/mnist/predict_batch", NPY, bentoml_api=False, model=MNIST_MODEL_NAME, action="predict_batch"
)
IRIS_PREDICT = RouteSpec("/iris/predict", JSON, model=IRIS_MODEL_NAME, json_key="features")
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
"""The prediction routes (POST)."""

# --- who answers a route (the ASGI middleware or BentoML)
BENTOML = "bentoml"  # BentoML's own routes and the @bentoml.api endpoints
MODELS = "models"  # service.rest.modelroutes
OIP = "oip"  # service.rest.oiproutes (the Open Inference Protocol)
SHADOW = "shadow"  # service.rest.shadowroutes
PAGES = "pages"  # service.rest.pages
DOCUMENT = "document"  # service.openapi.document
LOG = "log"  # service.rest.logroutes (the prediction log and drift)

OIP_PREFIX = "/v2"
GET = ("GET", "HEAD")
POST = ("POST",)


@dataclass(frozen=True)
class Route:
    methods: tuple[str, ...]
    template: str  # segments: a literal, ``{param}`` (one segment) or ``{param:path}`` (the rest, one or more)
    key: str  # OPEN, INFERENCE or MANAGEMENT
    handler: str  # who answers it
    action: str = ""  # what the handler does (for OIP: metadata, ready, infer, index, load, unload)
    prediction: RouteSpec | None = None
    segments: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(self.template.split("/")[1:]) if self.template != "/" else ())

    @property
    def label(self) -> str:
        """The request metrics' ``endpoint`` label: the template, never a path a client chose."""
        return self.template.replace(":path}", "}")


def _oip_model_routes() -> list[Route]:
    found = []
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        found += [
            Route(GET, base, INFERENCE, OIP, "metadata"),
            Route(GET, base + "/ready", INFERENCE, OIP, "ready"),
            Route(POST, base + "/infer", INFERENCE, OIP, "infer"),
        ]
    return found


TABLE: tuple[Route, ...] = (
    # open: health, metrics, the API document and the pages
    Route(GET, "/", OPEN, PAGES, "index"),
    Route(GET, "/docs", OPEN, BENTOML),
    Route(GET, "/docs.json", OPEN, DOCUMENT),
    Route(GET, "/schema.json", INFERENCE, BENTOML),
    Route(GET, "/livez", OPEN, BENTOML),
    Route(GET, "/readyz", OPEN, BENTOML),
    Route(GET, "/healthz", OPEN, BENTOML),
    Route(GET, "/metrics", OPEN, BENTOML),
    Route(GET, "/ui", OPEN, PAGES, "page"),
    Route(GET, "/ui/{file}", OPEN, PAGES, "page"),
    Route(GET, "/static_content/{file:path}", OPEN, BENTOML),
    Route(GET, "/v2/health/live", OPEN, OIP, "live"),
    Route(GET, "/v2/health/ready", OPEN, OIP, "ready"),
    # inference: the models, their predictions and their shadows' figures
    *(Route(POST, a.path, INFERENCE, BENTOML if a.bentoml_api else MODELS, a.action, a) for a in ALIASES),
    Route(GET, MODELS_PATH, INFERENCE, MODELS, "list"),
    Route(GET, MODELS_PATH + "/{name}", INFERENCE, MODELS, "card"),
    Route(GET, MODELS_PATH + "/{name}/examples", INFERENCE, MODELS, "examples"),
    *(Route(POST, spec.path, INFERENCE, MODELS, spec.action, spec) for spec in MODEL_ROUTES.values()),
    Route(GET, MODELS_PATH + "/{name}/shadow", INFERENCE, SHADOW, "get"),
    Route(GET, MODELS_PATH + "/{name}/log", INFERENCE, LOG, "page"),
    Route(GET, MODELS_PATH + "/{name}/log/{id}", INFERENCE, LOG, "row"),
    Route(GET, MODELS_PATH + "/{name}/drift", INFERENCE, LOG, "drift"),
    Route(GET, "/v2", INFERENCE, OIP, "server"),
    *_oip_model_routes(),
    # management: the repository's routes, setting and removing a shadow
    Route(("PUT", "DELETE"), MODELS_PATH + "/{name}/shadow", MANAGEMENT, SHADOW, "set"),
    Route(("PUT",), MODELS_PATH + "/{name}/log/{id}/review", MANAGEMENT, LOG, "review"),
    Route(POST, "/v2/repository/index", MANAGEMENT, OIP, "index"),
    Route(POST, "/v2/repository/models/{name}/load", MANAGEMENT, OIP, "load"),
    Route(POST, "/v2/repository/models/{name}/unload", MANAGEMENT, OIP, "unload"),
)  # fmt: skip


@dataclass(frozen=True)
class Found:
    """A request's route, or the routes of its path when none takes its method (``route`` None)."""

    route: Route | None
    params: Mapping[str, str]
    allowed: tuple[Route, ...] = ()  # every route of the path (for a 405: their methods)

    @property
    def name(self) -> str | None:
        return self.params.get("name")

    @property
    def key(self) -> str:
        """The key the request needs: its route's, or for a method no route takes the strictest of the path's."""
        if self.route is not None:
            return self.route.key
        return max((r.key for r in self.allowed), key=KEYS.index)


def _params(segments: tuple[str, ...], parts: list[str]) -> dict[str, str] | None:
    params = {}
    for index, segment in enumerate(segments):
        if segment.endswith(":path}"):
            rest = parts[index:]
            if not rest or not all(rest):
                return None
            params[segment[1:-6]] = "/".join(rest)
            return params
        if index >= len(parts):
            return None
        if segment.startswith("{"):
            if not parts[index]:
                return None
            params[segment[1:-1]] = parts[index]
        elif segment != parts[index]:
            return None
    return params if len(parts) == len(segments) else None


_FIXED: dict[str, list[Route]] = {}
_TEMPLATED: list[Route] = []
for _route in TABLE:
    if "{" in _route.template:
        _TEMPLATED.append(_route)
    else:
        _FIXED.setdefault(_route.template, []).append(_route)


@lru_cache(maxsize=4096)
def resolve(method: str, path: str) -> Found | None:
    """The route of ``method`` on ``path`` with its parameters, a :class:`Found` without a route when the path
    is one the service has but not for that method, or None when no route has the path. A trailing slash is
    ignored. Kept for the last 4,096 (method, path) pairs: a request's route costs a dictionary lookup (the
    answers are immutable; the cache is bounded whatever paths clients invent)."""
    path = path.rstrip("/") or "/"
    candidates = _FIXED.get(path)
    params: dict[str, str] = {}
    if candidates is None:
        parts = path.split("/")[1:]
        candidates = []
        for route in _TEMPLATED:
            found = _params(route.segments, parts)
            if found is not None:
                if not candidates:
                    params = found
                candidates.append(route)
        if not candidates:
            return None
    frozen = MappingProxyType(params)  # shared by every request of the path: read-only
    for route in candidates:
        if method in route.methods:
            return Found(route, frozen, tuple(candidates))
    return Found(None, frozen, tuple(candidates))


SCOPE_KEY = "sparsity.route"
"""Where a request's :class:`Found` is kept in its ASGI scope, resolved once (:func:`of`)."""


def of(scope) -> Found | None:
    """The route of an ASGI request (:func:`resolve`), resolved once and kept in its scope."""
    found = scope.get(SCOPE_KEY, scope)
    if found is scope:
        found = scope[SCOPE_KEY] = resolve(scope.get("method", "GET"), scope["path"])
    return found


def handled_by(scope, handler: str) -> Found | None:
    """The route of an ASGI HTTP request when ``handler`` answers it, else None (the request goes on)."""
    found = of(scope) if scope["type"] == "http" else None
    return found if found is not None and found.route is not None and found.route.handler == handler else None


def refusal(method: str, path: str) -> tuple[int, str, str] | None:
    """``(404 or 405, the rule, the Allow header)`` for a request no route takes, else None: the one place a path
    the service does not have is refused."""
    found = resolve(method, path)
    if found is None:
        return 404, f"no route answers {method} {path} (GET / lists the API)", ""
    if found.route is None:
        methods = [m for route in found.allowed for m in route.methods]
        named = [m for m in methods if m != "HEAD"]
        either = named[0] if len(named) == 1 else f"{', '.join(named[:-1])} or {named[-1]}"
        return 405, f"{method} is not allowed; use {either}", ", ".join(methods)
    return None


def match(path: str) -> tuple[RouteSpec, str] | None:
    """The POST prediction route of ``path`` and the model it is for, or None."""
    found = resolve("POST", path)
    if found is None or found.route is None or found.route.prediction is None:
        return None
    spec = found.route.prediction
    return spec, spec.model or found.params["name"]


UNMATCHED = "/{unmatched}"


def endpoint_label(path: str) -> str:
    """The route a request path is for, as the request metrics' ``endpoint`` label: its template (the path itself
    for a route without parameters), and :data:`UNMATCHED` for a path no route answers. So the number of series
    does not grow with the paths clients send."""
    found = resolve("GET", path)
    if found is None:
        return UNMATCHED
    return (found.route or found.allowed[0]).label
