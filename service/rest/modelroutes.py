"""The routes of every served model, answered without BentoML's request and response models:

- ``GET /models`` (every served model's card, and the refused ones) and ``GET /models/{name}``;
- ``POST /models/{name}/predict`` (JSON ``{"inputs": [...]}``), ``.../predict_batch`` (``.npy``) and
  ``.../predict_image`` (a PNG or JPEG upload, picture models only); ``?version=`` asks one serving version
  (else the name's primary answers, or its canary's candidate for the canary's share);
- the aliases' fast paths: ``/mnist/predict_batch`` is served here alone, and a well-formed
  ``/mnist/predict`` or ``/iris/predict`` body here too; any other alias body goes on to its BentoML
  endpoint unchanged, whose validation names the field and the rule.

An unknown model, or an alias whose model is not served, gets 404 with the ``Error`` body. This sits
inside :class:`service.middleware.RequestGuard` (415 and 413 come from there) and inside BentoML's own
middlewares, so request metrics, concurrency limits and timeouts apply as before.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import anyio

from service import errors, routes
from service.asgi import read_body, replay_body, request_id_of, respond
from service.codecs.pictures import FIELD as IMAGE_FIELD
from service.codecs.responses import predict_json
from service.dataplane import DataPlane
from service.errors import InvalidInput, NotAPictureModel, ServiceError
from service.shadow.spec import canary_key

INLINE_MAX_BYTES = 64 * 1024
"""Bodies up to this size (about 8 JSON images) are handled on the event loop; larger ones in a worker
thread, so the loop keeps accepting requests while a big batch is parsed and run."""


class ModelRoutes:
    """An ASGI middleware: the routes above, answered through ``plane``; anything else goes on to ``app``."""

    def __init__(self, app, plane: DataPlane) -> None:
        self.app = app
        self.plane = plane

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = routes.of(scope)
        route = None if found is None or found.route is None else found.route
        if route is not None and route.handler == routes.MODELS and route.prediction is None:
            await respond(send, *self._card(route.action, found.name), head=scope.get("method") == "HEAD")
            return
        if route is None or route.prediction is None:
            await self.app(scope, receive, send)
            return
        route, name = route.prediction, route.prediction.model or found.name
        try:
            version = None if route.bentoml_api else version_of(scope)
            if version is None:
                runtime, headers = self.plane.choose(name, canary_key(scope["headers"]))
            else:
                runtime, headers = self.plane.model(name, version), ()
        except ServiceError as exc:
            await read_body(receive)  # the client may be sending it still: read it, then answer
            await respond(send, *errors.answer(exc))
            return
        if route.bentoml_api and route.action != "predict":
            await self.app(scope, receive, send)  # the alias image upload: BentoML's endpoint
            return
        body = await read_body(receive)
        try:
            detail = None if route.bentoml_api else detail_of(scope)
            origin = (route.path, request_id_of(scope))
            if route.action == "predict_image":
                answer = await self._picture(scope, body, runtime, detail, origin)
            elif len(body) <= INLINE_MAX_BYTES:  # decoded here, its pass shared with what is queued with it
                x = self._decode(runtime, route, body)
                answer = None if x is None else await self._batched(runtime, x, detail, origin)
            else:
                answer = await anyio.to_thread.run_sync(self._answer, runtime, route, body, detail, origin)
        except ServiceError as exc:
            answer, headers = errors.answer(exc), (*headers, *exc.headers)
        if answer is None:  # an alias body that is not plain: BentoML's endpoint validates it
            await self.app(scope, replay_body(body, receive), send)
        else:
            await respond(send, *answer, extra=headers)

    def _card(self, action: str, name: str | None) -> tuple[int, bytes]:
        try:
            if action == "list":
                return 200, json.dumps(self.plane.models()).encode()
            return 200, json.dumps(
                self.plane.examples(name) if action == "examples" else self.plane.card(name)
            ).encode()
        except ServiceError as exc:
            return errors.answer(exc)

    async def _picture(self, scope, body: bytes, runtime, detail: str | None, origin) -> tuple[int, bytes]:
        from starlette.requests import Request

        async def once():
            return {"type": "http.request", "body": body, "more_body": False}

        if not runtime.card.image_shaped:
            raise NotAPictureModel(runtime)  # before the form is read
        form = await Request(scope, receive=once).form(max_files=4, max_fields=16)
        try:
            data = await form[IMAGE_FIELD].read()  # the guard made sure it is a file part
        finally:
            await form.close()
        batch = await anyio.to_thread.run_sync(self.plane.decode_picture, runtime, data)
        return await self._batched(runtime, batch, detail, origin)

    async def _batched(self, runtime, x, detail: str | None, origin) -> tuple[int, bytes]:
        return 200, predict_json(runtime, await self.plane.infer_batched(runtime, x, origin), detail)

    def _decode(self, runtime, route: routes.RouteSpec, body: bytes):
        """One body as the model's input batch, or ``None`` for an alias body that its BentoML endpoint is to
        validate."""
        codec = "npy" if route.action == "predict_batch" else "json"
        try:
            return self.plane.decode(runtime, body, codec, json_key=route.json_key)
        except ServiceError:
            if route.bentoml_api:
                return None
            raise

    def _answer(
        self, runtime, route: routes.RouteSpec, body: bytes, detail: str | None, origin
    ) -> tuple[int, bytes] | None:
        """Decode, predict and encode one large body in a thread (its pass not shared): ``(status, JSON body)``, or
        ``None`` for an alias body that its BentoML endpoint is to validate."""
        x = self._decode(runtime, route, body)
        return None if x is None else (200, self.plane.infer_json(runtime, x, detail, origin))


def version_of(scope) -> str | None:
    """The ``version`` query parameter of a generic route: that serving version answers (None: the name's)."""
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("version", [])
    if not values:
        return None
    if len(values) > 1 or not values[0].strip():
        raise InvalidInput("must be one version of the model (GET /models lists them)", "version")
    return values[0].strip()


def detail_of(scope) -> str | None:
    """The ``detail`` query parameter of a generic route (InvalidInput when it is not one the plane knows)."""
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("detail", [])
    return DataPlane.check_detail(values)
