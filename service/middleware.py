"""ASGI middleware that refuses oversize bodies (413) and wrong content types (415) before the
body is parsed, with the same JSON error shape as the API's 400s."""

from __future__ import annotations

import json
from collections.abc import Iterable

from service.routes import Route


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


def _loc(loc: list) -> str:
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
        data["error"] = "; ".join(f"{_loc(d['loc'])}: {d['msg']}" for d in detail)
        for d in detail:
            d.pop("url", None)
    except (ValueError, KeyError, TypeError):
        return body
    return json.dumps(data).encode()


class RequestGuard:
    """Check Content-Type and Content-Length up front and count streamed bytes as they arrive."""

    def __init__(self, app, routes: Iterable[Route], max_body_bytes: int = 16 * 1024 * 1024) -> None:
        self.app = app
        self.routes = {route.path: route for route in routes}
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        route = self.routes.get(scope["path"].rstrip("/"))
        if route is not None:
            allowed = route.content_types
            media_type = headers.get("content-type", "").split(";")[0].strip().lower()
            if media_type not in allowed:
                message = f"must be {' or '.join(allowed)}, got {media_type or 'none'!r}"
                await respond(send, 415, error_body(message, "Content-Type", "unsupported_media_type"))
                return
        limit = self.max_body_bytes
        too_large = f"request body exceeds the limit of {limit} bytes"
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await respond(send, 413, error_body(too_large, "body", "body_too_large"))
            return

        received = 0
        exceeded = responded = False
        held_start: dict | None = None
        held_body: list[bytes] = []

        async def counting_receive():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message):
            nonlocal responded, held_start
            if exceeded:  # whatever the app makes of the overflow (BentoML: a 500), the client gets 413
                if message["type"] == "http.response.start" and not responded:
                    responded = True
                    await respond(send, 413, error_body(too_large, "body", "body_too_large"))
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

        try:
            downstream = counting_receive
            if route is not None and route.upload_field is not None:
                body = await read_body(counting_receive)
                problem = await _check_upload(scope, body, route.upload_field)
                if problem is not None:
                    await respond(send, 400, error_body(problem[1], problem[0], "invalid_input"))
                    return
                downstream = replay_body(body, receive)
            await self.app(scope, downstream, guarded_send)
        except BodyTooLarge:
            if not responded:
                await respond(send, 413, error_body(too_large, "body", "body_too_large"))


async def respond(send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
