"""Keys: who may manage the models and who may ask them.

- ``MANAGEMENT_KEY_FILE``: the repository routes (``/v2/repository/...``: index, load, unload) and setting or
  removing a shadow (``PUT``/``DELETE /models/{name}/shadow``) answer only a request with
  ``Authorization: Bearer <key>`` of a key in that file. Unset, they are off: 403, saying how
  to turn them on (an open load route lets anyone who reaches the port choose what runs).
- ``INFERENCE_KEY_FILE``: when set, every other route that shows or asks a model needs a key from that file:
  the prediction routes (the project's, the aliases, the Open Inference Protocol's), ``/models`` and its
  cards and examples. Unset, they are open, for local use.
- Always open: the health routes (``/livez``, ``/readyz``, ``/healthz``, ``/v2/health/*``), ``/metrics``
  (Prometheus scrapes them), the API document and its page (``/``, ``/docs.json``), and the introspection
  page's static files (the page asks for a key when the routes it reads need one).

A key file holds one key per line (blank lines and ``#`` comments skipped). It is re-read when it changes
(checked at most every :data:`RELOAD_SECONDS`), so keys rotate without a restart. Keys are compared in
constant time. A missing or wrong key gets 401 with ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from pathlib import Path

from service import errors, routes
from service.asgi import read_body, respond
from service.errors import KeyRefused, error_body, oip_error

log = logging.getLogger(__name__)

RELOAD_SECONDS = 1.0
MAX_HEADER_BYTES = 4096
CHECKED = "sparsity.key_checked"
"""The scope key the request guard sets on a request whose key it checked (see :meth:`KeyRules.answer`)."""


class KeyFile:
    """The keys of one file, re-read when the file changes."""

    def __init__(self, path: str | Path, reload_seconds: float = RELOAD_SECONDS) -> None:
        self.path = Path(path)
        self.reload_seconds = reload_seconds
        self._keys: list[bytes] = []
        self._seen: tuple[int, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._refresh(force=True)

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self.reload_seconds:
            return
        with self._lock:
            self._checked = now
            try:
                stat = os.stat(self.path)
            except OSError:
                if self._keys or self._seen is not None:
                    log.warning("key file %s cannot be read: no key is accepted until it can", self.path)
                self._keys, self._seen = [], None
                return
            seen = (stat.st_mtime_ns, stat.st_size)
            if seen == self._seen:
                return
            try:
                lines = self.path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                log.warning("key file %s cannot be read (%s): no key is accepted until it can", self.path, exc)
                self._keys, self._seen = [], None
                return
            self._keys = [line.strip().encode() for line in lines if line.strip() and not line.strip().startswith("#")]
            self._seen = seen
            log.info("key file %s: %d key(s)", self.path, len(self._keys))

    def accepts(self, key: bytes) -> bool:
        """Whether ``key`` is one of the file's keys (every key compared, in constant time each)."""
        self._refresh()
        found = False
        for candidate in self._keys:
            found |= hmac.compare_digest(candidate, key)
        return found and bool(key)


def bearer(headers: list[tuple[bytes, bytes]]) -> tuple[bytes | None, str | None]:
    """The key of the request's one ``Authorization: Bearer`` header, or None and why not."""
    values = [value for name, value in headers if name.lower() == b"authorization"]
    if not values:
        return None, "send Authorization: Bearer <key>"
    if len(values) > 1:
        return None, "send one Authorization header, not several"
    value = values[0]
    if len(value) > MAX_HEADER_BYTES:
        return None, f"the Authorization header is over {MAX_HEADER_BYTES} bytes"
    scheme, _, key = value.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None, "the Authorization scheme must be Bearer"
    key = key.strip()
    if not key:
        return None, "the Bearer key is empty"
    return key, None


def needs(path: str, method: str = "GET") -> str | None:
    """Which key a request needs (:data:`service.routes.TABLE`): "management", "inference" or None (open, or a
    path no route has: it is refused as such)."""
    found = routes.resolve(method, path)
    return None if found is None or found.key == routes.OPEN else found.key


class KeyRules:
    """The rules above for one service: which request is refused, and its answer."""

    def __init__(self, management: KeyFile | None = None, inference: KeyFile | None = None) -> None:
        self.management, self.inference = management, inference

    def refusal(self, scope, found: routes.Found | None = None) -> tuple[int, str] | None:
        """(403 or 401, why) for a request without the key its route needs, else None."""
        need = needs(scope["path"], scope.get("method", "GET")) if found is None else found.key
        if need == routes.MANAGEMENT:
            if self.management is None:
                return (
                    403,
                    "the management routes (the repository's, setting a shadow) are off: set MANAGEMENT_KEY_FILE "
                    "to a file of keys to turn them on",
                )
            return self._check(scope, self.management)
        if need == routes.INFERENCE and self.inference is not None:
            return self._check(scope, self.inference)
        return None

    def answer(self, scope) -> tuple[int, bytes, tuple] | None:
        """What a request is refused before anything else looks at it, as (status, body, extra headers), or None:
        a path no route has (404), the key its route needs (401, 403: before 415 or 413), a method its path does
        not take (405). A request let through is marked (its route kept in its scope), so nothing checks it again."""
        method, path = scope.get("method", "GET"), scope["path"]
        found = routes.of(scope)
        if found is None:
            return unrouted(method, path)
        refusal = self.refusal(scope, found)
        if refusal is not None:
            return answer(*refusal)
        if found.route is None:
            return unrouted(method, path)
        scope[CHECKED] = True
        return None

    @staticmethod
    def _check(scope, keys: KeyFile) -> tuple[int, str] | None:
        key, problem = bearer(scope["headers"])
        if problem is not None:
            return 401, problem
        if not keys.accepts(key):
            return 401, "the key is not valid"
        return None


class RouteGuard:
    """ASGI middleware: :meth:`KeyRules.answer` for every request the request guard has not checked (it checks
    POST requests only). A refused request's body is read first (within the request guard's limits), so the
    client reads the answer."""

    def __init__(self, app, rules: KeyRules) -> None:
        self.app, self.rules = app, rules

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get(CHECKED):
            await self.app(scope, receive, send)
            return
        refused = self.rules.answer(scope)
        if refused is None:
            await self.app(scope, receive, send)
            return
        if scope.get("method") in ("POST", "PUT", "DELETE"):
            await read_body(receive)
        status, body, extra = refused
        await respond(send, status, body, extra=extra)


def unrouted(method: str, path: str) -> tuple[int, bytes, tuple]:
    """The one answer to a request no route takes: 404 for a path the service does not have, 405 for a method
    its path does not take; in the Open Inference Protocol's form under ``/v2``."""
    status, rule, allow = routes.refusal(method, path)
    extra = ((b"allow", allow.encode()),) if allow else ()
    if path == routes.OIP_PREFIX or path.startswith(routes.OIP_PREFIX + "/"):
        return status, oip_error(f"{method} {path}: no such route"), extra
    if status == 404:
        return status, error_body(rule, "path", "not_found"), extra
    return status, error_body(rule, "method", "method_not_allowed"), extra


def answer(status: int, message: str) -> tuple[int, bytes, tuple]:
    """The ``Error`` body every refusal has, naming ``Authorization``; a 401 says which scheme to use."""
    extra = ((b"www-authenticate", b'Bearer realm="sparsity-service"'),) if status == 401 else ()
    return (*errors.answer(KeyRefused(message, status)), extra)
