"""The house rules, read from the source: who may import whom, no import circles, and the HTTP layer reaching
models only through the data plane."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ("sparsity", "modelstore", "predlog", "service", "training", "lab", "benchmarks", "examples", "tests")
SERVICE_LEVELS = (
    (
        "service.errors",
        "service.asgi",
        "service.routes",
        "service.schemas",
        "service.protocol",
        "service.logtypes",
        "service.config",
        "service.rules",
        "service.bentoml_private",
    ),
    ("service.codecs", "service.observability"),
    ("service.logbook",),
    ("service.shadow",),
    ("service.batching",),
    ("service.dataplane",),
    ("service.repository",),
    ("service.openapi",),
    ("service.rest",),
    ("service.app", "service.service"),
)
"""The service's rooms, lowest first: a module imports only service modules of its own level or a lower one
(the README's Layout section draws the same)."""


def _imports(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports, at the top or inside a function (``from a.b import c``
    gives ``a.b`` and ``a.b.c``: ``c`` may be a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _imported_packages(package: str) -> set[str]:
    return {name.split(".")[0] for path in (ROOT / package).rglob("*.py") for name in _imports(path)}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports."""
    paths = [p for package in PROJECT for p in (ROOT / package).rglob("*.py") if "node_modules" not in p.parts]
    modules = {_module_name(p): p for p in paths}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        (
            "sparsity",
            {"modelstore", "service", "training", "lab", "bentoml", "benchmarks", "tests", "examples", "predlog"},
        ),
        ("predlog", {"sparsity", "modelstore", "service", "training", "lab", "bentoml", "benchmarks", "tests"}),
        ("modelstore", {"service", "training", "lab", "benchmarks", "tests", "examples", "mlxtend"}),
        ("service", {"training", "lab", "mlxtend", "benchmarks", "tests", "examples"}),
        ("training", {"service", "lab", "benchmarks", "tests", "examples"}),
        ("lab", {"service", "benchmarks", "tests", "examples"}),
        ("benchmarks", {"tests", "lab"}),
    ],
)
def test_package_does_not_import(package, forbidden):
    assert not _imported_packages(package) & forbidden


def test_the_check_sees_real_imports():
    assert {"sparsity", "modelstore", "bentoml"} <= _imported_packages("service")
    assert {"sparsity", "modelstore"} <= _imported_packages("training")
    assert {"training", "modelstore"} <= _imported_packages("lab")
    assert "service.dataplane" in _graph()["service.rest.modelroutes"]


def test_no_import_circles():
    """No module reaches itself through the imports of the project's modules (a package's ``__init__`` and
    its own modules aside: Python imports the parent first anyway)."""
    graph = _graph()
    circles = []
    for start in graph:
        seen, stack = set(), [(start, (start,))]
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start and not all(p == start or p.startswith(start + ".") for p in path[1:]):
                    circles.append(" -> ".join((*path, start)))
                elif nxt not in seen and nxt != start:
                    seen.add(nxt)
                    stack.append((nxt, (*path, nxt)))
    assert circles == []


def _level(module: str) -> int | None:
    for index, rooms in enumerate(SERVICE_LEVELS):
        if any(module == room or module.startswith(room + ".") for room in rooms):
            return index
    return None


def test_every_service_module_is_in_a_room_and_imports_no_room_above_its_own():
    graph = _graph()
    service = [name for name in graph if name.startswith("service.")]
    assert [name for name in service if _level(name) is None] == []
    upward = [
        f"{name} -> {imported}"
        for name in service
        for imported in graph[name]
        if imported.startswith("service.") and _level(imported) > _level(name)
    ]
    assert upward == []


def test_no_service_module_is_over_350_lines():
    long = {
        str(path.relative_to(ROOT)): n
        for path in (ROOT / "service").rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 350
    }
    assert long == {}


def test_the_http_layer_reaches_models_only_through_the_data_plane():
    for path in (ROOT / "service" / "rest").rglob("*.py"):
        relative = path.relative_to(ROOT)
        imported = _imports(path)
        assert not any(
            name.startswith(("modelstore.kinds", "modelstore.runtime", "modelstore.audit")) for name in imported
        ), relative
        assert "get_current_service" not in path.read_text(), relative


def test_the_product_does_not_import_the_studies():
    graph = _graph()
    for name, imported in graph.items():
        if name.split(".")[0] in ("sparsity", "modelstore", "service", "training"):
            assert not {m for m in imported if m.startswith("lab")}, name


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


def test_the_onnx_images_pins_are_the_services_without_tensorflow():
    """requirements/service-onnx.txt is what scripts/lean_requirements.py writes from service.txt today."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "lean_requirements.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = (ROOT / "requirements" / "service-onnx.txt").read_text().splitlines()
    names = {line.split("==")[0].lower() for line in lines if "==" in line}
    assert {"onnxruntime", "bentoml", "uvloop", "orjson", "scikit-learn"} <= names
    assert not {name for name in names if name.startswith(("tensorflow", "keras", "tensorboard"))}


@pytest.mark.parametrize("bentofile", ["bentofile.yaml", "bentofile-onnx.yaml"])
def test_the_bento_includes_every_package_of_the_service_and_the_core(bentofile):
    """``bentoml build`` bundles only what ``include`` names: a new room left out would be missing in the image."""
    import fnmatch

    import yaml

    include = yaml.safe_load((ROOT / bentofile).read_text())["include"]
    sources = [
        p.relative_to(ROOT).as_posix()
        for pkg in ("service", "sparsity", "modelstore", "predlog")
        for p in (ROOT / pkg).rglob("*.py")
    ]
    sources = [s for s in sources if "/_build/" not in s and not s.startswith("sparsity/lab")]
    left_out = [
        s
        for s in sources
        if not any(
            fnmatch.fnmatch(s, pattern) and "/" not in s[len(pattern.rsplit("/", 1)[0]) + 1 :] for pattern in include
        )
    ]
    assert left_out == []


def test_no_room_of_the_service_is_named_like_a_standard_module_a_child_process_may_import():
    """The shadow process runs with ``service/`` on its path: a room named ``http`` hid the standard library's
    (``ImportError: cannot import name 'HTTPStatus' from 'http'``) and the shadows stopped comparing. ``codecs`` is
    loaded by the interpreter before any path is read, so it cannot be hidden."""
    names = {p.stem if p.is_file() else p.name for p in (ROOT / "service").iterdir() if p.suffix in ("", ".py")}
    assert sorted(names & set(sys.stdlib_module_names) - {"codecs"}) == []
