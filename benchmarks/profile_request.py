"""Where a one-image request's time goes: ``make profile`` (reports/profile.json).

One worker serves the default model; wrk sends one real digit at a time (1 connection) while py-spy samples the
worker. Each sample is put in the first part of the path its stack reaches, from the innermost frame out (the
forward pass before the data plane that calls it), so the shares add up to the worker's busy time. py-spy sees
Python frames only: the time in uvloop's C code is what is left of it once the idle time (from the worker's CPU
time over the same seconds) is taken out.

Usage: ``python -m benchmarks.profile_request --seconds 10 [--connections 1]``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.load import digit_body, wrk
from benchmarks.peers_bench import machine
from benchmarks.server import PROJECT_MODELS, ROOT, Server

PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("forward pass (engine)", ("sparsity/sparse/", "onnxruntime/", "sparsity/onnx_probe.py", "tensorflow/")),
    ("counting and result", ("sparsity/result.py", "sparsity/probe.py", "modelstore/kinds/", "modelstore/runtime.py")),
    ("typicality", ("sparsity/detectors", "sparsity/typicality")),
    ("metrics", ("service/observability/metrics.py", "prometheus_client/")),
    ("JSON decode", ("json_inputs.py", "sparsity/validation.py")),
    ("JSON encode", ("responses.py",)),
    ("the project's routing and guards", ("service/rest/", "service/routes.py", "service/asgi.py")),
    ("metrics labels and /metrics", ("service/observability/exposition.py",)),
    ("logging", ("logging/",)),
    ("BentoML's middlewares", ("bentoml/", "_bentoml_impl/", "_bentoml_sdk/", "opentelemetry/")),
    ("Starlette", ("starlette/",)),
    ("uvicorn and the event loop", ("uvicorn/", "asyncio/", "uvloop/", "httptools/", "anyio/")),
)
LOOP = "Runner.run (asyncio/runners.py"
LOOP_PART = "uvloop's C code (HTTP parsing, socket reads and writes)"


def worker_pid(server: Server) -> int:
    children = psutil.Process(server.proc.pid).children(recursive=True)
    workers = [c for c in children if any("worker" in part or "serve_http" in part for part in c.cmdline())]
    workers = workers or [c for c in children if c.memory_info().rss > 100 * 1024 * 1024]
    return max(workers, key=lambda c: c.memory_info().rss).pid


def part_of(stack: str) -> str:
    frames = stack.split(";")
    python = [frame for frame in frames if ".py:" in frame or "<frozen" in frame]
    if python and python[-1].startswith(LOOP):
        return LOOP_PART
    for frame in reversed(frames):
        for part, needles in PARTS:
            if any(needle in frame for needle in needles):
                return part
    return "other"


def profile(seconds: int, connections: int, work: Path) -> dict:
    env = {**PROJECT_MODELS}
    with Server(work / "serve.log", env=env) as server:
        body = digit_body(work, "mnist_cnn", "images")
        url = f"{server.url}/mnist/predict"
        wrk(url, body, 2, connections, work)  # warm-up
        pid = worker_pid(server)
        raw = work / "stacks.txt"
        spy = subprocess.Popen(
            [shutil.which("py-spy") or str(Path(os.sys.executable).parent / "py-spy"), "record", "-p", str(pid),
             "-r", "100", "-d", str(seconds), "--format", "raw", "-o", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)
        worker = psutil.Process(pid)
        before, wall = worker.cpu_times(), time.monotonic()
        load = wrk(url, body, seconds - 1, connections, work)
        after, wall = worker.cpu_times(), time.monotonic() - wall
        user, system = (after.user - before.user) / wall, (after.system - before.system) / wall
        busy = user + system
        spy.wait(timeout=seconds + 30)
    samples: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples[part_of(stack)] += int(count)
    # py-spy sees Python frames only: a sample in the event loop's C code is either idle (waiting for the client)
    # or uvloop's own work. The worker's CPU time over the same seconds says how much was idle.
    total = sum(samples.values())
    idle = max(0.0, 1.0 - busy) * total
    samples[LOOP_PART] = max(0.0, samples.get(LOOP_PART, 0) - idle)
    busy_samples = total - idle
    parts = {
        part: {"samples": round(n), "share_of_busy": n / busy_samples if busy_samples else 0.0}
        for part, n in samples.most_common()
    }
    return {
        "connections": connections,
        "requests_per_second": load["requests_per_second"],
        "p50_ms": load.get("p50_ms"),
        "samples": total,
        "busy_share": busy,
        "user_share": user,
        "system_share": system,
        "microseconds_per_request": 1e6 * busy / load["requests_per_second"],
        "parts": parts,
    }


def table(report: dict) -> str:
    per_request = report["microseconds_per_request"]
    lines = ["| part of the request path | share of the worker's busy time | us a request |", "| --- | ---: | ---: |"]
    lines += [
        f"| {part} | {entry['share_of_busy']:.1%} | {entry['share_of_busy'] * per_request:.0f} |"
        for part, entry in report["parts"].items()
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "profile.json")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="profile-"))
    report = profile(args.seconds, args.connections, work)
    report["date"], report["machine"] = time.strftime("%Y-%m-%d"), machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(
        f"{report['requests_per_second']:,.0f} requests/s at {report['connections']} connection(s), worker busy "
        f"{report['busy_share']:.0%} (user {report['user_share']:.0%}, kernel {report['system_share']:.0%}): "
        f"{report['microseconds_per_request']:.0f} us of CPU a request; "
        f"{report['samples']} samples"
    )
    print(table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
