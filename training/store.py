"""Saving into the BentoML model store (location follows BENTOML_HOME)."""

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


def has_model(name: str) -> bool:
    """Whether the store holds a servable ``name``: its latest version with a valid card. A model stored
    before registration existed (no card, or an old one) counts as missing, so ``make serve`` trains
    a new one instead of starting a service that refuses it. So does a ReLU model whose card predates the
    ``unit-firing`` typicality detector (the service would still serve it, with the older, weaker score)."""
    from sparsity.card import ModelCardError, load_card
    from sparsity.detectors import UNIT_FIRING

    try:
        stored = bentoml.models.get(f"{name}:latest")
    except bentoml.exceptions.NotFound:
        return False
    try:
        card = load_card(str(stored.tag), stored.info.metadata)
    except ModelCardError as exc:
        log.warning("%s; training a new one", exc)
        return False
    if card.kind == "keras-relu" and card.typicality.detector != UNIT_FIRING:
        log.warning(
            "%s has the per-layer typicality score of before the unit-firing detector; training a new one", stored.tag
        )
        return False
    return True
