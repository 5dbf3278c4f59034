"""The service's log: BentoML's format for every line, a start-up summary, one line per refusal.

- BentoML's server logging passes only WARNING and above from loggers other than its own, so the
  service's INFO lines would be lost; :func:`configure` lets them through BentoML's handler, in its
  format: ``<time> [INFO] [entry_service:sparsity_service:1] ...``.
- Once a worker is ready it says which models and tags it loaded, their training-time sparsity
  baselines, where it listens and how many workers serve (:func:`log_summary`).
- BentoML logs every refused request (invalid input, answered 400) as an ERROR with a 20-line
  traceback, as if the server had failed. :class:`RefusalsAsOneLine` turns each into one INFO line
  naming the route, the status and the broken rule; real server errors keep their traceback.
"""

from __future__ import annotations

import logging

import psutil
from bentoml.exceptions import BentoMLException
from pydantic import ValidationError

from modelstore.summary import model_line
from service.bentoml_private import EXCEPTION_MESSAGE, HTTP_APP_LOGGER
from service.errors import location

log = logging.getLogger(__name__)


BENTOML_HTTP_LOGGER = HTTP_APP_LOGGER
"""Where BentoML logs "Exception on <path> [<method>]" for every failed or refused request."""
PREFIX = EXCEPTION_MESSAGE.split("%s", 1)[0]


def configure() -> None:
    logging.getLogger("service").setLevel(logging.INFO)
    http = logging.getLogger(BENTOML_HTTP_LOGGER)
    if not any(isinstance(f, RefusalsAsOneLine) for f in http.filters):
        http.addFilter(RefusalsAsOneLine())


def refusal_status(exc: BaseException | None) -> int | None:
    """The 4xx status a request was refused with, or None for anything else (a server error)."""
    if isinstance(exc, ValidationError):
        return 400
    if isinstance(exc, BentoMLException) and exc.error_code.value < 500:
        return int(exc.error_code.value)
    return None


class RefusalsAsOneLine(logging.Filter):
    """``Exception on /iris/predict [POST]`` + traceback, for a refused request, becomes
    ``refused /iris/predict [POST] with 400: features[0]: List should have at least 4 items ...``."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        status = refusal_status(exc)
        if status is None:
            return True
        if isinstance(exc, ValidationError):
            reason = "; ".join(f"{location(e['loc'])}: {e['msg']}" for e in exc.errors(include_input=False))
        else:
            reason = str(exc)
        what = record.getMessage().replace(PREFIX, "", 1)
        record.msg, record.args = "refused %s with %d: %s", (what, status, reason)
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info = record.exc_text = None
        return True


def listening_addresses() -> list[str]:
    """The TCP addresses this process listens on (a worker inherits the server's socket)."""
    connections = psutil.Process().net_connections(kind="tcp")
    return sorted({f"{c.laddr.ip}:{c.laddr.port}" for c in connections if c.status == psutil.CONN_LISTEN})


def summary(
    models: list, refused: list[dict], workers: int, worker_index: int | None, addresses: list[str]
) -> list[str]:
    """The start-up summary, one log line per fact: the served models' runtimes (each told by
    :func:`modelstore.summary.model_line`), the refused ones' reasons."""
    where = ", ".join(f"http://{address}" for address in addresses) or "an unknown address"
    worker = f"worker {worker_index} of {workers}" if worker_index is not None else f"in-process ({workers} configured)"
    lines = [f"ready: {worker}, listening on {where}; serving {len(models)} model(s), {len(refused)} refused"]
    lines += [model_line(runtime.tag, runtime.card) for runtime in models]
    lines += [f"refused: {item['reason']}" for item in refused]
    return lines


def log_summary(models: list, refused: list[dict], workers: int, worker_index: int | None) -> None:
    """Worker 1 (or an in-process service) logs the whole summary; other workers only their ready line."""
    lines = summary(models, refused, workers, worker_index, listening_addresses())
    for line in lines if worker_index in (None, 1) else lines[:1]:
        log.info("%s", line)
