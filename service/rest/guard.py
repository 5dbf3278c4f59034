"""ASGI middleware that refuses oversize bodies (413) and wrong content types (415) before the
body is parsed, with the same JSON error shape as the API's 400s."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from service.asgi import read_body, replay_body, respond
from service.errors import error_body, summarise_validation_error
from service.routes import RouteSpec, match


class BodyTooLarge(Exception):
    pass


async def _check_upload(scope, body: bytes, field: str) -> tuple[str, str] | None:
    """``(location, message)`` when ``field`` is not a file part of a well-formed multipart body.

    BentoML treats a text value of a file field as a URL to download; it is refused here instead
    (no server-side fetches on a client's behalf, and no 500 from the download attempt)."""
    from starlette.datastructures import UploadFile
    from starlette.requests import Request

    async def once():
        return {"type": "http.request", "body": body, "more_body": False}

    request = Request(scope, receive=once)
    try:
        form = await request.form(max_files=4, max_fields=16)
    except Exception as exc:  # any parser failure means a malformed body
        return "body", f"malformed multipart/form-data ({exc})"
    try:
        value = form.get(field)
        if value is None:
            return field, "Field required: upload the image as a file in this multipart field"
        if not isinstance(value, UploadFile):
            return field, "must be an uploaded file, not a text value (URLs are not fetched)"
    finally:
        await form.close()
    return None


class BodyTimeout(Exception):
    pass


class RequestGuard:
    """Check Content-Type and Content-Length up front, count streamed bytes as they arrive, and give
    the whole body a deadline.

    A refusal made before the body is read (413, 415) first reads and discards the rest of the body,
    up to ``max_drain_bytes``: a client that sends its whole body before reading the answer (Python's
    urllib, any client without ``Expect: 100-continue``) then reads the JSON error instead of a
    connection reset. A client that sent ``Expect: 100-continue`` has sent nothing yet and is answered
    at once. Beyond the drain bound, or after a 408, the answer carries ``Connection: close`` and the
    connection is closed once it is sent.
    """

    def __init__(
        self,
        app,
        route_of: Callable[[str], RouteSpec | None] = lambda path: (match(path) or (None,))[0],
        max_body_bytes: int = 16 * 1024 * 1024,
        max_drain_bytes: int = 64 * 1024 * 1024,
        body_timeout: float = 30.0,
        first: Callable[[dict], tuple[int, bytes, tuple] | None] = lambda scope: None,
    ) -> None:
        self.app = app
        self.first = first  # a check answered before the guard's own (the keys': 401 before 415 or 413)
        self.route_of = route_of
        self.max_body_bytes = max_body_bytes
        self.max_drain_bytes = max_drain_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        await GuardedRequest(self, scope, receive, send).handle()

    async def _drain(self, receive, received, declared: str | None) -> None:
        """Read and drop the rest of the body while the total stays within the drain bound; stop early
        when it is declared or found to be longer, or does not arrive in time."""
        if declared is not None and declared.isdigit() and int(declared) > self.max_drain_bytes:
            return
        try:
            while received() <= self.max_drain_bytes:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
        except BodyTimeout:
            return


class GuardedRequest:
    """One POST request under the guard: its body's byte count and deadline, and who answered it.

    The app reads the body through :meth:`receive_counted` (413 past the size limit, 408 past the
    deadline) and answers through :meth:`send_guarded` (which replaces whatever the app makes of such a
    refusal, and rewrites a 400 so that ``error`` names the field and the rule).
    """

    def __init__(self, guard: RequestGuard, scope, receive, send) -> None:
        self.guard, self.scope, self.client_receive, self.client_send = guard, scope, receive, send
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        self.deadline = asyncio.get_running_loop().time() + guard.body_timeout
        self.received = 0
        self.started = self.ended = False  # the body: reading began, reading finished
        self.refusal: tuple[int, bytes] | None = None  # set when the guard, not the app, answers
        self.responded = False
        self.held_start: dict | None = None  # a 400's start, held until its body is rewritten
        self.held_body: list[bytes] = []

    def too_large(self) -> tuple[int, bytes]:
        return 413, error_body(
            f"request body exceeds the limit of {self.guard.max_body_bytes} bytes", "body", "body_too_large"
        )

    async def handle(self) -> None:
        first = self.guard.first(self.scope)
        if first is not None:
            await self.refuse(*first)
            return
        route = self.guard.route_of(self.scope["path"])
        if route is not None:
            media_type = self.headers.get("content-type", "").split(";")[0].strip().lower()
            if media_type not in route.content_types:
                message = f"must be {' or '.join(route.content_types)}, got {media_type or 'none'!r}"
                await self.refuse(415, error_body(message, "Content-Type", "unsupported_media_type"))
                return
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.guard.max_body_bytes:
            await self.refuse(*self.too_large())
            return
        try:
            downstream = self.receive_counted
            if route is not None and route.upload_field is not None:
                body = await read_body(self.receive_counted)
                problem = await _check_upload(self.scope, body, route.upload_field)
                if problem is not None:
                    await self.refuse(400, error_body(problem[1], problem[0], "invalid_input"))
                    return
                downstream = replay_body(body, self.client_receive)
            await self.guard.app(self.scope, downstream, self.send_guarded)
        except (BodyTooLarge, BodyTimeout):
            if not self.responded and self.refusal is not None:
                await self.refuse(*self.refusal)

    async def receive_timed(self):
        """The client's next message; BodyTimeout once the body is past its deadline."""
        if self.ended:
            return await self.client_receive()
        self.started = True
        try:
            async with asyncio.timeout_at(self.deadline):  # asyncio's: a third of anyio's cancel scope (measured)
                message = await self.client_receive()
        except TimeoutError:
            raise BodyTimeout from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.ended = not message.get("more_body", False)
        else:
            self.ended = True
        return message

    async def receive_counted(self):
        """What the app reads: the body, refused past the size limit or the deadline."""
        try:
            message = await self.receive_timed()
        except BodyTimeout:
            slow = f"the request body did not arrive within {self.guard.body_timeout:g} s"
            self.refusal = (408, error_body(slow, "body", "body_timeout"))
            raise
        if self.received > self.guard.max_body_bytes:
            self.refusal = self.too_large()
            raise BodyTooLarge
        return message

    async def refuse(self, status: int, body: bytes, extra: tuple = ()) -> None:
        """Answer for the guard: discard the rest of the body first when the client is sending it;
        close the connection when its body was not read to the end."""
        self.responded = True
        waiting = not self.started and self.headers.get("expect", "").strip().lower() == "100-continue"
        if not self.ended and not waiting and status != 408:
            await self.guard._drain(self.receive_timed, lambda: self.received, self.headers.get("content-length"))
        await respond(self.client_send, status, body, close=not self.ended, extra=extra)

    async def send_guarded(self, message) -> None:
        """What the app sends: replaced by the guard's refusal, a 400 rewritten, anything else passed on."""
        if self.refusal is not None:  # whatever the app makes of the overflow or timeout (BentoML: a 500)
            if message["type"] == "http.response.start" and not self.responded:
                await self.refuse(*self.refusal)
            return
        if message["type"] == "http.response.start":
            self.responded = True
            if message["status"] == 400:  # rare and small: held back to name "field: rule" in "error"
                self.held_start = message
                return
        elif self.held_start is not None and message["type"] == "http.response.body":
            self.held_body.append(message.get("body", b""))
            if not message.get("more_body", False):
                await self._send_rewritten_400()
            return
        await self.client_send(message)

    async def _send_rewritten_400(self) -> None:
        body = summarise_validation_error(b"".join(self.held_body))
        headers = [(k, v) for k, v in self.held_start["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.client_send({**self.held_start, "headers": headers})
        await self.client_send({"type": "http.response.body", "body": body})
