"""`bentoml build` packages the service, the core and both models, without training code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import bentoml
import pytest
import yaml

from benchmarks.server import PROJECT_MODELS
from tests.tools import run_in_project


@pytest.mark.slow
@pytest.mark.integration
def test_bentoml_build_bundles_service_core_and_models(trained):
    bentoml_cli = str(Path(sys.executable).parent / "bentoml")
    out = run_in_project([bentoml_cli, "build", "--output", "tag"], env=PROJECT_MODELS)  # the served models
    assert out.returncode == 0, out.stderr[-3000:]
    bento = bentoml.get("sparsity_service:latest")
    root = Path(bento.path)
    manifest = yaml.safe_load((root / "bento.yaml").read_text())
    models = {m["tag"] for s in manifest["services"] for m in s["models"]}
    assert models == {trained["mnist"]["tag"], trained["iris"]["tag"]}
    assert (root / "src/service/service.py").is_file()
    assert (root / "src/sparsity/probe.py").is_file()
    assert not (root / "src/training").exists() and not (root / "src/lab").exists()
    assert not list(root.rglob("tests/*.py"))
    # the bento's own source tree holds everything the service imports (the store's kinds, the codecs)
    modules = "service.app, service.dataplane, service.rest.modelroutes, modelstore.kinds, modelstore.audit"
    bundled = subprocess.run(
        [sys.executable, "-c", f"import {modules}; import modelstore; print(modelstore.__file__)"],
        cwd=root / "src",
        env={**os.environ, "PYTHONPATH": str(root / "src")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bundled.returncode == 0, bundled.stderr[-3000:]
    assert bundled.stdout.strip().startswith(str(root / "src"))
    requirements = (root / "env/python/requirements.txt").read_text()
    assert re.search(r"^tensorflow[-_]cpu==2\.21\.", requirements, re.M) and "mlxtend" not in requirements
    assert (root / "env/docker/Dockerfile").is_file()
    # the sparse engine's kernels travel as source (the service builds them at its start), never a built library
    assert (root / "src/sparsity/sparse/kernels.c").is_file() and not (root / "src/sparsity/sparse/_build").exists()
    # The Dockerfile is BentoML's template (we ship none of our own); hadolint finds warnings in
    # it that we cannot change (unpinned apt packages, &> in sh), but no errors.
    hadolint = Path(sys.executable).parent / "hadolint"
    lint = subprocess.run(
        [str(hadolint), "--failure-threshold", "error", str(root / "env/docker/Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.slow
@pytest.mark.integration
def test_the_onnx_bentofile_builds_a_bento_without_tensorflow(trained):
    bentoml_cli = str(Path(sys.executable).parent / "bentoml")
    out = run_in_project([bentoml_cli, "build", "-f", "bentofile-onnx.yaml", "--output", "tag"], env=PROJECT_MODELS)
    assert out.returncode == 0, out.stderr[-3000:]
    bento = bentoml.get("sparsity_service:latest")
    assert bento.info.labels["engine"] == "onnxruntime-only"
    requirements = (Path(bento.path) / "env/python/requirements.txt").read_text()
    assert re.search(r"^onnxruntime==", requirements, re.M) and re.search(r"^bentoml==", requirements, re.M)
    assert not re.search(r"^(tensorflow|keras|tensorboard)", requirements, re.M | re.I)
