"""The model kinds, found through one table: a kind is one module plus one entry in :data:`KINDS`.

Each kind's module holds everything that knows the kind (MLServer's one runtime class per framework):
its card class, the check of its stored file (run before anything is loaded), how a file of it is
registered, the runtime that serves it, and its lines in the registration summary and the start-up log.

- ``keras-relu`` (:mod:`modelstore.kinds.keras_relu`): a Keras classifier whose hidden layers are
  ReLU-family, served through the core's compiled one-pass probe.
- ``onnx-relu`` (:mod:`modelstore.kinds.onnx_relu`): an ONNX classifier (from PyTorch, scikit-learn, ...)
  with ReLU-family nodes, counted inside ONNX Runtime.
- ``linear`` (:mod:`modelstore.kinds.linear`): a standardising step plus a linear classifier, served from
  its coefficients.

A kind from outside the project (a plug-in) is added with :func:`add_kind`, or named in the service's
``MODEL_KINDS`` setting (``module.path``, whose ``KIND`` is added at start).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field, TypeAdapter, ValidationError

from modelstore.card import ModelCard, ModelCardError

if TYPE_CHECKING:
    from modelstore.runtime import Runtime


@dataclass(frozen=True)
class LoadOptions:
    """How runtimes are loaded in this process (from the service's settings)."""

    tf_intra_threads: int = 1
    tf_inter_threads: int = 1
    onnx_intra_threads: int = 1


@dataclass(frozen=True)
class Kind:
    """One model kind: what the store, registration and the service need to know of it."""

    name: str  # the card's ``kind``
    card: type[ModelCard]
    runtime: Callable[..., Runtime]  # (tag, card, path of card.MODEL_FILE, LoadOptions) -> Runtime
    suffixes: tuple[str, ...]  # the files ``register`` takes for this kind
    register_file: Callable[..., tuple[str, ModelCard]]  # (path, name, calibration, **options) -> (tag, card)
    describes: str  # what its entry of GET /models is, in the OpenAPI document
    summary_lines: Callable[[Any], list[str]]  # the registration summary's lines about this kind's figures
    log_text: Callable[[Any], str]  # the start-up log's figures of one served model
    file_problems: Callable[[str], list[str]] | None = None  # the stored file's check (None: its file is not read)
    prepare: Callable[[LoadOptions], None] | None = None  # once per process, before the first runtime of the kind
    upgrade_reason: Callable[[Any], str | None] = lambda card: None
    """Why a stored card, though servable, should be trained again (``make serve`` trains when it says so)."""


KINDS: dict[str, Kind] = {}
"""Every kind, by the ``kind`` its cards carry."""
_adapter: TypeAdapter | None = None


def add_kind(kind: Kind) -> Kind:
    """Put ``kind`` in the table (a plug-in kind, or one of the project's); the card union is rebuilt."""
    global _adapter
    KINDS[kind.name] = kind
    _adapter = None
    return kind


def kind_of(name: str) -> Kind:
    return KINDS[name]


def add_kinds_from(modules: tuple[str, ...] | list[str]) -> None:
    """Import each ``module.path`` and add its ``KIND``; ValueError names the one that cannot be used."""
    for path in modules:
        try:
            kind = import_module(path).KIND
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"model kind module {path!r} cannot be used: {exc}") from None
        if not isinstance(kind, Kind):
            raise ValueError(f"model kind module {path!r}: KIND is not a modelstore.kinds.Kind")
        add_kind(kind)


def by_suffix(suffix: str) -> Kind | None:
    """The kind that registers files ending in ``suffix`` (``.keras``, ``.onnx``, ``.skops``, ...)."""
    return next((kind for kind in KINDS.values() if suffix in kind.suffixes), None)


def suffixes() -> tuple[str, ...]:
    return tuple(suffix for kind in KINDS.values() for suffix in kind.suffixes)


def _card_adapter() -> TypeAdapter:
    global _adapter
    if _adapter is None:
        cards = tuple(kind.card for kind in KINDS.values())
        _adapter = TypeAdapter(Annotated[Union[cards], Field(discriminator="kind")])  # noqa: UP007
    return _adapter


def load_card(tag: str, metadata: dict) -> ModelCard:
    """The card of a stored model, of the class its ``kind`` names; ModelCardError otherwise (one line with
    the tag and the field)."""
    if not isinstance(metadata, dict) or "kind" not in metadata:
        raise ModelCardError(
            f"model {tag}: metadata field 'kind' is missing "
            "(not registered: python -m modelstore register, or make train)"
        )
    if metadata["kind"] not in KINDS:
        raise ModelCardError(f"model {tag}: kind {metadata['kind']!r} is not one of {', '.join(KINDS)}")
    try:
        return _card_adapter().validate_python(metadata)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(part) for part in first["loc"]][1:]  # the first part is the kind's tag
        field = ".".join(loc) or "(metadata)"
        problem = "is missing" if first["type"] == "missing" else f"is invalid: {first['msg']}"
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise ModelCardError(f"model {tag}: metadata field '{field}' {problem}{more}; register it again") from None


def _project_kinds() -> None:
    from modelstore.kinds import keras_relu, linear, onnx_relu

    for module in (keras_relu, onnx_relu, linear):
        add_kind(module.KIND)


_project_kinds()
