"""The store's read side: which stored models can be served, and which are refused (the one servability
check, for the service and for ``make serve``'s "train if missing").

By default the latest version of every model in the BentoML store; ``SERVED_MODELS=name[:version],...``
narrows that. Each candidate is audited before anything in it is loaded: its card must be valid
(:func:`modelstore.kinds.load_card`), and its file must pass its kind's check (``Kind.file_problems``: a Keras
file may hold only Keras' own objects and the core's layers, no ``Lambda``, no serialized function; an ONNX file
must be valid ONNX with standard operators only). This reads metadata and a zip's ``config.json`` only: no
TensorFlow, so the supervising process runs it before any worker starts, and every worker runs it again and
gets the same answer.

A model that fails is **not served, and the service starts without it**: one log line names it and
the reason, and ``GET /models`` lists it under ``refused``. A store with many models should not go dark
because one of them is bad. Only when no model at all can be served does the service refuse to start
(one line on stderr, exit status 2).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from modelstore.card import ModelCard, ModelCardError
from modelstore.kinds import kind_of, load_card
from sparsity.detectors import DetectorStateError, load_detector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """A stored model the settings ask for: its card when it passed the audit, else the reason."""

    name: str
    tag: str
    card: ModelCard | None = None
    problem: str | None = None
    found: bool = True  # False: no such model in the store

    @property
    def accepted(self) -> bool:
        return self.card is not None


class NothingToServe(RuntimeError):
    """No stored model can be served."""


def wanted_tags(served_models: Iterable[str]) -> list[str]:
    """The tags to serve: those asked for, else the latest version of every model in the store."""
    import bentoml

    asked = list(served_models)
    if asked:
        return asked
    return [str(model.tag) for _, model in sorted(_newest(bentoml.models.list()).items())]


def _newest(models) -> dict[str, object]:
    """Each name's newest stored model, by creation time: what "latest" means everywhere in the project (BentoML's
    own ``name:latest`` follows the last save instead, which an imported older model moves)."""
    newest: dict[str, object] = {}
    for model in models:
        name = model.tag.name
        if name not in newest or model.info.creation_time > newest[name].info.creation_time:
            newest[name] = model
    return newest


def latest_tag(name: str) -> str | None:
    """The tag of ``name``'s latest stored version (:func:`_newest`), or None when the store has none."""
    import bentoml

    try:
        model = _newest(bentoml.models.list(name)).get(name)
    except bentoml.exceptions.NotFound:
        return None
    return None if model is None else str(model.tag)


def audit(tag: str) -> Candidate:
    """Look ``tag`` up and check its card and files without loading anything."""
    import bentoml

    name = tag.split(":")[0]
    if tag.endswith(":latest"):
        tag = latest_tag(name) or tag
    try:
        stored = bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        return Candidate(name, tag, problem=f"model {tag} is not in the store", found=False)
    tag = str(stored.tag)
    try:
        card = load_card(tag, stored.info.metadata)
    except ModelCardError as exc:
        return Candidate(name, tag, problem=str(exc))
    file_problems = kind_of(card.kind).file_problems
    problems = file_problems(stored.path_of(card.MODEL_FILE)) if file_problems else []
    if problems:
        return Candidate(name, tag, problem=f"model {tag}: {card.MODEL_FILE} refused: {'; '.join(problems)}")
    try:
        load_detector(card.typicality, stored.path)  # NumPy only, no pickle: the hash and the arrays' shapes
    except DetectorStateError as exc:
        return Candidate(name, tag, problem=f"model {tag}: {exc}")
    return Candidate(name, tag, card=card)


def candidates(served_models: Iterable[str]) -> list[Candidate]:
    """Every wanted model, audited; raises NothingToServe when none passes."""
    found = [audit(tag) for tag in wanted_tags(served_models)]
    if not any(c.accepted for c in found):
        reasons = "; ".join(c.problem or "" for c in found) or "the model store is empty (make train, or register one)"
        raise NothingToServe(f"no model can be served: {reasons}")
    return found


def has_model(name: str) -> bool:
    """Whether the store holds a servable ``name``: its latest version passes :func:`audit`. A model stored
    before registration existed (no card, or an old one) counts as missing, so ``make serve`` trains a new one
    instead of starting a service that refuses it. So does one whose kind says it should be trained again
    (``Kind.upgrade_reason``: a Keras card from before the ``unit-firing`` detector, which the service would
    still serve, with the older, weaker score)."""
    candidate = audit(f"{name}:latest")
    if not candidate.accepted:
        if candidate.found:
            log.warning("%s; training a new one", candidate.problem)
        return False
    reason = kind_of(candidate.card.kind).upgrade_reason(candidate.card)
    if reason is not None:
        log.warning("%s: %s; training a new one", candidate.tag, reason)
        return False
    return True
