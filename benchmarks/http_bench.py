"""HTTP benchmark of /mnist/predict: numbers, not a pass/fail test.

Starts the real service and, in the same run, the ``model.predict`` baseline service, then drives
both with wrk on 127.0.0.1 (bounded: a few seconds per case). Prints a table and writes
reports/bench.json. Usage: ``make bench`` or ``python -m benchmarks.http_bench --seconds 10``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from tests.integration.server import Server

ROOT = Path(__file__).resolve().parent.parent
LUA = """
local f = io.open("{body}", "r"); local body = f:read("*a"); f:close()
wrk.method = "POST"; wrk.body = body; wrk.headers["Content-Type"] = "application/json"
"""
UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * UNIT_MS[unit]


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
    latency = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)$", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests_per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": _ms(latency["50"]),
        "p90_ms": _ms(latency["90"]),
        "p99_ms": _ms(latency["99"]),
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="duration of each wrk run (default 8)")
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
        ("service", "service.service:SparsityService", [(1, 1), (1, 4), (32, 1), (256, 1)]),
        ("baseline model.predict", "benchmarks.baseline_service:BaselineService", [(1, 1)]),
    ]
    for name, target, runs in cases:
        server = Server(work / f"{name.split()[0]}.log", workers=1, target=target)
        try:
            server.wait_ready()
            url = f"{server.url}/mnist/predict"
            for images, connections in runs:
                wrk(url, bodies[images], 2, connections, work)  # warm-up, not reported
                key = f"{name}: {images} image(s), {connections} connection(s)"
                results[key] = {**wrk(url, bodies[images], args.seconds, connections, work), "images": images}
                r = results[key]
                print(
                    f"{key:<52} {r['requests_per_second']:8.1f} req/s  {r['requests_per_second'] * images:9.1f} img/s"
                    f"  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:7.2f} ms  non-2xx {r['non_2xx']}",
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
