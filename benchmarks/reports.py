"""A benchmark's report: stamped with the date and the machine, written as JSON, and said where."""

from __future__ import annotations

import json
import time
from pathlib import Path

from benchmarks.peers_bench import machine


def write_report(path: Path, **figures) -> dict:
    """``figures`` with today's date and this machine, written to ``path`` (its folder made); returns the report."""
    report = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), **figures}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"written to {path}")
    return report
