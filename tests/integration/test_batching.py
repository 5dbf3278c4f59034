"""Batching over real HTTP (one ``bentoml serve`` worker, batching on by default): requests sent at once to every
prediction route, for several models and sizes, get byte for byte the answers they get alone; their passes were
shared (the batch-size series says so); a bad request among them is refused alone."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _requests(test_images) -> list[tuple[str, bytes, str]]:
    images = test_images[0][:24]
    requests = []
    for i in range(12):
        requests.append(("/mnist/predict", json.dumps({"images": images[i : i + 1].tolist()}).encode(), "json"))
        several = json.dumps({"inputs": images[i : i + 1 + i % 3].tolist()}).encode()  # 1 to 3 items
        requests.append(("/models/mnist_cnn/predict?detail=units", several, "json"))
    tensor = {"name": "input", "datatype": "FP32", "shape": [2, 28, 28], "data": images[:2].ravel().tolist()}
    requests.append(("/v2/models/mnist_cnn/infer", json.dumps({"inputs": [tensor]}).encode(), "json"))
    buffer = io.BytesIO()
    np.save(buffer, (images[5:8] * 255).round().astype(np.uint8))
    requests.append(("/mnist/predict_batch", buffer.getvalue(), "x-npy"))
    for row in ([5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]):
        requests.append(("/iris/predict", json.dumps({"features": [row]}).encode(), "json"))
    requests.append(("/models/mnist_cnn/predict", b'{"inputs": [[[2.0]]]}', "json"))  # refused, alone
    return requests


def _post(server, request) -> httpx.Response:
    path, body, kind = request
    return httpx.post(f"{server.url}{path}", content=body, headers={"content-type": f"application/{kind}"}, timeout=60)


def _batch_passes(server) -> dict[str, float]:
    """model -> passes of more than one item so far (from /metrics: the batch-size histogram)."""
    from prometheus_client.parser import text_string_to_metric_families

    passes, single = {"mnist_cnn": 0.0, "iris_l1": 0.0}, {}
    for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics", timeout=30).text):
        for sample in family.samples:
            model = sample.labels.get("model")
            if model not in passes:
                continue
            if sample.name == "model_batch_items_count":
                passes[model] += sample.value
            elif sample.name == "model_batch_items_bucket" and float(sample.labels["le"]) == 1.0:
                single[model] = single.get(model, 0.0) + sample.value
    return {model: n - single.get(model, 0.0) for model, n in passes.items()}


def test_requests_sent_at_once_get_the_answers_they_get_alone(server, test_images):
    requests = _requests(test_images)
    alone = [_post(server, request) for request in requests]
    before = _batch_passes(server)
    with ThreadPoolExecutor(max_workers=16) as pool:
        together = list(pool.map(lambda r: _post(server, r), requests * 3))
    for i, answer in enumerate(together):
        expected = alone[i % len(requests)]
        assert (answer.status_code, answer.content) == (expected.status_code, expected.content), requests[
            i % len(requests)
        ][0]
    assert alone[-1].status_code == 400 and all(a.status_code == 200 for a in alone[:-1])
    shared = {model: n - before[model] for model, n in _batch_passes(server).items()}
    assert shared["mnist_cnn"] > 0, shared  # some passes were shared (16 clients at once on one worker)
