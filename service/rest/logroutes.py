"""The prediction log's routes (:mod:`predlog`), and the drift of a model's versions:

- ``GET /models/{name}/log`` (inference key): a page of the name's logged items, newest first, filtered by
  ``version``, ``since``/``until``, ``atypical``, ``label``, ``role`` and ``reviewed``; ``next`` is the cursor of
  the page after it (``cursor=``), null on the last page;
- ``GET /models/{name}/log/{id}`` (inference key): one item, with its input when the log kept it;
- ``PUT /models/{name}/log/{id}/review`` (management key) ``{"label": "7"}``: a reviewer's label (a class of the
  model, or ``"invalid"``: not a valid input at all), stored with the time;
- ``GET /models/{name}/drift`` (inference key): each serving version's drift windows, the largest index over
  the workers per signal, and the closed windows so far.

A name must be served (404 otherwise); every filter is checked (:mod:`predlog.query`): a bad one gets 400 naming
the parameter and the rule. With the log off, the log's routes answer 404 saying so.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from urllib.parse import parse_qs

import anyio
import orjson

from predlog.query import QueryError, parse
from predlog.rows import decode_input
from predlog.schema import INVALID
from predlog.store import Store, StoreError
from service import errors, routes
from service.asgi import read_body, respond
from service.dataplane import DataPlane
from service.errors import ServiceError
from service.observability import exposition

MAX_BODY_BYTES = 4096


class LogError(ServiceError):
    kind = "log"


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.datetime.fromtimestamp(at, datetime.UTC).isoformat(timespec="milliseconds")


def row_answer(row: dict, class_names: list[str]) -> dict:
    """A stored row as the routes answer it."""
    label = int(row["label"])
    answer = {
        "id": int(row["id"]),
        "at": _iso(row["at"]),
        "request_id": row["request_id"],
        "item": int(row["item"]),
        "model": row["model"],
        "version": row["version"],
        "role": row["role"],
        "route": row["route"],
        "label": class_names[label] if label < len(class_names) else str(label),
        "label_index": label,
        "top_probability": row["top"],
        "layer_sparsity": orjson.loads(row["zeros"]),
        "overall_sparsity": row["overall"],
        "typicality_score": row["score"],
        "atypical": bool(row["atypical"]),
        "latency_ms": row["latency_ms"],
        "review": None if row["review"] is None else {"label": row["review"], "at": _iso(row["reviewed_at"])},
        "has_input": bool(row.get("has_input", row.get("input") is not None)),
    }
    if "input" in row:
        answer["input"] = None if row["input"] is None else decode_input(bytes(row["input"])).tolist()
    return answer


def parse_review(body: bytes, class_names: list[str]) -> str:
    """The label of a review body: one of the model's classes, or ``invalid``."""
    rule = f'must be one of the model\'s classes ({", ".join(class_names[:12])}) or "{INVALID}"'
    try:
        request = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError as exc:
        raise LogError(f"must be JSON ({exc})") from None
    if not isinstance(request, dict) or set(request) != {"label"}:
        raise LogError('must be a JSON object with one field, {"label": "..."}')
    label = request["label"]
    if not isinstance(label, str) or (label != INVALID and label not in class_names):
        raise LogError(rule, "label")
    return label


class LogRoutes:
    """An ASGI middleware answering the routes above; anything else goes on to ``app``. ``open_store``: opens the
    worker's reading connection (None: the log is off)."""

    def __init__(self, app, plane: DataPlane, open_store: Callable[[], Store] | None) -> None:
        self.app, self.plane, self.open_store = app, plane, open_store
        self._store: Store | None = None

    async def __call__(self, scope, receive, send) -> None:
        found = routes.handled_by(scope, routes.LOG)
        if found is None:
            await self.app(scope, receive, send)
            return
        method, action = scope.get("method"), found.route.action
        body = await read_body(receive) if method == "PUT" else b""
        try:
            runtime = self.plane.model(found.name)  # 404 for a name that is not served
            names = runtime.class_names
            if action == "drift":
                answer = orjson.dumps(self._drift(found.name))
            else:
                query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
                work = {"page": self._page, "row": self._row, "review": self._review}[action]
                answer = await anyio.to_thread.run_sync(work, found.name, found.params, query, body, names)
            status = 200
        except QueryError as exc:
            status, answer = errors.answer(LogError(exc.rule, exc.field))
        except ServiceError as exc:
            status, answer = errors.answer(exc)
        await respond(send, status, answer, head=method == "HEAD")

    def _connected(self) -> Store:
        if self.open_store is None:
            raise LogError("the prediction log is off (PREDICTION_LOG=false)", "log", 404)
        if self._store is None:
            try:
                self._store = self.open_store()
            except StoreError as exc:
                raise LogError(str(exc), "log", 503) from None
        return self._store

    def _page(self, name: str, params, query, body, names) -> bytes:
        filters = parse(query, names)
        rows = self._connected().page(name, filters)
        last = rows[-1]["id"] if len(rows) == filters.limit else None
        return orjson.dumps({"model": name, "rows": [row_answer(r, names) for r in rows], "next": last})

    def _id(self, params) -> int:
        raw = params["id"]
        if not raw.isdigit() or not 1 <= int(raw) < 2**62:
            raise LogError("must be the whole-number id of a logged item (GET /models/{name}/log lists them)", "id")
        return int(raw)

    def _row(self, name: str, params, query, body, names) -> bytes:
        if query:
            raise LogError("this route takes no query parameters", "query")
        row = self._connected().get(name, self._id(params))
        if row is None:
            raise LogError(f"model {name} has no logged item {params['id']}", "id", 404)
        return orjson.dumps(row_answer(row, names))

    def _review(self, name: str, params, query, body, names) -> bytes:
        if len(body) > MAX_BODY_BYTES:
            raise LogError(f"must be at most {MAX_BODY_BYTES} bytes", status=413)
        row_id, label = self._id(params), parse_review(body, names)
        store = self._connected()
        if not store.review(name, row_id, label, time.time()):
            raise LogError(f"model {name} has no logged item {row_id}", "id", 404)
        return orjson.dumps(row_answer(store.get(name, row_id), names))

    def _drift(self, name: str) -> dict:
        """Each serving version's last windows over every worker: the largest index per signal."""
        psi: dict[str, dict[str, float]] = {}
        windows: dict[str, dict[str, float]] = {}
        for family in exposition.collect():
            if family.name not in ("model_drift_psi", "model_drift_windows"):
                continue
            for sample in family.samples:
                labels = sample.labels
                if labels.get("model") != name:
                    continue
                if family.name == "model_drift_psi":
                    signals = psi.setdefault(labels["version"], {})
                    signals[labels["signal"]] = max(signals.get(labels["signal"], 0.0), sample.value)
                elif sample.name.endswith("_total"):
                    counts = windows.setdefault(labels["version"], {})
                    counts[labels["outcome"]] = counts.get(labels["outcome"], 0) + int(sample.value)
        monitors = self.plane.logbook.monitors
        versions = []
        for version in self.plane.versions(name):
            state = monitors.state(name, version)
            counts = {k: windows.get(version, {}).get(k, 0) for k in ("clean", "drifted")}
            signals = psi.get(version, {}) if sum(counts.values()) else {}  # none closed yet: no index to show
            versions.append({
                "version": version,
                "baseline": state is not None,
                "window": None if state is None else state["window"],
                "alarm": monitors.alarm,
                "psi": signals,
                "drifted": any(v > monitors.alarm for v in signals.values()),
                "windows": counts,
            })  # fmt: skip
        return {"model": name, "versions": versions}
