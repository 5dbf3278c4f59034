"""Benchmark of the service: numbers from one run, not a pass/fail test.

In one run: the in-process limits (plain forward pass vs probe at 1 and 256 images; the probe's
images/s in one process and in two at once, as two workers would run), then the real service with
1 and 2 workers and the ``model.predict`` baseline service over HTTP, driven by wrk on 127.0.0.1
(bounded: a few seconds per case). wrk's latency percentiles are only reported next to a check
against its own request rate: mean latency x requests cannot exceed duration x connections.
Then ONNX Runtime against TensorFlow on the same network (:mod:`benchmarks.onnx_bench`), and what a 100%
shadow costs the primary (:mod:`benchmarks.shadow_bench`). Prints one table and the targets, writes
``reports/bench.json`` and ``reports/bench.png``.

Usage: ``make bench`` or ``python -m benchmarks.http_bench --seconds 10``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import onnx_bench, shadow_bench
from benchmarks.load import Case, make_bodies, serve_cases

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "service.service:SparsityService"
BASELINE = "benchmarks.baseline_service:BaselineService"


def inprocess(seconds: float) -> dict:
    """Plain vs probe in one process, then the probe's 256-image images/s in one and in two processes."""
    python = sys.executable

    def result_of(proc: subprocess.Popen) -> dict:
        out, err = proc.communicate(timeout=600)
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"in-process benchmark failed:\n{err[-3000:]}")
        return json.loads(lines[-1][7:])

    def spawn(*args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [python, "-m", "benchmarks.inprocess", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    compare = result_of(spawn("compare"))
    single = result_of(spawn("throughput", "--start-at", str(time.time() + 15), "--seconds", str(seconds)))
    start_at = str(time.time() + 20)  # both load TensorFlow first, then measure the same seconds
    pair = [spawn("throughput", "--start-at", start_at, "--seconds", str(seconds)) for _ in range(2)]
    both = [result_of(p) for p in pair]
    return {
        **compare,
        "probe_images_per_second_1_process": single["images_per_second"],
        "probe_images_per_second_2_processes": sum(r["images_per_second"] for r in both),
    }


def targets(results: dict, limits: dict) -> list[tuple[str, float, str, bool]]:
    """(name, value, format, met) for each target of the issue, from this run's figures."""
    two = limits["probe_images_per_second_2_processes"]
    baseline = results["baseline model.predict, 1 worker: 1 image, 8 conn"]["requests_per_second"]
    binary = results["2 workers: binary 256, 4 conn"]["images_per_second"] / two
    json_share = results["2 workers: JSON 256, 4 conn"]["images_per_second"] / two
    p99 = results["2 workers: 1 image, 8 conn"]["p99_ms"]
    ratio = results["1 worker: 1 image, 8 conn"]["requests_per_second"] / baseline
    same_1 = (
        results["1 worker: generic route, 1 image, 1 conn"]["requests_per_second"]
        / results["1 worker: 1 image, 1 conn"]["requests_per_second"]
    )
    same_256 = (
        results["1 worker: generic route, JSON 256, 2 conn"]["images_per_second"]
        / results["1 worker: JSON 256, 2 conn"]["images_per_second"]
    )
    return [
        ("generic route / alias, 1 image, 1 worker (>= 0.9: the same within noise)", same_1, "{:.2f}", same_1 >= 0.9),
        ("generic route / alias, JSON 256, 1 worker (>= 0.9)", same_256, "{:.2f}", same_256 >= 0.9),
        (
            "probe overhead at 256 images (<= 15%)",
            limits["probe_overhead_256"],
            "{:.0%}",
            limits["probe_overhead_256"] <= 0.15,
        ),
        (
            "probe overhead at 1 image (<= 10%)",
            limits["probe_overhead_1"],
            "{:.0%}",
            limits["probe_overhead_1"] <= 0.10,
        ),
        ("binary 256, 2 workers / in-process, 2 processes (>= 70%)", binary, "{:.0%}", binary >= 0.70),
        ("JSON 256, 2 workers / in-process, 2 processes (>= 40%)", json_share, "{:.0%}", json_share >= 0.40),
        ("1 image, 8 conn, 2 workers: p99 ms (<= 10)", p99, "{:.2f}", p99 <= 10),
        ("1 image, 8 conn, 1 worker / baseline, same (>= 25x)", ratio, "{:.1f}x", ratio >= 25),
    ]


def plot(results: dict, limits: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(results)
    values = [results[k]["images_per_second"] for k in labels]
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(labels) + 1.8))
    colors = ["#8888aa" if k.startswith("baseline") else "#3b75af" if "2 workers" in k else "#6fa8dc" for k in labels]
    ax.barh(labels, values, color=colors)
    ax.invert_yaxis()
    ax.set_xscale("log")
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:,.0f}", va="center", fontsize=8)
    lines = [
        ("plain forward, 1 process", 256 / limits["plain_ms_256"] * 1000, "#999999", ":"),
        ("probe, 1 process", limits["probe_images_per_second_1_process"], "#d62728", "--"),
        ("probe, 2 processes", limits["probe_images_per_second_2_processes"], "#2ca02c", "-"),
    ]
    for name, x, color, style in lines:
        ax.axvline(x, color=color, linestyle=style, label=f"in-process {name}: {x:,.0f} img/s")
    ax.set_xlabel("images per second (log scale)")
    ax.set_title("Images/s per case; lines: in-process limits at 256 images per call")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=6, help="duration of each wrk run (default 6)")
    parser.add_argument("--output", type=Path, default=ROOT / "reports" / "bench.json")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed: run `make system-deps`")

    work = Path(tempfile.mkdtemp(prefix="bench-"))
    bodies = make_bodies(work)
    print("in-process limits (one TensorFlow thread per process) ...", flush=True)
    limits = inprocess(args.seconds)
    print(
        f"  plain {limits['plain_ms_1']:.3f} ms / {limits['plain_ms_256']:.2f} ms, probe {limits['probe_ms_1']:.3f} ms"
        f" / {limits['probe_ms_256']:.2f} ms at 1 / 256 images (probe +{limits['probe_overhead_1']:.0%}"
        f" / +{limits['probe_overhead_256']:.0%}); probe {limits['probe_images_per_second_1_process']:,.0f} img/s"
        f" in 1 process, {limits['probe_images_per_second_2_processes']:,.0f} in 2",
        flush=True,
    )
    predict, batch = "/mnist/predict", "/mnist/predict_batch"
    two = [
        Case("2 workers: 1 image, 1 conn", predict, "json1", 1, 1),
        Case("2 workers: 1 image, 8 conn", predict, "json1", 1, 8),
        Case("2 workers: JSON 32, 4 conn", predict, "json32", 32, 4),
        Case("2 workers: JSON 256, 4 conn", predict, "json256", 256, 4),
        Case("2 workers: binary 256, 4 conn", batch, "npy256", 256, 4),
        Case("2 workers: binary 1024, 4 conn", batch, "npy1024", 1024, 4),
    ]
    generic = "/models/mnist_cnn/predict"
    one = [  # the alias and the generic route of the same model, each case right after the other
        Case("1 worker: 1 image, 1 conn", predict, "json1", 1, 1),
        Case("1 worker: generic route, 1 image, 1 conn", generic, "inputs1", 1, 1),
        Case("1 worker: 1 image, 8 conn", predict, "json1", 1, 8),
        Case("1 worker: JSON 256, 2 conn", predict, "json256", 256, 2),
        Case("1 worker: generic route, JSON 256, 2 conn", generic, "inputs256", 256, 2),
        Case("1 worker: binary 256, 2 conn", batch, "npy256", 256, 2),
        Case("1 worker: generic route, binary 256, 2 conn", f"{generic}_batch", "npy256", 256, 2),
    ]
    base = [
        Case("baseline model.predict, 1 worker: 1 image, 1 conn", predict, "json1", 1, 1),
        Case("baseline model.predict, 1 worker: 1 image, 8 conn", predict, "json1", 1, 8),
    ]
    print(
        f"HTTP cases, {args.seconds:g} s each; [latency from wrk, or from Python clients at the same concurrency where"
        " wrk's failed its check (upper bounds); busy share of the connections' time]"
    )
    results: dict[str, dict] = {}
    memory_of: dict[str, dict] = {}
    for target, workers, cases in ((SERVICE, 2, two), (SERVICE, 1, one), (BASELINE, 1, base)):
        got, mem = serve_cases(target, workers, cases, bodies, args, work)
        results.update(got)
        memory_of[f"{target.split(':')[1]}, {workers} worker(s)"] = mem
    print("resident memory:")
    for name, mem in memory_of.items():
        workers = ", ".join(f"{mb:.0f}" for mb in mem["worker_rss_mb"])
        print(f"  {name:<36} supervisor {mem['supervisor_rss_mb']:5.0f} MB   workers {workers} MB")
    http_1 = results["1 worker: 1 image, 1 conn"]["p50_ms"]
    limits["http_p50_over_inprocess_probe_1"] = http_1 / limits["probe_ms_1"]
    print(
        f"one image over HTTP (p50, 1 worker, 1 conn) {http_1:.2f} ms = "
        f"{limits['http_p50_over_inprocess_probe_1']:.1f} x the in-process probe ({limits['probe_ms_1']:.3f} ms)"
    )
    onnx = onnx_bench.run(args.seconds, work)
    shadow = shadow_bench.run(args.seconds, work)
    print("targets:")
    checked = targets(results, limits)
    checked += [(name, t["value"], "{:.2f}", t["met"]) for name, t in onnx["targets"].items()]
    checked += [(name, t["value"], "{:.3f}", t["met"]) for name, t in shadow.get("targets", {}).items()]
    for name, value, fmt, ok in checked:
        print(f"  {name:<62} {fmt.format(value):>8}  {'MET' if ok else 'NOT MET'}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "inprocess": limits,
        "http": results,
        "memory": memory_of,
        "onnx": onnx,
        "shadow": shadow,
        "targets": {name: {"value": value, "met": ok} for name, value, _, ok in checked},
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    plot(results, limits, args.output.with_suffix(".png"))
    print(f"written to {args.output} and {args.output.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
