"""A model kind is one module plus one table entry: ``tests/toy_kind.py`` (a NumPy ReLU MLP in a ``.npz``),
named in ``MODEL_KINDS``, is registered by the store's command and served by a real ``bentoml serve`` like
the project's own kinds, with no change anywhere else."""

from __future__ import annotations

import sys

import httpx
import numpy as np
import pytest

from benchmarks.server import Server
from tests.helpers import without_versions
from tests.tools import run_in_project

pytestmark = [pytest.mark.slow, pytest.mark.integration]
PLUGIN = {"MODEL_KINDS": "tests.toy_kind"}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A toy MLP registered into a store of its own, and a server of that store."""
    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    weights = {"w1": rng.normal(size=(4, 16)), "b1": rng.normal(size=16) - 0.5}
    weights |= {"w2": rng.normal(size=(16, 3)), "b2": np.zeros(3)}
    np.savez(root / "toy.npz", **weights)
    calibration = rng.random((120, 4)).astype(np.float32)
    np.save(root / "cal.npy", calibration)
    env = {"BENTOML_HOME": str(root / "store"), **PLUGIN}
    args = ["register", str(root / "toy.npz"), "--name", "toy", "--calibration", str(root / "cal.npy")]
    refused = run_in_project([sys.executable, "-m", "modelstore", *args], env={"BENTOML_HOME": env["BENTOML_HOME"]})
    registered = run_in_project([sys.executable, "-m", "modelstore", *args, "--input-range", "0", "1"], env=env)
    server = Server(root / "serve.log", env=env)
    try:
        server.wait_ready()
        yield {"refused": refused, "registered": registered, "server": server, "weights": weights}
    finally:
        server.stop()


def test_the_register_command_takes_the_plugin_kind_only_when_it_is_named(toy):
    assert toy["refused"].returncode == 2
    assert "register one of these files: .keras, .onnx, .skops" in toy["refused"].stderr
    assert toy["registered"].returncode == 0, toy["registered"].stderr[-2000:]
    assert "registered toy:" in toy["registered"].stdout and "(kind numpy-mlp)" in toy["registered"].stdout
    assert "hidden" in toy["registered"].stdout  # the shared ReLU summary lines, from the card class


def test_the_service_serves_the_plugin_kind_with_its_sparsity_and_metrics(toy):
    url, weights = toy["server"].url, toy["weights"]
    x = np.array([[0.1, 0.9, 0.3, 0.5], [0.0, 0.0, 0.0, 0.0]])
    answer = httpx.post(f"{url}/models/toy/predict?detail=units", json={"inputs": x.tolist()}, timeout=30)
    assert answer.status_code == 200, answer.text
    hidden = np.maximum(x @ weights["w1"] + weights["b1"], 0)
    logits = hidden @ weights["w2"] + weights["b2"]
    for row, prediction in enumerate(answer.json()["predictions"]):
        assert prediction["label"] == int(np.argmax(logits[row]))
        assert prediction["sparsity"]["layers"]["hidden"] == pytest.approx(float(np.mean(hidden[row] == 0)))
        assert prediction["units"]["hidden"] == (hidden[row] > 0).astype(float).tolist()
    card = httpx.get(f"{url}/models/toy", timeout=10).json()
    assert card["kind"] == "numpy-mlp" and [layer["name"] for layer in card["relu_layers"]] == ["hidden"]
    bad = httpx.post(f"{url}/models/toy/predict", json={"inputs": [[2.0, 0, 0, 0]]}, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"].startswith("inputs")
    metrics = without_versions(httpx.get(f"{url}/metrics", timeout=10).text)
    assert 'activation_sparsity_ratio_count{layer="hidden",model="toy"}' in metrics
    assert "model toy:" in toy["server"].log_text() and "(numpy-mlp)" in toy["server"].log_text()


def test_a_service_without_the_plugin_refuses_the_model_with_one_line(toy, tmp_path):
    from benchmarks.server import Server as Plain

    store = toy["server"].log_path.parent / "store"
    server = Plain(tmp_path / "plain.log", env={"BENTOML_HOME": str(store), "MODEL_KINDS": ""})
    try:
        server.proc.wait(timeout=120)
        assert server.proc.returncode == 2
        assert "kind 'numpy-mlp' is not one of keras-relu, onnx-relu, linear" in server.log_text()
    finally:
        server.stop()
