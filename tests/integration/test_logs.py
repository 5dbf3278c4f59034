"""What a real ``bentoml serve`` writes to its log: one format, and a start-up summary."""

from __future__ import annotations

import re
import time
from urllib.parse import urlparse

import httpx
import pytest

from sparsity import logs
from tests.integration.server import Server

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def two_workers(trained, tmp_path_factory):
    """Two workers, started without TF_CPP_MIN_LOG_LEVEL (the service sets its own default)."""
    server = Server(tmp_path_factory.mktemp("logs") / "serve.log", workers=2, env={"TF_CPP_MIN_LOG_LEVEL": ""})
    try:
        server.wait_ready()
        deadline = time.monotonic() + 120  # /readyz answers once one worker is up; wait for both
        while not all(f"ready: worker {i} of 2" in server.log_text() for i in (1, 2)) and time.monotonic() < deadline:
            time.sleep(0.5)
        for _ in range(4):  # requests, refused ones included: nothing they log may leave the format
            httpx.post(f"{server.url}/iris/predict", json={"features": [[1, 2, 3]]}, timeout=30)
            httpx.post(f"{server.url}/iris/predict", content=b"{}", headers={"content-type": "text/plain"}, timeout=30)
        yield server
    finally:
        server.stop()


def test_every_line_has_time_level_and_component(two_workers):
    lines = [line for line in two_workers.log_text().splitlines() if line.strip()]
    assert len(lines) >= 6
    assert [line for line in lines if not re.match(logs.LINE_PATTERN, line)] == []


def test_the_start_up_summary_names_models_baselines_port_and_workers(two_workers):
    text = two_workers.log_text()
    port = urlparse(two_workers.url).port
    for worker in (1, 2):
        assert f"[entry_service:sparsity_service:{worker}] ready: worker {worker} of 2, listening on " in text
    assert f"listening on http://127.0.0.1:{port}" in text
    mnist, iris = httpx.get(f"{two_workers.url}/models", timeout=30).json()["models"]
    (line,) = [line for line in text.splitlines() if f"] model {mnist['tag']} (" in line]  # worker 1 only
    for layer, stats in mnist["activation_sparsity"].items():
        assert f"{layer} {stats['mean']:.3f}" in line
    assert f"test accuracy {mnist['test_accuracy']:.4f}" in line
    (line,) = [line for line in text.splitlines() if f"] model {iris['tag']} (" in line]
    assert f"contribution sparsity baseline {iris['contribution_sparsity']['mean']:.3f}" in line


def test_a_refused_request_is_one_info_line_not_an_error_with_a_traceback(two_workers):
    text = two_workers.log_text()
    assert "Traceback" not in text and "[ERROR]" not in text
    refused = [line for line in text.splitlines() if "] refused /iris/predict [POST] with 400: " in line]
    assert len(refused) == 4  # the four invalid rows; the 415s are answered by the guard, which does not log
    assert all(
        "[INFO]" in line and "with 400: features[0]: List should have at least 4 items after validation, not 3" in line
        for line in refused
    )
