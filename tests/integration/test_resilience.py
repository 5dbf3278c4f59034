"""A real two-worker ``bentoml serve`` against clients that are not curl, a worker killed under load,
and the supervisor killed: what a user sees in each case."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import psutil
import pytest

from benchmarks.server import PROJECT_MODELS, Server
from sparsity import logs

pytestmark = [pytest.mark.slow, pytest.mark.integration]

BODY_TIMEOUT = 2.0
LIMIT = 1024 * 1024
FORTY_MB = 40 * 1024 * 1024


@pytest.fixture(scope="module")
def pair(trained, tmp_path_factory):
    """Two workers; a 1 MiB body limit and a 2 s body deadline, so the tests stay short. Started without
    TF_CPP_MIN_LOG_LEVEL: the service sets its own default (its log is checked below)."""
    env = {
        "MAX_BODY_BYTES": str(LIMIT),
        "BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
        "TF_CPP_MIN_LOG_LEVEL": "",
        **PROJECT_MODELS,
    }
    srv = Server(tmp_path_factory.mktemp("pair") / "serve.log", workers=2, env=env)
    try:
        srv.wait_ready()
        _wait_workers_initialized(srv, 2)
        yield srv
    finally:
        srv.stop()


def _initialized(srv: Server) -> list[str]:
    return re.findall(r"\[entry_service:sparsity_service:(\d+)\] Service sparsity_service initialized", srv.log_text())


def _wait_workers_initialized(srv: Server, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(_initialized(srv)) < count:
        assert time.monotonic() < deadline, srv.log()
        time.sleep(0.2)


def _workers(srv: Server) -> list[psutil.Process]:
    return psutil.Process(srv.proc.pid).children()


def _is_413(status: int, body: bytes) -> bool:
    error = json.loads(body)
    return status == 413 and error["error"] == f"body: request body exceeds the limit of {LIMIT} bytes"


def _one_image() -> bytes:
    return json.dumps({"images": np.zeros((1, 28, 28)).tolist()}).encode()


def test_workers_serving_only_the_twin_and_a_linear_model_never_load_tensorflow(pair):
    """mnist_cnn runs on its checked ONNX twin (the sparse engine or ONNX Runtime, as its card chose) and iris_l1 on
    NumPy: no worker maps TensorFlow's library."""
    from modelstore.engines import EngineCheck, choose

    models = {m["name"]: m for m in httpx.get(f"{pair.url}/models", timeout=10).json()["models"]}
    card = type("Card", (), {"engines": [EngineCheck(**e) for e in models["mnist_cnn"]["engines"]]})()
    expected, _ = choose(card, "onnxruntime", "auto", ("sparse", "onnxruntime", "tensorflow"))
    assert models["mnist_cnn"]["engine"] == expected and models["iris_l1"]["engine"] == "numpy"
    check = models["mnist_cnn"]["twin"]["check"]
    assert check["items"] >= 30 and check["rounding_ties"] <= check["activations"] * 1e-6
    workers = _workers(pair)
    assert len(workers) == 2
    for worker in workers:
        libraries = {Path(m.path).name for m in worker.memory_maps()}
        assert any(name.startswith("libonnxruntime") or "onnxruntime_pybind" in name for name in libraries)
        assert not [name for name in libraries if "tensorflow" in name], worker.pid


# --- clients that are not curl ----------------------------------------------------------------------


def test_urllib_reads_the_413_of_a_40_mb_body(pair):
    """urllib sends Connection: close, no Expect, and the whole body before it reads the answer."""
    request = urllib.request.Request(
        f"{pair.url}/mnist/predict", data=b"x" * FORTY_MB, headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=60)
    assert _is_413(caught.value.code, caught.value.read())


def test_urllib_reads_the_415_of_a_large_body_of_the_wrong_type(pair):
    request = urllib.request.Request(
        f"{pair.url}/mnist/predict", data=b"x" * (8 * LIMIT), headers={"Content-Type": "text/plain"}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=60)
    assert caught.value.code == 415 and json.loads(caught.value.read())["error"].startswith("Content-Type: must be")


def test_http_client_with_content_length_reads_the_413_and_keeps_the_connection(pair):
    conn = http.client.HTTPConnection("127.0.0.1", pair.port, timeout=60)
    try:
        conn.request("POST", "/mnist/predict", body=b"x" * FORTY_MB, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert _is_413(response.status, response.read())
        # the body was read to its end, so the same connection serves the next request
        conn.request("POST", "/mnist/predict", body=_one_image(), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200 and len(json.loads(response.read())["predictions"]) == 1
    finally:
        conn.close()


def test_a_chunked_body_over_the_limit_gets_the_413(pair):
    def chunks():
        for _ in range(40):
            yield b"x" * (1024 * 1024)

    conn = http.client.HTTPConnection("127.0.0.1", pair.port, timeout=60)
    try:
        conn.request(
            "POST", "/mnist/predict", body=chunks(), headers={"Content-Type": "application/json"}, encode_chunked=True
        )
        response = conn.getresponse()
        assert _is_413(response.status, response.read())
    finally:
        conn.close()


def test_expect_100_continue_is_answered_before_the_body_is_sent(pair):
    """A client that asks first is refused at once: the server never asks for the body."""
    answer = _headers_only(pair, FORTY_MB, "Expect: 100-continue\r\n")
    assert answer.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in answer
    assert b"connection: close" in answer.lower()


def test_a_body_larger_than_the_drain_bound_is_refused_and_closed(pair):
    """Beyond MAX_DRAIN_BYTES (64 MiB) the body is not read: 413 with Connection: close."""
    answer = _headers_only(pair, 10 * 1024**3)
    assert answer.startswith(b"HTTP/1.1 413 ") and b"connection: close" in answer.lower()


def test_a_slow_body_gets_408_and_the_connection_is_closed(pair):
    """Headers at once, then one byte every 0.2 s: answered at the body deadline, not held."""
    with socket.create_connection(("127.0.0.1", pair.port), timeout=10) as sock:
        sock.sendall(
            b"POST /mnist/predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n{"
        )
        start = time.monotonic()
        sock.settimeout(0.2)
        answer = b""
        while time.monotonic() - start < 4 * BODY_TIMEOUT:
            try:
                sock.sendall(b" ")
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:  # reset after the answer: the server closed the connection
                break
            if not chunk:
                break
            answer += chunk
        elapsed = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert BODY_TIMEOUT * 0.9 <= elapsed < BODY_TIMEOUT + 2.0
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"] == f"body: the request body did not arrive within {BODY_TIMEOUT:g} s"
    # and the workers still answer
    assert httpx.post(f"{pair.url}/mnist/predict", content=_one_image(), headers=_json(), timeout=10).status_code == 200


def _json() -> dict:
    return {"Content-Type": "application/json"}


def _headers_only(srv: Server, length: int, extra: str = "") -> bytes:
    """Send only the headers of a JSON POST declaring ``length`` bytes; the raw answer."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(
            b"POST /mnist/predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {length}\r\n{extra}\r\n".encode()
        )
        return _read_response(sock)


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head.lower()).group(1))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


# --- what the log says, after the clients above -----------------------------------------------------


def test_the_log_is_one_format_with_a_start_up_summary_and_one_line_per_refusal(pair):
    for _ in range(4):
        r = httpx.post(f"{pair.url}/iris/predict", json={"features": [[1, 2, 3]]}, timeout=30)
        assert r.status_code == 400
    time.sleep(0.5)
    text = pair.log_text()
    lines = [line for line in text.splitlines() if line.strip()]
    assert [line for line in lines if not re.match(logs.LINE_PATTERN, line)] == []
    assert "Traceback" not in text and "[ERROR]" not in text

    port = urlparse(pair.url).port
    for worker in (1, 2):
        assert f"[entry_service:sparsity_service:{worker}] ready: worker {worker} of 2, listening on " in text
    assert f"listening on http://127.0.0.1:{port}" in text
    iris, mnist = httpx.get(f"{pair.url}/models", timeout=30).json()["models"]  # by name
    assert "serving 2 model(s), 0 refused" in text
    (line,) = [line for line in lines if f"] model {mnist['tag']} (" in line]  # worker 1 only
    for layer, stats in mnist["activation_sparsity"].items():
        assert f"{layer} {stats['mean']:.3f}" in line
    assert f"(keras-relu, mnist-5k, accuracy {mnist['test_accuracy']:.4f})" in line
    assert line.endswith(f"; typicality unit-firing above {mnist['typicality']['threshold']:.3f}")
    (line,) = [line for line in lines if f"] model {iris['tag']} (" in line]
    assert f"contribution sparsity baseline {iris['contribution_sparsity']['mean']:.3f}" in line

    refused = [line for line in lines if "] refused /iris/predict [POST] with 400: " in line]
    assert len(refused) == 4 and all("[INFO]" in line for line in refused)
    assert all("features[0]: List should have at least 4 items after validation, not 3" in line for line in refused)


# --- a worker dies under load -----------------------------------------------------------------------


def test_a_killed_worker_is_restarted_while_the_other_answers(pair):
    clients = 8
    stop = threading.Event()
    outcomes: list[list[tuple[float, str]]] = [[] for _ in range(clients)]
    body = _one_image()

    def load(i: int) -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    status = client.post(f"{pair.url}/mnist/predict", content=body, headers=_json()).status_code
                    outcomes[i].append((time.monotonic(), str(status)))
                except httpx.HTTPError as exc:
                    outcomes[i].append((time.monotonic(), type(exc).__name__))

    threads = [threading.Thread(target=load, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        before = len(_initialized(pair))
        victim = _workers(pair)[0]
        killed_at = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        readyz = []
        while len(_initialized(pair)) == before:
            assert time.monotonic() - killed_at < 60, "the killed worker was not restarted within 60 s"
            readyz.append(httpx.get(f"{pair.url}/readyz", timeout=5).status_code)
            time.sleep(0.5)
        recovered = time.monotonic() - killed_at
        time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    failures = [(t, o) for results in outcomes for t, o in results if o != "200"]
    during = [o for results in outcomes for t, o in results if killed_at < t < killed_at + recovered and o == "200"]
    after = [o for results in outcomes for t, o in results if t > killed_at + recovered]
    print(
        f"\nworker killed: {len(failures)} failed requests ({sorted({o for _, o in failures})}), restarted and "
        f"initialized in {recovered:.1f} s, {len(during)} answered meanwhile"
    )
    assert len(_workers(pair)) == 2 and victim.pid not in {p.pid for p in _workers(pair)}
    # at most one failure per client: the request in flight on the killed worker (or its dead connection)
    assert len(failures) <= clients and all(sum(o != "200" for _, o in r) <= 1 for r in outcomes), failures
    assert all(t >= killed_at for t, _ in failures)
    assert during and after and all(code == 200 for code in readyz)


# --- the supervisor dies ----------------------------------------------------------------------------


def test_workers_exit_when_the_supervisor_is_killed(trained, tmp_path):
    srv = Server(tmp_path / "serve.log", workers=2, env=PROJECT_MODELS)
    try:
        srv.wait_ready()
        _wait_workers_initialized(srv, 2)
        workers = _workers(srv)
        assert len(workers) == 2
        os.kill(srv.proc.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        _, alive = psutil.wait_procs(workers, timeout=15)
        gone_after = time.monotonic() - killed_at
        print(f"\nsupervisor killed: workers gone after {gone_after:.1f} s")
        assert not alive and gone_after <= 10, f"workers alive after {gone_after:.1f} s: {alive}\n{srv.log()}"
        with pytest.raises(OSError):  # nobody holds the port any more
            socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
        assert "supervisor (pid" in srv.log_text()
    finally:
        srv.stop()
