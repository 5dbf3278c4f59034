"""The Open Inference Protocol (KServe V2) over REST, a thin adapter on the data plane, and its model
repository extension (Triton's) on :mod:`service.repository`:

- ``GET /v2`` (server metadata), ``/v2/health/live``, ``/v2/health/ready``;
- ``GET /v2/models/{name}[/versions/{version}]`` (metadata), ``.../ready``, ``POST .../infer``
  (tensors: :mod:`service.codecs.oip`);
- ``POST /v2/repository/index``, ``/v2/repository/models/{name}/load`` (the latest stored version, replacing
  the versions serving; ``{"parameters": {"version": ...}}`` loads that version beside them, and
  ``"replace": true|false`` says otherwise) and ``.../unload`` (every version, or ``parameters.version``).

Errors are ``{"error": "<field>: <rule>"}`` with the status the data plane gives (400, 404), as the
specification says. Who may call which route is decided outside, by :mod:`service.rest.keys`.
"""

from __future__ import annotations

import logging

import anyio
import orjson

from service import __version__, errors, routes
from service.asgi import read_body, respond
from service.codecs import oip
from service.dataplane import DataPlane
from service.errors import InvalidInput, ServiceError, oip_error
from service.repository.manager import Manager
from service.rest.modelroutes import INLINE_MAX_BYTES
from service.shadow.spec import canary_key
from sparsity.errors import InvalidInputError

log = logging.getLogger(__name__)
EXTENSIONS = ["model_repository", "binary_tensor_data", "activation_sparsity"]
SERVER_NAME = "sparsity-service"


INFER_ROUTE = "/v2/models/{name}/infer"
"""The route family the prediction log names for the protocol's inference (the request's ``id`` is its id)."""


class OipRoutes:
    """An ASGI middleware answering ``/v2/...``; anything else goes on to ``app``."""

    def __init__(self, app, plane: DataPlane, manager: Manager | None = None) -> None:
        self.app, self.plane, self.manager = app, plane, manager

    async def __call__(self, scope, receive, send) -> None:
        found = routes.handled_by(scope, routes.OIP)
        if found is None:
            await self.app(scope, receive, send)  # a path no route has was refused before (service.rest.keys)
            return
        try:
            await self._route(scope, receive, send, found)
        except Exception:  # a bug here must answer, not hang the client: logged, one 500, and a test fails on it
            log.exception("the protocol's route failed on %s %s", scope.get("method"), scope.get("path"))
            await self._send(send, 500, oip_error("internal error (logged)"))

    async def _route(self, scope, receive, send, found: routes.Found) -> None:
        action, params = found.route.action, found.params
        if found.route.key == routes.MANAGEMENT:
            body = await read_body(receive)
            await self._send(send, *(await self._repository(action, params.get("name"), body)))
            return
        if action == "infer":
            body = await read_body(receive)
            headers = dict(scope["headers"])
            length = headers.get(oip.HEADER_LENGTH.encode())
            length = None if length is None else length.decode("latin-1").strip()
            key = canary_key(scope["headers"])
            name, version = params["name"], params.get("version")
            if len(body) <= INLINE_MAX_BYTES:
                answer = await self._infer_inline(name, version, body, length, key)
            else:
                answer = await anyio.to_thread.run_sync(self._infer, name, version, body, length, key)
            await self._send(send, *answer)
            return
        status, body = self._get(action, params)
        await self._send(send, status, body, head=scope.get("method") == "HEAD")

    def _get(self, action: str, params: dict[str, str]) -> tuple[int, bytes]:
        if action == "server":
            return 200, orjson.dumps({"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS})
        if action == "live":
            return 200, b'{"live":true}'
        if "name" not in params:  # /v2/health/ready
            return 200, b'{"ready":true}'
        name = params["name"]
        try:
            runtime = self.plane.model(name, params.get("version"))
        except ServiceError as exc:
            return errors.oip_answer(exc, named=False)
        if action == "ready":
            return 200, orjson.dumps({"name": name, "version": runtime.version, "ready": True})
        return 200, orjson.dumps(oip.metadata(runtime, self.plane.versions(name)))

    def _parse(self, name: str, version: str | None, body: bytes, length: str | None, key: bytes | None):
        """``(runtime, request, headers)``: an unversioned request goes where a canary says. Raises ServiceError."""
        headers = ()
        if version is None:
            runtime, headers = self.plane.choose(name, key)
        else:
            runtime = self.plane.model(name, version)
        try:
            return runtime, oip.parse_infer(body, length, runtime), headers
        except InvalidInputError as exc:
            raise InvalidInput.of(exc) from None

    async def _infer_inline(self, name: str, version: str | None, body: bytes, length: str | None, key):
        """``(status, body, binary header length, headers)`` of a small body, its pass shared with what is queued
        with it (:mod:`service.batching`)."""
        headers = ()
        try:
            runtime, request, headers = self._parse(name, version, body, length, key)
            prediction = await self.plane.infer_batched(runtime, request.x, (INFER_ROUTE, request.id))
        except ServiceError as exc:
            return (*errors.oip_answer(exc), None, (*headers, *exc.headers))
        answer, header = oip.infer_response(runtime, prediction, request)
        return 200, answer, header, headers

    def _infer(self, name: str, version: str | None, body: bytes, length: str | None, key: bytes | None = None):
        """The same for a large body, in a thread (its pass not shared)."""
        headers = ()
        try:
            runtime, request, headers = self._parse(name, version, body, length, key)
            prediction = self.plane.infer(runtime, request.x, origin=(INFER_ROUTE, request.id))
        except ServiceError as exc:
            return (*errors.oip_answer(exc), None, headers)
        answer, header = oip.infer_response(runtime, prediction, request)
        return 200, answer, header, headers

    async def _repository(self, action: str, name: str | None, body: bytes) -> tuple[int, bytes]:
        if self.manager is None:
            return 503, oip_error("the model repository is not available in this process")
        try:
            request = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError as exc:
            return 400, oip_error(f"body: must be JSON ({exc})")
        if not isinstance(request, dict):
            return 400, oip_error("body: must be a JSON object")
        if action == "index":
            ready = request.get("ready", False)
            if not isinstance(ready, bool):
                return 400, oip_error("ready: must be true or false")
            index = await anyio.to_thread.run_sync(self.manager.index, ready)
            return 200, orjson.dumps(index)
        parameters = request.get("parameters") or {}
        if not isinstance(parameters, dict):
            return 400, oip_error("parameters: must be a JSON object")
        version = parameters.get("version")
        if version is not None and (not isinstance(version, str) or not version):
            return 400, oip_error("parameters.version: must be a version string of the stored model")
        replace = parameters.get("replace")
        if replace is not None and (not isinstance(replace, bool) or action != "load"):
            return 400, oip_error("parameters.replace: must be true or false, on a load")
        try:
            if action == "load":
                await anyio.to_thread.run_sync(self.manager.load, name, version, replace)
            else:
                await anyio.to_thread.run_sync(self.manager.unload, name, version)
        except ServiceError as exc:
            return errors.oip_answer(exc, named=False)
        return 200, b""

    @staticmethod
    async def _send(send, status: int, body: bytes, header: int | None = None, extra: tuple = (), head: bool = False):
        """JSON, or with Triton's binary tensors after a JSON header of ``header`` bytes (``extra``: more headers)."""
        if header is None:
            await respond(send, status, body, head=head, extra=extra)
            return
        extra = ((oip.HEADER_LENGTH.encode(), str(header).encode()), *extra)
        await respond(send, status, body, head=head, content_type=b"application/octet-stream", extra=extra)
