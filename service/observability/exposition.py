"""``GET /metrics`` without the series of unloaded versions, and request series with bounded labels.

- Prometheus' multiprocess files keep every series a worker ever wrote, so an unloaded version (or a removed
  shadow) would stay in BentoML's ``/metrics`` for as long as the service runs. :class:`Exposition` answers
  ``/metrics`` itself: the same multiprocess collection, without the samples of versions no longer loaded
  and of shadows no longer set.
- BentoML labels its request series with the raw path: every path a client invents adds series.
  :class:`BoundedTrafficMetrics` labels them with the route instead (:func:`service.routes.endpoint_label`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from timeit import default_timer

import anyio

from service.asgi import respond
from service.observability.pending import FLUSHER, PendingCounter, PendingHistogram, flush_all
from service.routes import endpoint_label

ORIGINAL_PATH = "sparsity.original_path"


class _Families:
    def __init__(self, families) -> None:
        self.families = families

    def collect(self):
        return self.families


def collect(keep: Callable[[], set[tuple[str, str]]] | None = None) -> list:
    """Every worker's metric families (this process's alone without a multiprocess directory), the series of
    ``(model, version)`` pairs and of shadows (``("shadow", id)``) not in ``keep()`` left out (None: all kept)."""
    import prometheus_client
    from prometheus_client.multiprocess import MultiProcessCollector

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return list(prometheus_client.REGISTRY.collect())
    families = list(MultiProcessCollector(None, directory).collect())
    if keep is None:
        return families
    kept = keep()
    for family in families:
        family.samples = [s for s in family.samples if _kept(s.labels, kept)]
        if family.type == "histogram":  # buckets, then count, then sum, per series (as BentoML orders them)
            family.samples.sort(key=_histogram_order)
    return families


def _kept(labels: dict, kept: set[tuple[str, str]]) -> bool:
    if "shadow_id" in labels:
        return ("shadow", labels["shadow_id"]) in kept
    return "version" not in labels or (labels.get("model"), labels["version"]) in kept


def render(keep: Callable[[], set[tuple[str, str]]]) -> bytes:
    """The exposition of every worker's series, the ``(model, version)`` pairs not in ``keep()`` left out. This
    worker's pending figures are written first (the others' are at most a flush interval old)."""
    import prometheus_client

    flush_all()

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return prometheus_client.generate_latest()
    return prometheus_client.generate_latest(_Families(collect(keep)))


def _histogram_order(sample) -> tuple:
    labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
    if sample.name.endswith("_bucket"):
        return labels, 0, float(sample.labels.get("le", 0))
    return labels, 1 if sample.name.endswith("_count") else 2, 0.0


class Exposition:
    """ASGI middleware answering ``GET /metrics`` with :func:`render`."""

    def __init__(self, app, keep: Callable[[], set[tuple[str, str]]]) -> None:
        self.app, self.keep = app, keep

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != "/metrics" or scope.get("method") not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        from prometheus_client import CONTENT_TYPE_LATEST

        body = await anyio.to_thread.run_sync(render, self.keep)
        await respond(send, 200, body, head=scope["method"] == "HEAD", content_type=CONTENT_TYPE_LATEST.encode())


def _restoring(app):
    async def restore(scope, receive, send):
        if ORIGINAL_PATH in scope:
            scope = {**scope, "path": scope[ORIGINAL_PATH]}
        await app(scope, receive, send)

    return restore


class TrafficFigures:
    """BentoML's request series of one worker (``bentoml_service_request_*``), added up in memory and written by
    the process's flusher (:mod:`service.observability.pending`): BentoML writes five multiprocess values a
    request (about 16 us of a one-image request, ``make profile``). The in-progress gauge is written as the count
    in progress at each flush, the last request's time likewise."""

    def __init__(self, middleware) -> None:
        from service.bentoml_private import server_context

        context = server_context()
        self.names = {"service_name": context.bento_name, "service_version": context.bento_version}
        self.runner = {"runner_name": context.service_name}
        self.middleware = middleware
        self.skip = tuple(middleware.skip_paths)
        self.answers: dict[tuple[str, int], tuple[PendingCounter, PendingHistogram]] = {}
        self.running: dict[str, int] = {}
        self.last_seen: float | None = None
        self._lock = threading.Lock()
        FLUSHER.register(self)

    def started(self, label: str) -> None:
        self.running[label] = self.running.get(label, 0) + 1
        if not label.startswith(self.skip):
            self.last_seen = time.time()

    def finished(self, label: str) -> None:
        self.running[label] -= 1

    def answered(self, label: str, status: int, seconds: float) -> None:
        with self._lock:
            pair = self.answers.get((label, status))
            if pair is None:
                labels = {"endpoint": label, **self.names, "http_response_code": status, **self.runner}
                m = self.middleware
                pair = self.answers[(label, status)] = (
                    PendingCounter(m.metrics_request_total.labels(**labels)),
                    PendingHistogram(m.metrics_request_duration.labels(**labels)),
                )
            pair[0].count += 1
            pair[1].add(seconds)

    def flush(self) -> None:
        m = self.middleware
        with self._lock:
            for counter, histogram in self.answers.values():
                counter.flush()
                histogram.flush()
        for label, count in list(self.running.items()):
            m.metrics_request_in_progress.labels(endpoint=label, **self.names, **self.runner).set(count)
        if self.last_seen is not None:
            m.metrics_last_request_timestamp.labels(**self.names, **self.runner).set(self.last_seen)


def bounded_traffic_metrics():
    """BentoML's request-metrics middleware, labelling by route and writing through :class:`TrafficFigures`
    (installed by :func:`install`); websockets and ``/metrics`` as BentoML does them."""
    from service.bentoml_private import traffic_metrics_middleware

    class BoundedTrafficMetrics(traffic_metrics_middleware()):
        def __init__(self, app, **options) -> None:
            super().__init__(_restoring(app), **options)
            self.figures: TrafficFigures | None = None

        async def __call__(self, scope, receive, send) -> None:
            path = scope["path"] if scope["type"] == "http" else "/metrics"
            if path == "/metrics":
                await super().__call__(scope, receive, send)
                return
            if self.figures is None:
                if not self._is_setup:  # (BentoML's own __call__ may have set up already, on /metrics)
                    self._setup()
                    self._is_setup = True
                self.figures = TrafficFigures(self)
            figures, label, start, status = self.figures, endpoint_label(path), default_timer(), 0
            if label != path:
                scope = {**scope, "path": label, ORIGINAL_PATH: path}

            async def wrapped_send(message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                elif message["type"] == "http.response.body" and not message.get("more_body", False):
                    figures.answered(label, status, max(default_timer() - start, 0))
                await send(message)

            figures.started(label)
            try:
                await self.app(scope, receive, wrapped_send)
            finally:
                figures.finished(label)

    return BoundedTrafficMetrics


def install() -> None:
    """Make BentoML build its request metrics with :func:`bounded_traffic_metrics` (it imports the class when
    it builds the app, in each worker: :mod:`service.bentoml_private` says why and checks it still does)."""
    from service.bentoml_private import replace_traffic_metrics, traffic_metrics_middleware

    if not getattr(traffic_metrics_middleware(), "bounded", False):
        cls = bounded_traffic_metrics()
        cls.bounded = True
        replace_traffic_metrics(cls)
