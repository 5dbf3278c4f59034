"""One log format for every part of the project: ``<time> [<LEVEL>] [<component>] <message>``.

It is BentoML's own server format (``2026-11-28T19:16:15+0000 [INFO] [entry_service:sparsity_service:1]
...``), so the lines of training, the benchmarks and the service read alike; outside the server the
component is the logger's name (``training.mnist``).
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

FORMAT = "%(asctime)s [%(levelname)s] [%(name)s] %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
LINE_PATTERN = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\] \[[^\]]+\] "
"""What the start of every line in that format looks like (for tests and log readers)."""


def configure(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Send every logger's records at ``level`` and above to ``stream`` (stderr) in :data:`FORMAT`."""
    logging.basicConfig(level=level, format=FORMAT, datefmt=DATE_FORMAT, stream=stream or sys.stderr, force=True)


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up lines (absl's "All log messages before absl::InitializeLog()", the
    CPU feature notice), which are not in this format, out of the log unless the user asks for them with
    ``TF_CPP_MIN_LOG_LEVEL``. Must run before TensorFlow is imported: every entry point calls it first.

    Also oneDNN's custom kernels are off unless ``TF_ENABLE_ONEDNN_OPTS`` says otherwise. On CPUs with AVX-512
    VNNI or AMX TensorFlow turns them on by itself, and then (seen on such a machine here) announces it on stderr
    whatever ``TF_CPP_MIN_LOG_LEVEL`` says, and a ReLU output near zero can come out exactly zero in one
    process's batch and not in another's (one of 3,136 activations of a residual block differed between the
    served answer and the same model in the test process). Exact zeros are what this project counts."""
    import os

    if not os.environ.get("TF_CPP_MIN_LOG_LEVEL"):  # unset or empty
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if not os.environ.get("TF_ENABLE_ONEDNN_OPTS"):
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"


def set_tensorflow_threads(intra: int, inter: int) -> bool:
    """TensorFlow's thread pools; False (and a warning) when TensorFlow has already run something in this
    process, after which it refuses the change (several services or benchmarks in one test process)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError as exc:
        logging.getLogger(__name__).warning("TensorFlow thread settings not applied: %s", exc)
        return False
    return True
