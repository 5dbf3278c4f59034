"""A worker's memory at its worst: ``make bench-memory`` (reports/memory.json), where the Kubernetes requests and
limits come from.

The deployment's shape (two workers, the default models, the default engine) is served; each worker is sent the
largest requests the service allows, one after another on connections of their own: ``.npy`` batches of 1,000
and of 4,096 images (``MAX_NPY_ITEMS``), JSON bodies of 1,024 (``MAX_BATCH``), and a burst of one-image requests
at 32 connections. The resident memory of every process is read after start and after each step; the worst
whole-tree figure is what a pod must hold.

Usage: ``python -m benchmarks.memory_bench``.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from benchmarks.load import JSON, memory, wrk
from benchmarks.peers_bench import machine, tree_rss_mb
from benchmarks.server import PROJECT_MODELS, ROOT, Server
from sparsity.contract import MAX_BATCH, MAX_NPY_ITEMS


def tree_mb(server: Server) -> dict:
    """The supervisor's, each worker's and the whole process tree's resident MB."""
    figures = memory(server)
    return {
        "supervisor_mb": round(figures["supervisor_rss_mb"]),
        "worker_mb": [round(mb) for mb in figures["worker_rss_mb"]],
        "tree_mb": round(tree_rss_mb(server.proc.pid)[0]),
    }


def npy(images: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, images)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10, help="requests of each size per worker")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "memory.json")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    rng = np.random.default_rng(0)
    steps = []
    with Server(work / "serve.log", workers=args.workers, env=PROJECT_MODELS) as server:
        steps.append({"after": "start", **tree_mb(server)})

        def send(path: str, body: bytes, content_type: str) -> None:
            with httpx.Client(timeout=300, headers={"Connection": "close"}) as client:  # a connection each: both
                answer = client.post(f"{server.url}{path}", content=body, headers={"content-type": content_type})
                assert answer.status_code == 200, answer.text[:300]  # workers take some

        npy_type = "application/x-npy"
        cases = (
            (".npy 1,000 images", "/mnist/predict_batch", npy(rng.integers(0, 256, (1000, 28, 28), "u1")), npy_type),
            (f".npy {MAX_NPY_ITEMS:,} images", "/mnist/predict_batch",
             npy(rng.integers(0, 256, (MAX_NPY_ITEMS, 28, 28), np.uint8)), npy_type),
            (f"JSON {MAX_BATCH:,} images", "/mnist/predict",
             json.dumps({"images": rng.random((MAX_BATCH, 28, 28)).round(3).tolist()}).encode(), JSON),
        )  # fmt: skip
        for label, path, body, content_type in cases:
            with ThreadPoolExecutor(max_workers=args.workers) as pool:
                requests = [(path, body, content_type)] * (args.repeat * args.workers)
                list(pool.map(lambda request: send(*request), requests))
            steps.append({"after": f"{args.repeat * args.workers} x {label}", **tree_mb(server)})
        one = work / "one.json"
        one.write_text(json.dumps({"images": rng.random((1, 28, 28)).round(3).tolist()}))
        wrk(f"{server.url}/mnist/predict", (one, JSON), 10, 32, work)
        steps.append({"after": "10 s of one-image requests at 32 connections", **tree_mb(server)})
    worst_tree = max(step["tree_mb"] for step in steps)
    worst_worker = max(max(step["worker_mb"]) for step in steps)
    report = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "workers": args.workers, "steps": steps,
              "worst_tree_mb": worst_tree, "worst_worker_mb": worst_worker}  # fmt: skip
    for step in steps:
        print(f"{step['after']:<50} supervisor {step['supervisor_mb']} MB, workers {step['worker_mb']} MB, "
              f"tree {step['tree_mb']} MB")  # fmt: skip
    print(f"worst: a worker {worst_worker} MB, the whole tree {worst_tree} MB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
