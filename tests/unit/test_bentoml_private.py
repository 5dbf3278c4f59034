"""BentoML's private names are used in one module only, and each assumption about them holds in the pinned
BentoML: an upgrade that moves one fails here, naming it, instead of silently changing the service."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service import bentoml_private

ROOT = Path(__file__).resolve().parents[2]
PRIVATE = re.compile(r"bentoml\._internal|_bentoml_impl|bentoml\._")


def test_every_assumption_about_bentomls_private_names_holds():
    assert bentoml_private.broken_assumptions() == []


def test_a_moved_name_is_reported_with_what_it_breaks(monkeypatch):
    import bentoml._internal.server.http.instruments as instruments

    monkeypatch.delattr(instruments, "RunnerTrafficMetricsMiddleware")
    assert bentoml_private.broken_assumptions() == [
        "bentoml._internal.server.http.instruments.RunnerTrafficMetricsMiddleware is not a class: request series "
        "would be labelled by raw path"
    ]


def test_a_changed_middleware_or_context_is_reported(monkeypatch):
    import bentoml._internal.context as context

    monkeypatch.setattr(bentoml_private, "TRAFFIC_ATTRIBUTES", (*bentoml_private.TRAFFIC_ATTRIBUTES, "metrics_gone"))
    monkeypatch.delattr(type(context.server_context), "bento_version")
    found = bentoml_private.broken_assumptions()
    assert found == [
        "RunnerTrafficMetricsMiddleware no longer has metrics_gone: request series would not be written",
        "bentoml._internal.context.server_context has no bento_version: request series cannot be labelled",
    ]


@pytest.mark.parametrize("package", ["service", "modelstore", "sparsity"])
def test_no_other_module_names_bentomls_private_modules(package):
    users = [
        str(path.relative_to(ROOT))
        for path in (ROOT / package).rglob("*.py")
        if path.name != "bentoml_private.py" and PRIVATE.search(path.read_text())
    ]
    assert users == []


def test_bentoml_is_pinned_the_same_way_everywhere():
    pins = {
        path: re.findall(r"bentoml(==|>=|~=)([0-9.]+)", (ROOT / path).read_text())
        for path in ("pyproject.toml", "requirements/service.txt", "requirements/service-onnx.txt")
    }
    assert all(found == [("==", "1.4.40")] for found in pins.values()), pins
