"""The sparse engine behind every route of a real ``bentoml serve``: forced with ``ENGINE=sparse``, the project's
routes, the Open Inference Protocol and ``/models`` give exactly what the reference engine (ONNX Runtime) gives
in-process, and name the engine."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from benchmarks.server import Server
from modelstore.kinds import LoadOptions, from_store
from tests.helpers import NPY, npy_bytes

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def sparse_server(trained, tmp_path_factory):
    env = {"ENGINE": "sparse", "SERVED_MODELS": "mnist_cnn,iris_l1"}
    with Server(tmp_path_factory.mktemp("sparse") / "serve.log", env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def on_onnx_runtime(trained):
    return from_store("mnist_cnn:latest", LoadOptions(engine="onnxruntime"))


def test_models_and_the_protocols_metadata_name_the_engine_each_version_runs_on(sparse_server):
    models = {m["name"]: m for m in httpx.get(f"{sparse_server.url}/models", timeout=10).json()["models"]}
    assert models["mnist_cnn"]["engine"] == "sparse"
    checks = {check["engine"]: check for check in models["mnist_cnn"]["engines"]}
    assert checks["sparse"]["passed"] and checks["onnxruntime"]["passed"] and checks["tensorflow"]["passed"]
    assert models["iris_l1"]["engine"] == "numpy"
    metadata = httpx.get(f"{sparse_server.url}/v2/models/mnist_cnn", timeout=10).json()
    assert metadata["parameters"]["engine"] == "sparse"


def test_the_projects_routes_answer_as_onnx_runtime_does(sparse_server, on_onnx_runtime, test_images):
    images = test_images[0][:64]
    r = httpx.post(
        f"{sparse_server.url}/models/mnist_cnn/predict_batch?detail=units", content=npy_bytes(images), headers=NPY
    )
    assert r.status_code == 200, r.text
    want = on_onnx_runtime.predict(images.astype(np.float32))
    got = r.json()["predictions"]
    assert [item["label"] for item in got] == want.labels.tolist()
    np.testing.assert_allclose([item["probabilities"] for item in got], want.probabilities, atol=1e-5)
    for i, item in enumerate(got):
        for layer in on_onnx_runtime.layers:
            assert item["sparsity"]["layers"][layer] == pytest.approx(float(want.layer_sparsity[layer][i]), abs=1e-6)
            np.testing.assert_allclose(item["units"][layer], want.shares[layer][i], atol=5e-5)  # rounded to 4 places
        assert item["sparsity"]["overall"] == pytest.approx(float(want.overall[i]), abs=1e-6)
        assert item["typicality"]["atypical"] == bool(want.atypical[i])
        assert item["typicality"]["score"] == pytest.approx(float(want.scores[i]), rel=1e-4, abs=1e-4)


def test_the_open_inference_protocol_answers_as_onnx_runtime_does(sparse_server, on_onnx_runtime, test_images):
    images = test_images[0][64:72].astype(np.float32)
    body = {
        "inputs": [{"name": "input", "shape": list(images.shape), "datatype": "FP32", "data": images.ravel().tolist()}]
    }
    r = httpx.post(f"{sparse_server.url}/v2/models/mnist_cnn/infer", json=body, timeout=30)
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    want = on_onnx_runtime.predict(images)
    probabilities = np.asarray(outputs["probabilities"]["data"]).reshape(len(images), -1)
    np.testing.assert_allclose(probabilities, want.probabilities, atol=1e-5)


def test_the_workers_loaded_the_sparse_program_without_falling_back(sparse_server):
    """The kernels were built once (at registration) and loaded at start; no fall-back line was written. (How soon
    a worker is ready is the benchmark's figure, not a test's.)"""
    log = sparse_server.log_path.read_text()
    assert "sparse engine cannot load" not in log and "ENGINE=sparse is not available" not in log
