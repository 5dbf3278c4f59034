"""The ASGI plumbing every route family shares: read a request's body, hand it on again, send an answer."""

from __future__ import annotations


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


async def respond(
    send,
    status: int,
    body: bytes,
    close: bool = False,
    head: bool = False,
    content_type: bytes = b"application/json",
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """An answer (JSON unless ``content_type`` says otherwise, with ``extra`` headers); ``close`` asks the
    server to close the connection once it is sent; ``head``: the headers only (a HEAD request)."""
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *extra]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


MAX_REQUEST_ID = 128


def request_id_of(scope) -> str | None:
    """The client's ``X-Request-ID`` header (at most 128 characters, printable ASCII), else None."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value[:MAX_REQUEST_ID].decode("latin-1")
            return text if text.isprintable() and text.isascii() and text else None
    return None
