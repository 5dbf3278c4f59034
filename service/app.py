"""Explicit construction: one place builds the settings, the audited list of models, the data plane and the
BentoML service around them (MLServer's ``server.py``). Nothing here runs at import.

``bentoml serve`` and ``bentoml build`` import ``service.service:SparsityService`` and need, at import, a
service class whose models are declared as class attributes (only those are bundled by ``bentoml build``)
and whose worker count is known. So :mod:`service.service` calls :func:`configure_or_exit` and :func:`serve`
at import: that is the one import-time step left, and it is there because BentoML asks for it.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import bentoml
from starlette.applications import Starlette
from starlette.responses import RedirectResponse
from starlette.routing import Route

from modelstore.audit import Candidate, NothingToServe, audit, candidates
from modelstore.kinds import PLUGIN_SETTING, LoadOptions, add_kinds_from
from predlog.store import StoreError, describe, open_store
from service import __version__, routes
from service.bentoml_private import replace_timeout_middleware
from service.config import Settings, SettingsError
from service.dataplane import DataPlane
from service.logbook.drift import DriftMonitors
from service.logbook.writer import LogWriter
from service.observability import exposition, logs, metrics
from service.openapi import document as openapi
from service.repository.manager import Manager
from service.repository.state import STATE_DIR_ENV, SharedState
from service.rest.deadline import RequestDeadline
from service.rest.guard import RequestGuard
from service.rest.keys import KeyFile, KeyRules, RouteGuard
from service.rest.logroutes import LogRoutes
from service.rest.modelroutes import ModelRoutes
from service.rest.oiproutes import OipRoutes
from service.rest.pages import Pages
from service.rest.shadowroutes import ShadowRoutes
from service.shadow.spec import ShadowSpec
from sparsity import detectors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Configuration:
    """What the service is started with: its settings and every wanted model, audited."""

    settings: Settings
    candidates: list[Candidate]
    shadows: dict[str, ShadowSpec] = field(default_factory=dict)  # SHADOW: each name's, at start

    @property
    def accepted(self) -> list[Candidate]:
        return [c for c in self.candidates if c.accepted]

    @property
    def load_options(self) -> LoadOptions:
        s = self.settings
        return LoadOptions(s.tf_intra_threads, s.tf_inter_threads, s.onnx_intra_threads, s.engine)


def limit_numpy_threads(threads: int):
    """NumPy's BLAS pool at ``threads`` in this process. With one worker answering two requests at once, NumPy's
    default (a BLAS thread per core) spun beside ONNX Runtime: 64-digit predictions took 4.55 ms each from two
    threads against 3.5 ms from one; with one BLAS thread, 1.87 ms (the two requests then share the cores)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")


def configure(environ: Mapping[str, str] | None = None) -> Configuration:
    """Read the settings, add the plug-in kinds they name, audit the store. Raises SettingsError or
    NothingToServe."""
    settings = Settings.from_env(environ)
    try:
        add_kinds_from(settings.model_kinds)
    except ValueError as exc:
        raise SettingsError(PLUGIN_SETTING, ",".join(settings.model_kinds), str(exc)) from None
    found = candidates(settings.served_models)
    shadows, extra = start_shadows(settings, found)
    return Configuration(settings, found + extra, shadows)


def start_shadows(settings: Settings, found: list[Candidate]) -> tuple[dict[str, ShadowSpec], list[Candidate]]:
    """``SHADOW``'s specs, each primary the newest served version of its name, and the candidate versions that are
    not served yet (audited). SettingsError when a candidate is not in the store or refused, or its name is not
    served."""
    import bentoml

    specs, extra = {}, []
    raw = ",".join(":".join(map(str, spec)) for spec in settings.shadows)
    for name, version, share, mode in settings.shadows:
        candidate = next((c for c in found if c.tag == f"{name}:{version}"), None) or audit(f"{name}:{version}")
        if not candidate.accepted:
            raise SettingsError("SHADOW", raw, candidate.problem)
        served = [c.tag for c in found if c.accepted and c.name == name and c.tag != candidate.tag]
        if not served:
            raise SettingsError("SHADOW", raw, f"model {name} has no other version served to be its primary")
        primary = max(served, key=lambda tag: bentoml.models.get(tag).info.creation_time)
        created = ShadowSpec(name, primary.partition(":")[2], candidate.tag.partition(":")[2], share, mode)
        specs[name] = replace(created, id=secrets.token_hex(4), since=time.time(), loaded=True)
        if candidate not in found:
            extra.append(candidate)
    return specs, extra


def configure_or_exit(in_worker: bool) -> Configuration:
    """:func:`configure`, or one line on stderr and exit status 2 before any worker starts."""
    logs.configure()
    try:
        configuration = configure()
        if not in_worker:
            check_log(configuration.settings)
    except (SettingsError, NothingToServe) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    if not in_worker:
        for refused in (c for c in configuration.candidates if not c.accepted):
            log.warning("not serving %s", refused.problem)
        prepare_sparse_kernels(configuration)
    return configuration


def prepare_sparse_kernels(configuration: Configuration) -> None:
    """Build the sparse engine's kernels once, before any worker starts, when a served model's card says the
    engine passed (a worker then only loads them); one line when they cannot be built (those models then run on
    their other engine)."""
    checked = [
        c for c in configuration.candidates
        if c.accepted and any(e.engine == "sparse" and e.passed for e in getattr(c.card, "engines", []))
    ]  # fmt: skip
    if not checked:
        return
    from sparsity.sparse.kernels import available

    why = available()
    if why is not None:
        log.warning(
            "the sparse engine's kernels are not available here (%s); its models run on their other engine", why
        )


def shared_state(configuration: Configuration, in_worker: bool) -> SharedState:
    """The directory the workers share the served set in (:mod:`service.repository`). The supervising process
    always makes a new one, holding the audited models (a value inherited from whatever started it would join
    another service's set), and its workers inherit it through the environment; it is removed when the
    supervisor exits. A worker started alone makes its own."""
    directory = os.environ.get(STATE_DIR_ENV)
    if in_worker and directory:
        return SharedState(directory)
    state = SharedState.create([c.tag for c in configuration.accepted], configuration.shadows)
    os.environ[STATE_DIR_ENV] = str(state.directory)
    if not in_worker:
        atexit.register(shutil.rmtree, state.directory, ignore_errors=True)
    return state


def check_log(settings: Settings) -> None:
    """Open the prediction log once before any worker starts (its schema migrated): SettingsError names the
    setting when it cannot be opened."""
    if not settings.log:
        return
    where = settings.log_location()
    try:
        open_store(where).close()
    except StoreError as exc:
        raise SettingsError("PREDICTION_LOG_URL", settings.log_url or where, str(exc)) from None
    log.info("prediction log: %s", describe(where))


def logbook_for(settings: Settings) -> LogWriter:
    """The worker's prediction log writer and drift windows (the thread starts in the worker)."""
    return LogWriter(
        settings.log_opener(),
        sample=settings.log_sample,
        inputs=settings.log_inputs,
        retention_days=settings.log_retention_days,
        monitors=DriftMonitors(settings.drift_window),
    )


def plane_for(configuration: Configuration) -> DataPlane:
    s = configuration.settings
    batching = (s.batch_max_size, s.batch_wait_ms, s.batch_max_queue)
    detectors.ROW_BY_ROW_UP_TO = s.batch_max_size  # an item's score is the same alone as in any shared pass
    plane = DataPlane(
        s.max_image_pixels, s.max_unit_series, s.expose_examples, s.shadow_queue_bytes, batching, logbook_for(s)
    )
    plane.shadows.options = configuration.load_options  # the shadow process loads candidates as the worker does
    return plane


def manager_for(configuration: Configuration, state: SharedState) -> Manager:
    return Manager(state, configuration.settings.workers, configuration.settings.load_timeout)


def declare_models(cls: type, configuration: Configuration) -> dict[str, str]:
    """Each accepted model as a ``BentoModel`` class attribute of ``cls`` (only class attributes are bundled
    by ``bentoml build``); returns each tag's attribute name."""
    attributes = {}
    for index, candidate in enumerate(configuration.accepted):
        attributes[candidate.tag] = f"stored_model_{index}"
        setattr(cls, attributes[candidate.tag], bentoml.models.BentoModel(candidate.tag))
    return attributes


def serve(cls: type, configuration: Configuration, plane: DataPlane, manager: Manager):
    """``cls`` as the BentoML service: its settings, the pages, the guards and the model routes on ``plane``
    (the Open Inference Protocol's too, with ``manager`` for its repository routes)."""
    settings = configuration.settings
    exposition.install()
    replace_timeout_middleware(RequestDeadline)  # BentoML's traffic timeout, without a task a request
    app = Starlette(routes=[Route("/docs", lambda request: RedirectResponse("/"), methods=["GET"])])
    # BentoML serves Swagger UI at / and the OpenAPI document at /docs.json; /docs points there
    service = bentoml.asgi_app(app, path="/")(
        bentoml.service(
            name="sparsity_service",
            workers=settings.workers,
            traffic={"timeout": 60},
            # no OpenTelemetry spans for the prediction routes: its middleware wraps every body chunk (3 ms of a
            # 256-image JSON request, measured) and costs about 8% of a one-image request; no exporter is
            # configured by default anyway. The excluded URLs are regexes, searched in the URL.
            tracing={"excluded_urls": ["/mnist/", "/iris/", routes.MODELS_PATH, "/v2/"]},
            logging={"access": {"enabled": settings.access_log, "skip_paths": ["/metrics", "/livez", "/readyz"]}},
            metrics={
                "enabled": True,
                "namespace": "bentoml_service",
                "duration": {"buckets": metrics.REQUEST_BUCKETS},
            },
        )(cls)
    )
    rules = KeyRules(
        management=KeyFile(settings.management_key_file) if settings.management_key_file else None,
        inference=KeyFile(settings.inference_key_file) if settings.inference_key_file else None,
    )
    service.add_asgi_middleware(
        RequestGuard,
        max_body_bytes=settings.max_body_bytes,
        max_drain_bytes=settings.max_drain_bytes,
        body_timeout=settings.body_timeout,
        first=rules.answer,  # the route and its key first: 404 or 401 before any 415 or 413
    )

    def keep() -> set[tuple[str, str]]:
        desired = manager.state.read()
        shadows = {("shadow", spec.id) for spec in desired.shadows.values()}
        return {tuple(tag.split(":", 1)) for tag in desired.models} | shadows

    service.add_asgi_middleware(exposition.Exposition, keep=keep)  # /metrics without unloaded versions
    service.add_asgi_middleware(RouteGuard, rules=rules)  # 404, 401/403, 405: the requests the guard did not see
    service.add_asgi_middleware(OipRoutes, plane=plane, manager=manager)
    service.add_asgi_middleware(ShadowRoutes, plane=plane, manager=manager)
    # the log's reads: their own connection
    service.add_asgi_middleware(LogRoutes, plane=plane, open_store=settings.log_opener())
    service.add_asgi_middleware(ModelRoutes, plane=plane)  # inside the guard: 415 and 413 are answered before it
    service.add_asgi_middleware(Pages)  # / without BentoML's tracker, and the introspection page /ui
    service.add_asgi_middleware(
        openapi.OpenAPIDocument,
        build=lambda: openapi.fix_document(service.openapi_spec.asdict(), version=__version__),
    )
    return service
