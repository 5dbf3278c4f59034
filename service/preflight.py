"""Checks of the stored models made at start, before any worker loads them.

``bentoml serve`` imports the service in its supervising process first; a refusal there stops the
whole service with one line on stderr and exit status 2. A refusal inside a worker would only make
the supervisor restart that worker forever, never ready and never stopped.

- The model card (metadata) of each model must be valid (milliseconds: metadata only).
- The Keras file may hold only Keras' own objects and the core's registered layers: no ``Lambda``
  layer and no serialized Python function (``__lambda__``), whatever module it names. This reads
  the file's ``config.json`` only; no TensorFlow in the supervisor. The workers then load with
  Keras' safe mode on, explicitly, as a second line.
- The skops file may ask for no type outside skops' defaults and ``IRIS_TRUSTED_TYPES``. skops
  needs scikit-learn (2 s and about 90 MB to import), so the supervisor asks a short-lived child
  process; the workers ask again before loading.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

from sparsity.card import IrisCard, MnistCard, ModelCardError, load_card
from sparsity.contract import IRIS_MODEL_FILE, MNIST_MODEL_FILE

IRIS_TRUSTED_TYPES: list[str] = []
"""Types beyond skops' own defaults that the iris file may contain. The pipeline (StandardScaler +
LogisticRegression) needs none; a file that asks for anything else is refused."""

KERAS_MODULES = ("keras",)
"""Objects in a Keras file come from Keras' own packages, or are layers that the core package
registers (``sparsity>ThresholdedReLU``, ``sparsity>KWinners``)."""
CORE_PACKAGE = "sparsity"
FORBIDDEN_CLASSES = frozenset({"Lambda", "__lambda__"})


class ModelRefused(RuntimeError):
    """A stored model file asks for something the service does not run."""


def keras_file_problems(path: str) -> list[str]:
    """What in a ``.keras`` file's config is not allowed, as readable strings (empty when fine)."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        return [f"unreadable Keras file ({exc})"]
    problems: list[str] = []

    def walk(node, where: str) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, where)
            return
        if not isinstance(node, dict):
            return
        if "class_name" in node:
            name, module = str(node["class_name"]), node.get("module")
            registered = str(node.get("registered_name") or "")
            label = node.get("config", {}).get("name") if isinstance(node.get("config"), dict) else None
            here = f"{where}/{label or name}"
            if name in FORBIDDEN_CLASSES:
                problems.append(f"{here}: a {name} layer or function (arbitrary Python code)")
            elif module is None:
                if not name.startswith("__"):
                    problems.append(f"{here}: {name} names no module")
            elif not (
                str(module).split(".")[0] in KERAS_MODULES
                or (str(module).split(".")[0] == CORE_PACKAGE and registered.startswith(f"{CORE_PACKAGE}>"))
            ):
                problems.append(f"{here}: {module}.{name} is not a Keras or core object")
            where = here
        for value in node.values():
            walk(value, where)

    walk(config, "")
    return problems


def untrusted_skops_types(path: str) -> list[str]:
    """Types the skops file asks for beyond the trusted ones, found by skops in a child process."""
    code = "import json, sys, skops.io; print(json.dumps(skops.io.get_untrusted_types(file=sys.argv[1])))"
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=120, check=False)
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return [f"(the file could not be audited: {tail})"]
    return [t for t in json.loads(out.stdout) if t not in IRIS_TRUSTED_TYPES]


def check_stored_models(mnist_tag: str, iris_tag: str, audit_files: bool = True) -> None:
    """Refuse invalid model cards and, with ``audit_files``, model files that ask for code: one line
    on stderr naming the tag and the problem, and exit status 2. A tag that is not in the store is
    left to BentoML, which names it."""
    import bentoml

    for tag, kind in ((mnist_tag, MnistCard), (iris_tag, IrisCard)):
        try:
            stored = bentoml.models.get(tag)
        except bentoml.exceptions.NotFound:
            continue
        try:
            load_card(kind, str(stored.tag), stored.info.metadata)
            if audit_files:
                audit(kind, str(stored.tag), stored)
        except (ModelCardError, ModelRefused) as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None


def audit(kind, tag: str, stored) -> None:
    if kind is MnistCard:
        problems = keras_file_problems(stored.path_of(MNIST_MODEL_FILE))
        if problems:
            raise ModelRefused(f"model {tag}: {MNIST_MODEL_FILE} refused: {'; '.join(problems)}")
    else:
        untrusted = untrusted_skops_types(stored.path_of(IRIS_MODEL_FILE))
        if untrusted:
            raise ModelRefused(f"model {tag}: {IRIS_MODEL_FILE} asks for types that are not trusted: {untrusted}")
