"""Stored models on ONNX Runtime, in one process, taking turns: what sparsity (and the pruning it allows) buys.

For each tag: its checked ONNX twin as the service serves it (the counting probe) and the plain pass over the
same file, one thread, at 1 and 256 images (median ms per call). The first tag is the baseline every other is
compared with. ``python -m benchmarks.model_speed mnist_cnn:OLD mnist_cnn:NEW`` (tags from ``bentoml models
list``); writes ``reports/model-speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def measure(tags: list[str], repeats: int) -> dict:
    import bentoml

    from modelstore.kinds import from_store
    from sparsity.onnx_graph import load as load_onnx
    from sparsity.onnx_probe import session
    from training.timing import median_ms_in_turns

    calls, facts = {}, {}
    rng = np.random.default_rng(0)
    inputs = None
    for tag in tags:
        runtime = from_store(tag)
        if runtime.engine != "onnxruntime":
            raise SystemExit(f"{tag} has no ONNX twin ({runtime.card.engine_reason}); register it again")
        stored = bentoml.models.get(tag)
        plain = session(load_onnx(os.path.join(stored.path, runtime.card.twin.file)), threads=1)
        if inputs is None:
            inputs = {n: rng.random((n, *runtime.item_shape), dtype=np.float32) for n in (1, 256)}
        calls[f"{stored.tag}:probe"] = runtime.probe.run
        calls[f"{stored.tag}:plain"] = lambda x, s=plain: s.run(None, {"input": x})[0]
        facts[str(stored.tag)] = {
            "units": {layer.name: layer.units for layer in runtime.probe.layers},
            "test_accuracy": getattr(runtime.card, "test_accuracy", None),
        }
    medians = median_ms_in_turns(calls, inputs, inner={1: 40, 256: 3}, repeats=repeats)
    base = str(bentoml.models.get(tags[0]).tag)
    rows = {}
    for tag in facts:
        row = {**facts[tag]}
        for kind in ("probe", "plain"):
            for n in (1, 256):
                row[f"{kind}_ms_{n}"] = medians[f"{tag}:{kind}"][n]
                row[f"{kind}_speedup_{n}"] = medians[f"{base}:{kind}"][n] / medians[f"{tag}:{kind}"][n]
        rows[tag] = row
    return {"baseline": base, "repeats": repeats, "models": rows}


def report(result: dict) -> str:
    lines = [f"ONNX Runtime, one thread, median ms per call; speed-up against {result['baseline']}:"]
    for tag, row in result["models"].items():
        lines.append(
            f"  {tag:<34} served (counting) 1 img {row['probe_ms_1']:.3f} ms (x{row['probe_speedup_1']:.2f}), "
            f"256 img {row['probe_ms_256']:.2f} ms (x{row['probe_speedup_256']:.2f}); plain 1 img "
            f"{row['plain_ms_1']:.3f} ms, 256 img {row['plain_ms_256']:.2f} ms; units {row['units']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.model_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("tags", nargs="+", help="stored models (NAME:VERSION); the first is the baseline")
    parser.add_argument("--repeats", type=int, default=15, help="timed turns per model and size (default 15)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "model-speed.json", help="report file")
    args = parser.parse_args(argv)
    result = measure(args.tags, args.repeats)
    print(report(result), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
