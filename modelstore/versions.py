"""Library versions recorded with every model."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("bentoml", "tensorflow-cpu", "keras", "onnx", "onnxruntime", "scikit-learn", "numpy", "skops", "mlxtend")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
