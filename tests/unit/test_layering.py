"""The house rules: the service imports the core, never training code; the core imports neither."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imported_packages(package: str) -> set[str]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("service", {"training", "mlxtend", "tests", "examples"}),
        ("sparsity", {"service", "training", "bentoml", "tests", "examples"}),
    ],
)
def test_package_does_not_import(package, forbidden):
    assert not _imported_packages(package) & forbidden


def test_the_check_sees_real_imports():
    assert {"sparsity", "bentoml"} <= _imported_packages("service")
    assert "sparsity" in _imported_packages("training")


def test_importing_the_service_module_loads_no_tensorflow(small_store):
    """``bentoml serve``'s supervising process imports the service module only to read its
    configuration: TensorFlow (about 600 MB) must load in the workers alone."""
    import subprocess
    import sys

    code = (
        "import sys, service.service; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'sklearn', 'skops') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=small_store, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"
