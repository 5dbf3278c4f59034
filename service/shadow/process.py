"""A worker's shadow process: ``python -m service.shadow.process``, started by the worker's
:class:`~service.shadow.runner.ShadowRunner` with its end of the worker's shadow socket as standard input.

It runs only on CPU time nothing else wants (Linux's ``SCHED_IDLE``; else ``nice`` 19). It loads each shadow's
candidate from the store (the worker has audited and replayed it already), runs every mirrored request on it,
compares the two answers and writes the figures to the Prometheus multiprocess directory the workers write to.
It exits when the socket closes (the worker stopped or died). It imports no TensorFlow unless a candidate needs it.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys

from service.shadow.spec import QUEUE_BYTES, SHADOW_NICE

log = logging.getLogger("service.shadow")


def shadow_logbook():
    """The prediction log's writer of this process (the candidates' answers, role ``shadow``), as the worker's
    settings say (inherited through the environment); None with the log off."""
    from service.config import Settings
    from service.logbook.writer import LogWriter

    settings = Settings.from_env()
    opener = settings.log_opener()
    if opener is None:
        return None
    # the workers purge old rows: retention 0 here
    writer = LogWriter(opener, settings.log_sample, settings.log_inputs, retention_days=0)
    writer.start()
    return writer


def main() -> int:
    from sparsity.logs import quiet_tensorflow

    quiet_tensorflow()
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(SHADOW_NICE)
    from modelstore.kinds import PLUGIN_SETTING, LoadOptions, add_kinds_from, from_store, plugin_modules
    from service.shadow.consumer import ShadowConsumer
    from sparsity import logs

    logs.configure(logging.INFO)
    raw = os.environ.get(PLUGIN_SETTING, "")
    add_kinds_from(plugin_modules(raw) if raw.strip() else ())
    encoded = os.environ.get("SHADOW_LOAD_OPTIONS", "")
    options = pickle.loads(bytes.fromhex(encoded)) if encoded else LoadOptions()
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=int(os.environ.get("NUMPY_THREADS") or 1), user_api="blas")

    def load(tag: str):
        from modelstore.audit import audit

        candidate = audit(tag)
        if not candidate.accepted:
            raise RuntimeError(candidate.problem)
        runtime = from_store(candidate.tag, options)
        runtime.warm_up()
        return runtime

    import socket

    sock = socket.socket(fileno=os.dup(sys.stdin.fileno()))  # the worker's socket pair (SOCK_SEQPACKET)
    ShadowConsumer(load, logbook=shadow_logbook()).run(sock, int(os.environ.get("SHADOW_MESSAGE_BYTES") or QUEUE_BYTES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
