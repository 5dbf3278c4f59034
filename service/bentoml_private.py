"""Every use of BentoML's private names, in one module, each with the reason it is needed.

BentoML is pinned (``bentoml==1.4.40`` in ``requirements/service.txt`` and ``pyproject.toml``). An upgrade that
moves, renames or changes one of these would otherwise make a patch stop working without a sound (the request
series would go back to one per raw path: unbounded); :func:`broken_assumptions` checks each, and
``tests/unit/test_bentoml_private.py`` fails with the broken one named.

- ``bentoml._internal.server.http.instruments.RunnerTrafficMetricsMiddleware``: BentoML's request metrics label
  each request by its raw path. The service replaces the class in that module with a subclass that labels by
  route (:func:`service.observability.exposition.bounded_traffic_metrics`); BentoML's app factory
  (``_bentoml_impl.server.app``) imports it from that module each time a worker builds its app, so the
  replacement, made at import of the service, is what it finds. No public hook sets the metrics' labels.
- its attributes ``metrics_request_total``, ``metrics_request_duration``, ``metrics_request_in_progress``,
  ``metrics_last_request_timestamp``, ``skip_paths`` and its ``_setup``, and ``bentoml._internal.context.
  server_context`` (``bento_name``, ``bento_version``, ``service_name``): the subclass writes the same series
  through the process's flusher instead of five multiprocess writes a request
  (:class:`service.observability.exposition.TrafficFigures`).
- ``bentoml._internal.server.http.traffic.TimeoutMiddleware(app, timeout)``: BentoML's request timeout runs
  every request in a task of its own; the service replaces the class in that module (BentoML's app factory,
  ``bentoml._internal.server.base_app``, imports it from there when it builds the app) with
  :class:`service.rest.deadline.RequestDeadline`, the same 504 with one timer a request.
- the logger ``bentoml._internal.server.http_app`` and its message ``Exception on <path> [<method>]``: BentoML
  logs every refused request there with a traceback; :class:`service.observability.logs.RefusalsAsOneLine` turns
  a refusal (a 4xx) into one line. No setting changes that message.
- ``bentoml._internal.server.http_app.DEFAULT_INDEX_HTML``: the Swagger UI page the service serves at ``/``,
  without its tracker and with a link to the introspection page (:func:`service.rest.pages.index_html`).
"""

from __future__ import annotations

import importlib
import inspect

INSTRUMENTS = "bentoml._internal.server.http.instruments"
TRAFFIC_METRICS = "RunnerTrafficMetricsMiddleware"
APP_FACTORY = "_bentoml_impl.server.app"
HTTP_APP = "bentoml._internal.server.http_app"
HTTP_APP_LOGGER = HTTP_APP
"""The logger BentoML logs failed and refused requests to (the module's ``logging.getLogger(__name__)``)."""
EXCEPTION_MESSAGE = "Exception on %s [%s]"
"""BentoML's message for a failed or refused request (path, method)."""
INDEX_HTML = "DEFAULT_INDEX_HTML"
TRAFFIC_ATTRIBUTES = (
    "metrics_request_total",
    "metrics_request_duration",
    "metrics_request_in_progress",
    "metrics_last_request_timestamp",
    "skip_paths",
    "_setup",
    "_is_setup",
)
"""What the subclass reads of BentoML's middleware (set by its ``__init__`` and ``_setup``)."""
TRAFFIC = "bentoml._internal.server.http.traffic"
TIMEOUT_MIDDLEWARE = "TimeoutMiddleware"
BASE_APP = "bentoml._internal.server.base_app"
CONTEXT = "bentoml._internal.context"
CONTEXT_FIELDS = ("bento_name", "bento_version", "service_name")


def server_context():
    """BentoML's context of this server process (the names its request series are labelled with)."""
    return importlib.import_module(CONTEXT).server_context


def traffic_metrics_middleware() -> type:
    """BentoML's request-metrics middleware class (as it is now in its module: the replacement once installed)."""
    return getattr(importlib.import_module(INSTRUMENTS), TRAFFIC_METRICS)


def replace_traffic_metrics(cls: type) -> None:
    """Make BentoML build its request metrics with ``cls`` (a subclass of its own) in this process."""
    setattr(importlib.import_module(INSTRUMENTS), TRAFFIC_METRICS, cls)


def replace_timeout_middleware(cls: type) -> None:
    """Make BentoML build its request timeout with ``cls`` (called as ``cls(app, timeout=...)``) in this process."""
    setattr(importlib.import_module(TRAFFIC), TIMEOUT_MIDDLEWARE, cls)


def default_index_html() -> str:
    """BentoML's Swagger UI page."""
    return getattr(importlib.import_module(HTTP_APP), INDEX_HTML)


def broken_assumptions() -> list[str]:
    """Each assumption above that does not hold in the installed BentoML, one line each (empty: all hold)."""
    found = []
    try:
        instruments = importlib.import_module(INSTRUMENTS)
    except ImportError as exc:
        return [f"{INSTRUMENTS} cannot be imported ({exc}): request series would be labelled by raw path"]
    middleware = getattr(instruments, TRAFFIC_METRICS, None)
    if not inspect.isclass(middleware):
        found.append(f"{INSTRUMENTS}.{TRAFFIC_METRICS} is not a class: request series would be labelled by raw path")
    else:
        original = next((c for c in middleware.__mro__ if c.__module__ == INSTRUMENTS), middleware)
        source = inspect.getsource(original)
        missing = [name for name in TRAFFIC_ATTRIBUTES if f"self.{name}" not in source and f"def {name}" not in source]
        if missing:
            found.append(f"{TRAFFIC_METRICS} no longer has {', '.join(missing)}: request series would not be written")
    try:
        base_app = inspect.getsource(importlib.import_module(BASE_APP))
        timeout = getattr(importlib.import_module(TRAFFIC), TIMEOUT_MIDDLEWARE)
    except (ImportError, OSError, AttributeError) as exc:
        found.append(f"{TRAFFIC}.{TIMEOUT_MIDDLEWARE} is gone ({exc}): every request would run in a task of its own")
    else:
        if "from .http.traffic import TimeoutMiddleware" not in base_app or "timeout=self.timeout" not in base_app:
            found.append(f"{BASE_APP} no longer imports {TIMEOUT_MIDDLEWARE} when it builds the app: its "
                         "replacement would not be used")  # fmt: skip
        if not inspect.isclass(timeout):
            found.append(f"{TRAFFIC}.{TIMEOUT_MIDDLEWARE} is not a class")
    try:
        context = importlib.import_module(CONTEXT).server_context
    except (ImportError, AttributeError) as exc:
        found.append(f"{CONTEXT}.server_context is gone ({exc}): request series cannot be labelled")
    else:
        missing = [name for name in CONTEXT_FIELDS if not hasattr(context, name)]
        if missing:
            found.append(f"{CONTEXT}.server_context has no {', '.join(missing)}: request series cannot be labelled")
    try:
        factory = inspect.getsource(importlib.import_module(APP_FACTORY))
    except (ImportError, OSError, TypeError) as exc:
        found.append(f"{APP_FACTORY} cannot be read ({exc}): where BentoML builds its metrics middleware is unknown")
    else:
        if f"from {INSTRUMENTS} import" not in factory or TRAFFIC_METRICS not in factory:
            found.append(
                f"{APP_FACTORY} no longer imports {TRAFFIC_METRICS} from {INSTRUMENTS} when it builds its app: "
                "replacing the class there would not label request series by route"
            )
    try:
        http_app = importlib.import_module(HTTP_APP)
    except ImportError as exc:
        return [*found, f"{HTTP_APP} cannot be imported ({exc}): refusals and the index page would change"]
    logger = getattr(http_app, "logger", None)
    if getattr(logger, "name", None) != HTTP_APP_LOGGER:
        found.append(f"{HTTP_APP} logs to {getattr(logger, 'name', None)!r}, not {HTTP_APP_LOGGER!r}: "
                     "refusals would be logged with tracebacks")  # fmt: skip
    if f'"{EXCEPTION_MESSAGE}"' not in inspect.getsource(http_app):
        found.append(f"{HTTP_APP} no longer logs {EXCEPTION_MESSAGE!r}: refusals would be logged with tracebacks")
    if not isinstance(getattr(http_app, INDEX_HTML, None), str):
        found.append(f"{HTTP_APP}.{INDEX_HTML} is gone: the index page cannot be served")
    return found
