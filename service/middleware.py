"""ASGI middleware that refuses oversize bodies (413) and wrong content types (415) before the
body is parsed, with the same JSON error shape as the API's 400s."""

from __future__ import annotations

import json
from collections.abc import Callable

import anyio

from service.routes import RouteSpec, match


class BodyTooLarge(Exception):
    pass


async def read_body(receive) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def replay_body(body: bytes, receive):
    """A receive callable that hands the already-read body to the app, then defers to the client."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


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


def error_body(message: str, loc: str, kind: str) -> bytes:
    """The API's error shape: ``error`` names the field and the rule, ``detail`` is pydantic-like."""
    return json.dumps({"error": f"{loc}: {message}", "detail": [{"type": kind, "loc": [loc], "msg": message}]}).encode()


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
    ) -> None:
        self.app = app
        self.route_of = route_of
        self.max_body_bytes = max_body_bytes
        self.max_drain_bytes = max_drain_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        limit = self.max_body_bytes
        too_large = f"request body exceeds the limit of {limit} bytes"
        too_slow = f"the request body did not arrive within {self.body_timeout:g} s"
        deadline = anyio.current_time() + self.body_timeout
        received = 0
        started = ended = False
        refusal: tuple[int, bytes] | None = None  # set when the guard, not the app, answers
        responded = False
        held_start: dict | None = None
        held_body: list[bytes] = []

        async def timed_receive():
            """The client's next message; BodyTimeout once the body is past its deadline."""
            nonlocal started, ended, received
            if ended:
                return await receive()
            started = True
            with anyio.move_on_after(max(deadline - anyio.current_time(), 0)):
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    ended = not message.get("more_body", False)
                else:
                    ended = True
                return message
            raise BodyTimeout

        async def refuse(status: int, body: bytes) -> None:
            """Answer for the guard: discard the rest of the body first when the client is sending it;
            close the connection when its body was not read to the end."""
            nonlocal responded
            responded = True
            waiting = not started and headers.get("expect", "").strip().lower() == "100-continue"
            if not ended and not waiting and status != 408:
                await self._drain(timed_receive, lambda: received, headers.get("content-length"))
            await respond(send, status, body, close=not ended)

        async def counting_receive():
            nonlocal refusal
            try:
                message = await timed_receive()
            except BodyTimeout:
                refusal = (408, error_body(too_slow, "body", "body_timeout"))
                raise
            if received > limit:
                refusal = (413, error_body(too_large, "body", "body_too_large"))
                raise BodyTooLarge
            return message

        async def guarded_send(message):
            nonlocal responded, held_start
            if refusal is not None:  # whatever the app makes of the overflow or timeout (BentoML: a 500)
                if message["type"] == "http.response.start" and not responded:
                    await refuse(*refusal)
                return
            if message["type"] == "http.response.start":
                responded = True
                if message["status"] == 400:  # rare and small: held back to name "field: rule" in "error"
                    held_start = message
                    return
            elif held_start is not None and message["type"] == "http.response.body":
                held_body.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = summarise_validation_error(b"".join(held_body))
                headers = [(k, v) for k, v in held_start["headers"] if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**held_start, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        route = self.route_of(scope["path"])
        if route is not None:
            allowed = route.content_types
            media_type = headers.get("content-type", "").split(";")[0].strip().lower()
            if media_type not in allowed:
                message = f"must be {' or '.join(allowed)}, got {media_type or 'none'!r}"
                await refuse(415, error_body(message, "Content-Type", "unsupported_media_type"))
                return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await refuse(413, error_body(too_large, "body", "body_too_large"))
            return

        try:
            downstream = counting_receive
            if route is not None and route.upload_field is not None:
                body = await read_body(counting_receive)
                problem = await _check_upload(scope, body, route.upload_field)
                if problem is not None:
                    await refuse(400, error_body(problem[1], problem[0], "invalid_input"))
                    return
                downstream = replay_body(body, receive)
            await self.app(scope, downstream, guarded_send)
        except (BodyTooLarge, BodyTimeout):
            if not responded and refusal is not None:
                await refuse(*refusal)

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


async def respond(send, status: int, body: bytes, close: bool = False, head: bool = False) -> None:
    """A JSON answer; ``close`` asks the server to close the connection once it is sent; ``head``: the
    headers only (a HEAD request)."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
