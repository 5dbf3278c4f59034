"""ONNX Runtime against TensorFlow on the same network: the served ``mnist_cnn`` on TensorFlow and on its
checked ONNX twin (written at registration, :mod:`sparsity.keras_onnx`), in one run.

1. In-process, one thread each, in one process, taking turns: TensorFlow's forward pass and the probe,
   ONNX Runtime's plain pass over the twin and the counting copy the service runs, at 1 and 256 images
   (median ms per call).
2. Over HTTP, one worker serving ``mnist_cnn`` with ``ENGINE=tensorflow`` and then as served by
   default (the twin): one image at 1 and 8 connections and 256-image ``.npy`` batches.

``make bench`` runs it after the service benchmark (:mod:`benchmarks.http_bench`); alone:
``python -m benchmarks.onnx_bench --seconds 6``. Writes ``reports/onnx-bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
KERAS = "mnist_cnn"
ENGINES = ("tensorflow", "onnxruntime")


def compare(tag: str, repeats: int) -> dict:
    """Median ms per call of the four passes at 1 and 256 images (run in a child: one thread per library)."""
    import bentoml
    import tensorflow as tf

    from benchmarks.inprocess import load
    from modelstore.kinds import from_store
    from sparsity.onnx_graph import load as load_onnx
    from sparsity.onnx_probe import session
    from training.timing import median_ms_in_turns

    runtime, tf_plain = load(tag)
    twin = from_store(tag)  # as the service loads it: the counting copy of the stored twin
    if twin.engine != "onnxruntime":
        raise SystemExit(f"{tag} has no ONNX twin ({twin.card.engine_reason}); register it again")
    plain = session(load_onnx(os.path.join(bentoml.models.get(tag).path, twin.card.twin.file)), threads=1)
    rng = np.random.default_rng(0)
    inputs = {n: rng.random((n, *runtime.item_shape), dtype=np.float32) for n in (1, 256)}
    check = inputs[256]
    same = np.abs(tf_plain(tf.convert_to_tensor(check)).numpy() - twin.probe.run(check).probabilities).max()
    calls = {
        "tensorflow_plain": lambda x: tf_plain(tf.convert_to_tensor(x)).numpy(),
        "tensorflow_probe": runtime.probe.run,
        "onnxruntime_plain": lambda x: plain.run(None, {"input": x})[0],
        "onnxruntime_probe": twin.probe.run,
    }
    medians = median_ms_in_turns(calls, inputs, inner={1: 40, 256: 3}, repeats=repeats)
    out: dict = {"model": runtime.tag, "max_probability_difference": float(same)}
    for key in calls:
        for n in inputs:
            out[f"{key}_ms_{n}"] = medians[key][n]
    for n in inputs:
        out[f"onnx_counting_overhead_{n}"] = out[f"onnxruntime_probe_ms_{n}"] / out[f"onnxruntime_plain_ms_{n}"] - 1
        out[f"tensorflow_probe_overhead_{n}"] = out[f"tensorflow_probe_ms_{n}"] / out[f"tensorflow_plain_ms_{n}"] - 1
        out[f"probe_speedup_{n}"] = out[f"tensorflow_probe_ms_{n}"] / out[f"onnxruntime_probe_ms_{n}"]
    return out


def _run(args: list[str], env: dict | None = None, timeout: float = 900) -> str:
    done = subprocess.run(
        args, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} ... failed:\n{done.stderr[-3000:]}")
    return done.stdout


def inprocess(repeats: int = 15) -> dict:
    out = _run([sys.executable, "-m", "benchmarks.onnx_bench", "--compare-only", "--repeats", str(repeats)])
    return json.loads(next(line[7:] for line in out.splitlines() if line.startswith("RESULT ")))


def http(seconds: int, work: Path) -> dict:
    """``mnist_cnn`` served by one worker on each engine in turn, the same cases."""
    from benchmarks.load import Case, make_bodies, serve_cases
    from benchmarks.server import PROJECT_MODELS

    bodies = make_bodies(work)
    args = argparse.Namespace(seconds=seconds)
    results, memory = {}, {}
    for engine in ENGINES:
        cases = [
            Case(f"{engine}: 1 image, {conn} conn", f"/models/{KERAS}/predict", "inputs1", 1, conn) for conn in (1, 8)
        ]
        cases.append(Case(f"{engine}: binary 256, 2 conn", f"/models/{KERAS}/predict_batch", "npy256", 256, 2))
        env = {**PROJECT_MODELS, "ENGINE": "tensorflow" if engine == "tensorflow" else "auto"}
        served, memory[engine] = serve_cases("service.service:SparsityService", 1, cases, bodies, args, work, env=env)
        results.update(served)
    return {"cases": results, "memory": memory}


def targets(limits: dict, results: dict) -> list[tuple[str, float, str, bool]]:
    overhead = limits["onnx_counting_overhead_256"]
    rows = [("ONNX in-graph counting over the plain pass, 256 images (<= 15%)", overhead, "{:.0%}", overhead <= 0.15)]
    for conn in (1, 8):
        ratio = (
            results[f"onnxruntime: 1 image, {conn} conn"]["requests_per_second"]
            / results[f"tensorflow: 1 image, {conn} conn"]["requests_per_second"]
        )
        rows.append((f"ONNX / Keras requests/s, 1 image, {conn} conn (>= 1.5x)", ratio, "{:.2f}x", ratio >= 1.5))
    return rows


def report(limits: dict) -> str:
    lines = ["in-process, one thread, median ms per call (1 image / 256 images):"]
    for key in ("tensorflow_plain", "tensorflow_probe", "onnxruntime_plain", "onnxruntime_probe"):
        lines.append(f"  {key:<20} {limits[f'{key}_ms_1']:8.3f} / {limits[f'{key}_ms_256']:8.2f}")
    lines.append(
        f"  counting: ONNX +{limits['onnx_counting_overhead_1']:.0%} / +{limits['onnx_counting_overhead_256']:.0%}, "
        f"TensorFlow +{limits['tensorflow_probe_overhead_1']:.0%} / +{limits['tensorflow_probe_overhead_256']:.0%}; "
        f"ONNX probe {limits['probe_speedup_1']:.1f}x / {limits['probe_speedup_256']:.1f}x faster than TensorFlow's; "
        f"largest probability difference {limits['max_probability_difference']:.1e}"
    )
    return "\n".join(lines)


def run(seconds: int, work: Path) -> dict:
    print("ONNX Runtime against TensorFlow, the same network and weights ...", flush=True)
    limits = inprocess()
    print(report(limits), flush=True)
    served = http(seconds, work)
    checked = targets(limits, served["cases"])
    print("ONNX targets:")
    for name, value, fmt, ok in checked:
        print(f"  {name:<62} {fmt.format(value):>8}  {'MET' if ok else 'NOT MET'}", flush=True)
    return {
        "inprocess": limits,
        "http": served["cases"],
        "memory": served["memory"],
        "targets": {name: {"value": value, "met": ok} for name, value, _, ok in checked},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=6, help="duration of each wrk run (default 6)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--compare-only", action="store_true", help="the in-process comparison only (JSON line)")
    parser.add_argument("--output", type=Path, default=ROOT / "reports" / "onnx-bench.json")
    args = parser.parse_args(argv)
    from sparsity.logs import quiet_tensorflow

    quiet_tensorflow()
    if args.compare_only:
        print("RESULT " + json.dumps(compare(f"{KERAS}:latest", args.repeats)), flush=True)
        return 0
    result = run(args.seconds, Path(tempfile.mkdtemp(prefix="onnx-bench-")))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
