"""``/models/{name}/shadow``: a candidate version beside the one answering ``name`` (:mod:`service.shadow`).

- ``PUT`` ``{"version": "...", "share": 0.25, "mode": "mirror" | "canary"}`` (management key): sets the
  name's shadow (mode ``mirror``, the default) or canary, loading the version in every worker first if it is
  not loaded; answers as ``GET`` does. A version not in the store gets 404, a bad share or mode 400.
- ``GET`` (inference key): the shadow and its comparison so far, summed over every worker (or, for a canary,
  the requests each side answered).
- ``DELETE`` (management key): stops it at once in every worker (and unloads the candidate if the shadow
  loaded it); answers with the comparison as it stood.
"""

from __future__ import annotations

import datetime
import json

import anyio

from modelstore.compare import summary, unit_widths
from service import errors, routes
from service.asgi import read_body, respond
from service.dataplane import DataPlane
from service.errors import ServiceError, ShadowError
from service.observability import exposition
from service.repository.manager import Manager
from service.shadow.series import totals_of
from service.shadow.spec import ShadowSpec, check_mode, check_share

MAX_BODY_BYTES = 64 * 1024
FIELDS = ("version", "share", "mode")


def describe(plane: DataPlane, spec: ShadowSpec) -> dict:
    """The shadow's spec and its figures so far, summed over every worker's series."""
    candidate = plane.loaded.get(spec.candidate_tag)
    widths = (unit_widths(candidate) if candidate is not None else None) or {}
    totals, counts = totals_of(exposition.collect(), spec, widths)
    since = datetime.datetime.fromtimestamp(spec.since, datetime.UTC).isoformat(timespec="seconds")
    answer = {
        "model": spec.name,
        "primary": spec.primary,
        "candidate": spec.candidate,
        "mode": spec.mode,
        "share": spec.share,
        "id": spec.id,
        "since": since,
        "state": spec.state,
    }
    if spec.mode == "canary":
        answer["requests"] = {side: counts.get(side, 0) for side in ("primary", "candidate")}
        return answer
    pending = counts["mirrored"] - counts["compared"] - counts["failed"]
    answer["inputs"] = {**{k: counts[k] for k in ("mirrored", "compared", "dropped", "failed")}, "pending": pending}
    answer["comparison"] = summary(totals, widths or None)
    return answer


def parse_request(body: bytes) -> tuple[str, float, str]:
    """``(version, share, mode)`` of a PUT body; ShadowError names the field and the rule."""
    try:
        request = json.loads(body) if body.strip() else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ShadowError(f"must be JSON ({exc})") from None
    if not isinstance(request, dict):
        raise ShadowError('must be a JSON object {"version": "...", "share": 0.25}')
    unknown = sorted(set(request) - set(FIELDS))
    if unknown:
        raise ShadowError(f"unknown field(s) {', '.join(unknown)}; the fields are {', '.join(FIELDS)}")
    version = request.get("version")
    if not isinstance(version, str) or not version.strip() or ":" in version:
        raise ShadowError("must be the version string of a stored version of the model", "version")
    if "share" not in request:
        raise ShadowError("is required: the share of requests, from 0 to 1", "share")
    return version.strip(), check_share(request["share"]), check_mode(request.get("mode", "mirror"))


class ShadowRoutes:
    """An ASGI middleware answering ``/models/{name}/shadow``; anything else goes on to ``app``."""

    def __init__(self, app, plane: DataPlane, manager: Manager) -> None:
        self.app, self.plane, self.manager = app, plane, manager

    async def __call__(self, scope, receive, send) -> None:
        found = routes.handled_by(scope, routes.SHADOW)
        if found is None:
            await self.app(scope, receive, send)  # a method no route takes was refused before (service.rest.keys)
            return
        name, method = found.name, scope.get("method")
        body = await read_body(receive) if method in ("PUT", "DELETE") else b""
        try:
            if method in ("GET", "HEAD"):
                status, answer = 200, await anyio.to_thread.run_sync(self._get, name)
            elif method == "PUT":
                status, answer = 200, await anyio.to_thread.run_sync(self._put, name, body)
            else:
                status, answer = 200, await anyio.to_thread.run_sync(self._delete, name)
        except ServiceError as exc:
            status, answer = errors.answer(exc)
        await respond(send, status, answer, head=method == "HEAD")

    def _spec(self, name: str) -> ShadowSpec:
        self.plane.model(name)  # 404 for a name that is not served
        spec = self.plane.shadow_specs.get(name)
        if spec is None:
            raise ShadowError(f"model {name} has no shadow (PUT /models/{name}/shadow sets one)", "shadow", 404)
        return spec

    def _get(self, name: str) -> bytes:
        return json.dumps(describe(self.plane, self._spec(name))).encode()

    def _put(self, name: str, body: bytes) -> bytes:
        if len(body) > MAX_BODY_BYTES:
            raise ShadowError(f"must be at most {MAX_BODY_BYTES} bytes", status=413)
        version, share, mode = parse_request(body)
        primary = self.plane.model(name)
        spec = self.manager.set_shadow(name, version, share, mode, primary.version)
        return json.dumps(describe(self.plane, spec)).encode()

    def _delete(self, name: str) -> bytes:
        answer = describe(self.plane, self._spec(name))
        self.manager.remove_shadow(name)
        answer["state"] = "removed"
        return json.dumps(answer).encode()
