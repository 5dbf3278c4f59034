"""Load against a real server: the request bodies, wrk (and a second client where wrk's latency figures do
not hold up), and one server's cases run in turn. Shared by the service benchmark (:mod:`benchmarks.http_bench`)
and the ONNX comparison (:mod:`benchmarks.onnx_bench`), which import this and not each other."""

from __future__ import annotations

import io
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.server import PROJECT_MODELS, Server

LUA = """
local f = io.open("{body}", "rb"); local body = f:read("*a"); f:close()
wrk.method = "POST"; wrk.body = body; wrk.headers["Content-Type"] = "{content_type}"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK {{"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, ' ..
    '"mean_us": %f, "p50_us": %d, "p99_us": %d, "max_us": %d}}\\n', summary.requests, summary.duration,
    e.status, e.connect + e.read + e.write + e.timeout, latency.mean, latency:percentile(50),
    latency:percentile(99), latency.max))
end
"""


JSON = "application/json"


NPY = "application/x-npy"


@dataclass(frozen=True)
class Case:
    label: str
    path: str
    body: str  # key into the bodies
    images: int
    connections: int


def digit_body(work: Path, model: str = "mnist_cnn", key: str = "inputs") -> tuple[Path, str]:
    """One real held-back digit (the first of the model's card examples) as a JSON body ``{key: [digit]}``."""
    import bentoml

    from modelstore.audit import latest_tag

    card = bentoml.models.get(latest_tag(model)).info.metadata
    path = work / f"{model}-{key}.json"
    path.write_text(json.dumps({key: [card["examples"][0]]}))
    return path, JSON


def make_bodies(work: Path) -> dict[str, tuple[Path, str]]:
    rng = np.random.default_rng(0)
    bodies = {}
    for n in (1, 32, 64, 256):
        images = rng.random((n, 28, 28)).round(4).tolist()
        path = work / f"images-{n}.json"
        path.write_text(json.dumps({"images": images}))
        bodies[f"json{n}"] = (path, JSON)
        path = work / f"inputs-{n}.json"  # the same images for the generic route
        path.write_text(json.dumps({"inputs": images}))
        bodies[f"inputs{n}"] = (path, JSON)
    for n in (256, 1024):
        buf = io.BytesIO()
        np.save(buf, rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8))
        path = work / f"images-{n}.npy"
        path.write_bytes(buf.getvalue())
        bodies[f"npy{n}"] = (path, NPY)
    return bodies


def wrk(url: str, body: tuple[Path, str], seconds: int, connections: int, work: Path) -> dict:
    path, content_type = body
    script = work / f"post-{path.name}.lua"
    script.write_text(LUA.format(body=path, content_type=content_type))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    raw = json.loads(next(line[4:] for line in out.splitlines() if line.startswith("WRK ")))
    duration = raw["duration_us"] / 1e6
    busy = raw["mean_us"] / 1e6 * raw["requests"]  # seconds of latency summed over requests
    return {
        "requests": raw["requests"],
        "requests_per_second": raw["requests"] / duration,
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "mean_ms": raw["mean_us"] / 1000,
        "non_2xx": raw["non_2xx"],
        "socket_errors": raw["socket_errors"],
        # the load generator's check on itself: its connections cannot have been busy for longer
        # than they existed (1% slack for the requests still in flight at the end)
        "latency_consistent": busy <= duration * connections * 1.01,
        "busy_share": busy / (duration * connections),
    }


def client_latency(url: str, body: tuple[Path, str], seconds: float, connections: int) -> dict:
    """Latency percentiles from ``connections`` keep-alive clients (threads), each sending one request
    at a time, for ``seconds``: the same concurrency as the wrk case.

    Used where wrk's own figures fail its consistency check (seen on these machines: a mean latency
    longer than its request rate allows). These clients are consistent by construction (each one's
    latencies add up to no more than its run); with several threads, a response may wait for the
    client's GIL, so the percentiles are upper bounds."""
    import http.client
    import threading
    from urllib.parse import urlsplit

    path, content_type = body
    data = path.read_bytes()
    parts = urlsplit(url)
    per_client: list[list[float]] = [[] for _ in range(connections)]
    failures: list[int] = []

    def client(times: list[float]) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        try:
            while time.perf_counter() - start < seconds:
                t0 = time.perf_counter()
                conn.request("POST", parts.path, body=data, headers={"Content-Type": content_type})
                response = conn.getresponse()
                response.read()
                times.append(time.perf_counter() - t0)
                if response.status != 200:
                    failures.append(response.status)
        finally:
            conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(times,)) for times in per_client]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    ms = np.concatenate([np.array(t) for t in per_client]) * 1000
    if failures:
        raise RuntimeError(f"benchmark requests failed: {sorted(set(failures))}")
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "mean_ms": float(ms.mean()),
        "latency_consistent": bool(ms.sum() / 1000 <= elapsed * connections),
        "busy_share": float(ms.sum() / 1000 / (elapsed * connections)),
        "latency_source": f"{connections} Python client(s), {len(ms)} requests, {len(ms) / elapsed:.1f} req/s",
    }


def memory(server: Server) -> dict:
    """Resident MB of the supervising ``bentoml serve`` process and of each worker."""
    import psutil

    parent = psutil.Process(server.proc.pid)
    workers = [p for p in parent.children(recursive=True) if "_bentoml_impl.worker" in " ".join(p.cmdline())]
    return {
        "supervisor_rss_mb": parent.memory_info().rss / 2**20,
        "worker_rss_mb": [p.memory_info().rss / 2**20 for p in workers],
    }


def serve_cases(
    target: str, workers: int, cases: list[Case], bodies, args, work: Path, env: dict = PROJECT_MODELS
) -> tuple[dict, dict]:
    log = work / f"serve-{target.split(':')[1]}-{workers}-{len(list(work.glob('serve-*.log')))}.log"
    server = Server(log, workers=workers, target=target, env=env)
    results = {}
    try:
        server.wait_ready()
        for case in cases:
            url = f"{server.url}{case.path}"
            wrk(url, bodies[case.body], 2, case.connections, work)  # warm-up, not reported
            r = {**wrk(url, bodies[case.body], args.seconds, case.connections, work), "images": case.images}
            r["images_per_second"] = r["requests_per_second"] * case.images
            r["latency_source"] = "wrk"
            if not r["latency_consistent"]:
                r["wrk_latency_rejected"] = {k: r[k] for k in ("p50_ms", "p99_ms", "mean_ms", "busy_share")}
                r.update(client_latency(url, bodies[case.body], args.seconds, case.connections))
            r["workers"], r["connections"] = workers, case.connections
            results[case.label] = r
            print(_row(case.label, r), flush=True)
        return results, memory(server)
    finally:
        server.stop()


def _row(label: str, r: dict) -> str:
    check = ("wrk" if r["latency_source"] == "wrk" else "py") + (" ok" if r["latency_consistent"] else " INCONSISTENT")
    errors = r["non_2xx"] + r["socket_errors"]
    return (
        f"{label:<44} {r['requests_per_second']:8.1f} req/s {r['images_per_second']:9.0f} img/s"
        f"  p50 {r['p50_ms']:7.2f}  p99 {r['p99_ms']:7.2f} ms  [{check} {r['busy_share']:.2f}]  errors {errors}"
    )
