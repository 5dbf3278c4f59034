"""The routes of every served model, answered without BentoML's request and response models:

- ``GET /models`` (every served model's card, and the refused ones) and ``GET /models/{name}``;
- ``POST /models/{name}/predict`` (JSON ``{"inputs": [...]}``), ``.../predict_batch`` (``.npy``) and
  ``.../predict_image`` (a PNG or JPEG upload, picture models only);
- the aliases' fast paths: ``/mnist/predict_batch`` is served here alone, and a well-formed
  ``/mnist/predict`` or ``/iris/predict`` body here too; any other alias body goes on to its BentoML
  endpoint unchanged, whose validation names the field and the rule.

An unknown model, or an alias whose model is not served, gets 404 with the ``Error`` body. This sits
inside :class:`service.middleware.RequestGuard` (415 and 413 come from there) and inside BentoML's own
middlewares, so request metrics, concurrency limits and timeouts apply as before.
"""

from __future__ import annotations

import json

import anyio

from service import routes
from service.inputs import inputs_from_json
from service.middleware import error_body, read_body, replay_body, respond
from service.npy import decode_npy
from service.preprocess import FIELD as IMAGE_FIELD
from service.responses import DETAILS
from sparsity.errors import InvalidInputError

INLINE_MAX_BYTES = 64 * 1024
"""Bodies up to this size (about 8 JSON images) are handled on the event loop; larger ones in a worker
thread, so the loop keeps accepting requests while a big batch is parsed and run."""


def not_served(name: str) -> bytes:
    return error_body(f"no model named {name!r} is served (GET /models lists them)", "model", "model_not_found")


class ModelRoutes:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope.get("method"), scope["path"]
        if method in ("GET", "HEAD"):
            answer = self._card(path)
            if answer is None:
                await self.app(scope, receive, send)
            else:
                await respond(send, *answer, head=method == "HEAD")
            return
        found = routes.match(path) if method == "POST" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        route, name = found
        service = _service()
        runtime = service.runtimes.get(name)
        if runtime is None:
            await read_body(receive)  # the client may be sending it still: read it, then answer
            await respond(send, 404, not_served(name))
            return
        if route.bentoml_api and route.action != "predict":
            await self.app(scope, receive, send)  # the alias image upload: BentoML's endpoint
            return
        body = await read_body(receive)
        detail, problem = (None, None) if route.bentoml_api else detail_of(scope)
        if problem is not None:
            answer = 400, problem
        elif route.action == "predict_image":
            answer = await self._picture(scope, body, runtime, service, detail)
        elif len(body) <= INLINE_MAX_BYTES:
            answer = _answer(service, runtime, route, body, detail)
        else:
            answer = await anyio.to_thread.run_sync(_answer, service, runtime, route, body, detail)
        if answer is None:  # an alias body that is not plain: BentoML's endpoint validates it
            await self.app(scope, replay_body(body, receive), send)
        else:
            await respond(send, *answer)

    @staticmethod
    def _card(path: str) -> tuple[int, bytes] | None:
        if path.rstrip("/") == routes.MODELS_PATH:
            return 200, json.dumps(_service().describe_models()).encode()
        name, what = routes.model_card_name(path)
        if name is None:
            return None
        runtime = _service().runtimes.get(name)
        if runtime is None:
            return 404, not_served(name)
        if what == "examples":
            card = runtime.card
            return 200, json.dumps({"inputs": card.examples or [], "labels": card.example_labels}).encode()
        return 200, json.dumps(runtime.info).encode()

    @staticmethod
    async def _picture(scope, body: bytes, runtime, service, detail: str | None) -> tuple[int, bytes]:
        from starlette.requests import Request

        if not runtime.card.image_shaped:
            message = f"model {runtime.name!r} takes inputs of shape {runtime.item_shape}, not pictures; use predict"
            return 404, error_body(message, "model", "not_a_picture_model")

        async def once():
            return {"type": "http.request", "body": body, "more_body": False}

        form = await Request(scope, receive=once).form(max_files=4, max_fields=16)
        try:
            data = await form[IMAGE_FIELD].read()  # the guard made sure it is a file part
        finally:
            await form.close()
        try:
            batch = await anyio.to_thread.run_sync(runtime.picture, data, service.settings.max_image_pixels)
        except InvalidInputError as exc:
            return 400, error_body(exc.rule, exc.field, "invalid_input")
        return _run(service, runtime, batch, detail)


def detail_of(scope) -> tuple[str | None, bytes | None]:
    """The ``detail`` query parameter of a generic route: ``(value, None)``, or ``(None, error body)``."""
    from urllib.parse import parse_qs

    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("detail", [])
    if not values:
        return None, None
    if len(values) > 1 or values[0] not in DETAILS:
        rule = f"must be one of: {', '.join(DETAILS)}; got {', '.join(values)!s}"
        return None, error_body(rule, "detail", "invalid_input")
    return values[0], None


def _service():
    import bentoml

    return bentoml.get_current_service()


def _run(service, runtime, x, detail: str | None = None) -> tuple[int, bytes]:
    try:
        return 200, service.predict_json(runtime, x, detail)
    except InvalidInputError as exc:
        return 400, error_body(exc.rule, exc.field, "invalid_input")


def _answer(
    service, runtime, route: routes.RouteSpec, body: bytes, detail: str | None = None
) -> tuple[int, bytes] | None:
    """Decode, predict and encode one body (run inline or in a thread): ``(status, JSON body)``, or
    ``None`` for an alias body that its BentoML endpoint is to validate."""
    try:
        if route.action == "predict_batch":
            x = decode_npy(body, runtime.item_shape, runtime.value_range)
        else:
            x = inputs_from_json(body, runtime.item_shape, runtime.value_range, key=route.json_key)
    except InvalidInputError as exc:
        if route.bentoml_api:
            return None
        return 400, error_body(exc.rule, exc.field, "invalid_input")
    return _run(service, runtime, x, detail)
