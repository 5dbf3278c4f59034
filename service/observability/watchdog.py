"""A worker exits when the process that supervises it is gone.

``bentoml serve`` runs a supervisor (circus) that starts the workers and restarts any that die. If
the supervisor itself dies (SIGKILL, the OOM killer), its workers would live on as orphans, still
holding the port and hundreds of MB each, with nobody to restart them. Each worker watches its
parent process id: when the parent changes (the orphan is adopted by init or a subreaper), the
worker asks itself to stop (SIGTERM: uvicorn's graceful shutdown) and exits hard after a grace
period if that did not finish.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

log = logging.getLogger(__name__)

CHECK_INTERVAL_SECONDS = 1.0
GRACE_SECONDS = 5.0
"""Worst case from the supervisor's death to the worker's exit: interval + grace, 6 s."""


def exit_with_parent(interval: float = CHECK_INTERVAL_SECONDS, grace: float = GRACE_SECONDS) -> threading.Thread:
    """Start a daemon thread that stops this process once its parent is no longer the one it has now."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        log.error("supervisor (pid %d) is gone: worker pid %d shuts down", parent, os.getpid())
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        log.error("worker pid %d did not stop within %.0f s of SIGTERM: exiting now", os.getpid(), grace)
        os._exit(1)

    thread = threading.Thread(target=watch, name="parent-watchdog", daemon=True)
    thread.start()
    return thread
