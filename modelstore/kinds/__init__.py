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

import re
from importlib import import_module
from pathlib import Path
from typing import Annotated, Union

from pydantic import Field, TypeAdapter, ValidationError

from modelstore.card import ModelCard, ModelCardError
from modelstore.kind import Kind, LoadOptions
from modelstore.runtime import Runtime

__all__ = [
    "KINDS",
    "Kind",
    "LoadOptions",
    "add_kind",
    "from_store",
    "kind_for_file",
    "kind_of",
    "load",
    "load_card",
    "prepare",
    "register_file",
]


KINDS: dict[str, Kind] = {}
"""Every kind, by the ``kind`` its cards carry."""
_adapters: dict[tuple[type, ...], TypeAdapter] = {}


def add_kind(kind: Kind) -> Kind:
    """Put ``kind`` in the table (a plug-in kind, or one of the project's)."""
    KINDS[kind.name] = kind
    return kind


def kind_of(name: str) -> Kind:
    return KINDS[name]


PLUGIN_SETTING = "MODEL_KINDS"
"""The environment variable that names plug-in kinds' modules, for the service and the register command."""
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")


def plugin_modules(raw: str) -> tuple[str, ...]:
    """The value of :data:`PLUGIN_SETTING`, ``package.module,...``, as module paths; ValueError names the rule."""
    paths = tuple(part.strip() for part in raw.split(","))
    if any(not _MODULE.match(path) for path in paths):
        raise ValueError("must be comma-separated Python module paths (e.g. mykinds.numpy_mlp)")
    return paths


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
    """The discriminated union of the table's card classes (built once per set of kinds)."""
    cards = tuple(kind.card for kind in KINDS.values())
    if cards not in _adapters:
        _adapters[cards] = TypeAdapter(Annotated[Union[cards], Field(discriminator="kind")])  # noqa: UP007
    return _adapters[cards]


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


def kind_for_file(path: Path) -> Kind:
    """The kind that registers ``path`` (by its suffix); RegistrationError when none does or there is no file."""
    from modelstore.register import RegistrationError

    kind = by_suffix(path.suffix)
    if kind is None:
        raise RegistrationError(f"{path}: register one of these files: {', '.join(suffixes())}")
    if not path.is_file():
        raise RegistrationError(f"{path}: no such file")
    return kind


def register_file(path: Path, name: str, calibration, **options) -> tuple[str, ModelCard]:
    """Register the file ``path`` as ``name`` (:mod:`modelstore.register`) as its kind (:func:`kind_for_file`)."""
    return kind_for_file(path).register_file(path, name, calibration, **options)


def prepare(kind_names, options: LoadOptions) -> None:
    """Each named kind's once-per-process step (``Kind.prepare``, e.g. TensorFlow's threads), before its first
    runtime is loaded."""
    for name in dict.fromkeys(kind_names):
        hook = kind_of(name).prepare
        if hook is not None and name not in _PREPARED:
            hook(options)
            _PREPARED.add(name)


_PREPARED: set[str] = set()
"""The kinds whose once-per-process step has run (a load while serving does not repeat it)."""


def load(stored, card: ModelCard, options: LoadOptions | None = None) -> Runtime:
    """The runtime of ``card.kind`` over a stored model (BentoML's ``Model``), audited already."""
    return kind_of(card.kind).runtime(str(stored.tag), card, stored.path_of(card.MODEL_FILE), options or LoadOptions())


def from_store(tag: str, options: LoadOptions | None = None) -> Runtime:
    """The runtime of a stored model by tag (benchmarks and tests; the service audits first, see
    :mod:`modelstore.audit`)."""
    import bentoml

    stored = bentoml.models.get(tag)
    card = load_card(str(stored.tag), stored.info.metadata)
    options = options or LoadOptions()
    prepare([card.kind], options)
    return load(stored, card, options)


def _project_kinds() -> None:
    from modelstore.kinds import keras_relu, linear, onnx_relu

    for module in (keras_relu, onnx_relu, linear):
        add_kind(module.KIND)


_project_kinds()
