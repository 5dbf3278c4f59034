"""What a model kind is (:class:`Kind`) and how runtimes are loaded (:class:`LoadOptions`); the table of kinds
is :mod:`modelstore.kinds`. Each kind's module builds one :class:`Kind`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelstore.card import ModelCard
    from modelstore.runtime import Runtime


@dataclass(frozen=True)
class LoadOptions:
    """How runtimes are loaded in this process (from the service's settings)."""

    tf_intra_threads: int = 1
    tf_inter_threads: int = 1
    onnx_intra_threads: int = 1
    engine: str = "auto"  # the ENGINE setting (modelstore.engines): auto, sparse, onnxruntime or tensorflow


@dataclass(frozen=True)
class Kind:
    """One model kind: what the store, registration and the service need to know of it."""

    name: str  # the card's ``kind``
    card: type[ModelCard]
    runtime: Callable[..., Runtime]  # (tag, card, path of card.MODEL_FILE, LoadOptions) -> Runtime
    suffixes: tuple[str, ...]  # the files ``register`` takes for this kind
    register_file: Callable[..., tuple[str, ModelCard]]  # (path, name, calibration, **options) -> (tag, card)
    describes: str  # what its entry of GET /models is, in the OpenAPI document
    file_problems: Callable[[str], list[str]] | None = None  # the stored file's check (None: its file is not read)
    prepare: Callable[[LoadOptions], None] | None = None  # once per process, before the first runtime of the kind
    upgrade_reason: Callable[[Any], str | None] = lambda card: None
    """Why a stored card, though servable, should be trained again (``make serve`` trains when it says so)."""
