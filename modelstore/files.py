"""Saving into the BentoML model store (location follows BENTOML_HOME); reading and auditing is
:mod:`modelstore.audit`."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import bentoml

log = logging.getLogger(__name__)


def save_model(
    name: str,
    write: Callable[[Path], None],
    *,
    labels: dict,
    metadata: dict,
    report_dir: Path | None = None,
) -> str:
    """Create ``name`` in the store, let ``write`` put its files in, and write a JSON report
    (the metadata plus the tag) to ``report_dir``. Returns the tag."""
    with bentoml.models.create(name, labels=labels, metadata=metadata) as ref:
        write(Path(ref.path))
    tag = str(ref.tag)
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        report = report_dir / f"{name}.json"
        report.write_text(json.dumps({"tag": tag, **metadata}, indent=2) + "\n")
        log.info("report written to %s", report)
    return tag
