"""The service's pages, answered before BentoML's routes: nothing on them loads anything from off the host.

- ``GET /``: BentoML's Swagger UI page (its template, ``DEFAULT_INDEX_HTML``, with its own local assets in
  ``/static_content``) without the Google Tag Manager snippet the template carries, which made every visit
  request ``www.googletagmanager.com``; and with a link to the introspection page.
- ``GET /ui``: the introspection page (``service/ui/``: static HTML, CSS and JavaScript, no build step, no
  library). Everything it shows comes from the public API (``/models``, ``/models/{name}/examples``,
  ``/models/{name}/predict?detail=units`` and ``predict_image``).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from service import routes

UI_DIR = Path(__file__).resolve().parents[1] / "ui"
UI_PATH = "/ui"
FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
"""The page's files: nothing else under /ui is answered (no path is joined from the request)."""
TRACKER = re.compile(
    r"\s*<!-- Google Tag Manager(?: \(noscript\))? -->.*?<!-- End Google Tag Manager(?: \(noscript\))? -->", re.S
)
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
UI_POLICY = (
    b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'; "
    b"frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


@cache
def index_html() -> bytes:
    """BentoML's Swagger UI page without its tracker, with a link to the introspection page."""
    from service.bentoml_private import default_index_html

    page, removed = TRACKER.subn("", default_index_html())
    if removed != 2 or "googletagmanager" in page:
        raise RuntimeError("BentoML's index template changed: its tracker was not found where expected")
    link = (
        '<p class="ui-link" style="font: 14px sans-serif; margin: 12px 20px 0">'
        f'<a href="{UI_PATH}">Look inside a model: the introspection page ({UI_PATH})</a></p>'
    )
    return page.replace('<div id="swagger-ui"></div>', link + '\n    <div id="swagger-ui"></div>').encode()


@cache
def ui_file(name: str) -> bytes:
    return (UI_DIR / name).read_bytes()


def page_for(found: routes.Found | None) -> tuple[bytes, str, list[tuple[bytes, bytes]]] | None:
    """``(body, content type, extra headers)`` of a page route, or None."""
    if found is None:
        return None
    if found.route.action == "index":
        return index_html(), "text/html; charset=utf-8", []
    name = found.params.get("file", "index.html")
    if name not in FILES:
        return None
    return ui_file(name), FILES[name], [(b"content-security-policy", UI_POLICY)]


class Pages:
    """ASGI middleware answering GET and HEAD of the page paths; everything else passes through."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        found = page_for(routes.handled_by(scope, routes.PAGES))
        if found is None:
            await self.app(scope, receive, send)
            return
        body, content_type, extra = found
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-cache"),
            *SECURITY_HEADERS,
            *extra,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})
