"""Audit of a ``.keras`` file before anything in it is deserialised: its ``config.json`` may name only
Keras' own objects and the core's registered layers; no ``Lambda`` layer and no serialized Python
function (``__lambda__``), whatever module it names. Reads the zip's config only: no TensorFlow, so the
service's supervisor can run it. Keras' safe mode is the second line, when the file is loaded.
"""

from __future__ import annotations

import json
import zipfile

KERAS_MODULES = ("keras",)
"""Objects in a Keras file come from Keras' own packages, or are layers that the core package
registers (``sparsity>ThresholdedReLU``, ``sparsity>KWinners``)."""
CORE_PACKAGE = "sparsity"
FORBIDDEN_CLASSES = frozenset({"Lambda", "__lambda__"})


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
                return  # what it holds is that code
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


def load_keras_safely(path: str, audit: bool = True):
    """Audit ``path`` (unless the caller just did), then load it with Keras' safe mode on; ValueError with
    one line otherwise."""
    import keras

    import sparsity.layers  # noqa: F401  registers the core's thresholded ReLU and k-WTA for loading

    problems = keras_file_problems(path) if audit else []
    if problems:
        raise ValueError(f"{path} refused: {'; '.join(problems)}")
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises ValueError/TypeError/KeyError... for files it cannot rebuild safely
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{path} could not be loaded in Keras' safe mode: {first}") from None
