"""HTTP benchmark of /mnist/predict: numbers, not a pass/fail test.

Starts the real service and, in the same run, the ``model.predict`` baseline service, then drives
both with wrk on 127.0.0.1 (bounded: a few seconds per case). Prints a table and writes
reports/bench.json. Usage: ``make bench`` or ``python -m benchmarks.http_bench --seconds 10``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from tests.integration.server import Server

ROOT = Path(__file__).resolve().parent.parent
LUA = """
local f = io.open("{body}", "r"); local body = f:read("*a"); f:close()
wrk.method = "POST"; wrk.body = body; wrk.headers["Content-Type"] = "application/json"
"""


def wrk(url: str, body_file: Path, seconds: int, connections: int, workdir: Path) -> dict:
    script = workdir / f"post-{body_file.stem}.lua"
    script.write_text(LUA.format(body=body_file))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests_per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def sequential_latency(port: int, body: bytes, count: int) -> dict:
    """Per-request latency of ``count`` sequential requests on one keep-alive connection.

    Measured here rather than from wrk, whose latency percentiles on these machines disagree with
    its own request rate (a mean latency longer than the run allows).
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    times = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            conn.request("POST", "/mnist/predict", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            times.append(time.perf_counter() - start)
            if response.status != 200:
                raise RuntimeError(f"benchmark request failed with {response.status}")
    finally:
        conn.close()
    ms = np.array(times) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "requests": count,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="duration of each wrk run (default 8)")
    parser.add_argument(
        "--requests", type=int, default=500, help="sequential requests timed for latency percentiles (default 500)"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "reports" / "bench.json")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed: run `make system-deps`")

    work = Path(tempfile.mkdtemp(prefix="bench-"))
    rng = np.random.default_rng(0)
    bodies = {}
    for n in (1, 32, 256):
        bodies[n] = work / f"images-{n}.json"
        bodies[n].write_text(json.dumps({"images": rng.random((n, 28, 28)).round(4).tolist()}))

    results: dict[str, dict] = {}
    cases = [
        ("service", "service.service:SparsityService", [(1, 1), (1, 8), (32, 1), (256, 1)]),
        ("baseline model.predict", "benchmarks.baseline_service:BaselineService", [(1, 1)]),
        ("adaptive batching (experiment)", "benchmarks.batching_service:BatchingService", [(1, 1), (1, 8)]),
    ]
    for name, target, runs in cases:
        server = Server(work / f"{name.split()[0]}.log", workers=1, target=target)
        try:
            server.wait_ready()
            url = f"{server.url}/mnist/predict"
            for images, connections in runs:
                wrk(url, bodies[images], 2, connections, work)  # warm-up, not reported
                key = f"{name}: {images} image(s), {connections} connection(s)"
                r = {**wrk(url, bodies[images], args.seconds, connections, work), "images": images}
                if connections == 1:
                    requests = max(20, args.requests // images)
                    r.update(sequential_latency(server.port, bodies[images].read_bytes(), requests))
                results[key] = r
                latency = f"  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:7.2f} ms" if "p50_ms" in r else ""
                print(
                    f"{key:<52} {r['requests_per_second']:8.1f} req/s  {r['requests_per_second'] * images:9.1f} img/s"
                    f"{latency}  non-2xx {r['non_2xx']}",
                    flush=True,
                )
        finally:
            server.stop()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
