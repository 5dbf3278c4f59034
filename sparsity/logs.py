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
