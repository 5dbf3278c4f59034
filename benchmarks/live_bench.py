"""``make bench-live``: the live model server measured in one run (reports/live.json).

1. **Loads under traffic.** ``mnist_cnn`` served by 2 workers; 8 connections send a mix for ``--seconds``
   (one image to the project's route, 4 images through the Open Inference Protocol, 8 as ``.npy`` to the alias,
   a bad body that must get 400, a readiness check), while the answering version is switched ``--loads``
   times (the older stored version, then the latest, then the older: each load replaces). Every answer is
   checked against the version that gave it (labels and per-layer sparsity, computed in process from the
   store first). Reported: failed and wrong answers, and each load's time from request to every worker
   serving it (the load answers only then).
2. **The protocol's cost.** One image at one connection, the project's ``/models/{name}/predict`` against
   ``/v2/models/{name}/infer``, interleaved rounds on one server (1 worker), with wrk.
3. **Bounded series.** 20 toy models of 4,096 hidden units each (a store of their own, the toy kind): the
   size of ``/metrics`` with per-unit series (``MAX_UNIT_SERIES`` above the width) and with the default
   (summarised per layer), and after 10,000 requests to random paths.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.load import wrk
from benchmarks.server import ROOT, Server

MODEL = "mnist_cnn"
MANAGEMENT_KEY = "bench-management-key"


def versions_of(name: str) -> list[str]:
    """The stored versions of ``name``, oldest first."""
    import bentoml

    found = sorted((m for m in bentoml.models.list() if m.tag.name == name), key=lambda m: m.info.creation_time)
    return [str(m.tag) for m in found]


def expected_answers(tags: list[str], images: np.ndarray) -> dict[str, dict]:
    """Each version's labels and per-layer sparsity on ``images``, computed in process."""
    from modelstore.kinds import from_store

    found = {}
    for tag in tags:
        runtime = from_store(tag)
        prediction = runtime.predict(images)
        found[tag.split(":")[1]] = {
            "labels": prediction.labels.tolist(),
            "sparsity": {layer: values.tolist() for layer, values in prediction.layer_sparsity.items()},
        }
    return found


class Traffic:
    """The mixed requests, and the check of each answer against the version that gave it."""

    def __init__(self, url: str, images: np.ndarray, expected: dict[str, dict]) -> None:
        self.url, self.images, self.expected = url, images, expected
        self.counts = {"ok": 0, "failed": 0, "wrong": 0, "refused_as_expected": 0}
        self.by_version: dict[str, int] = {}
        self.problems: list[str] = []
        npy = io.BytesIO()
        np.save(npy, images[:8])
        self.requests = [
            ("own", "/models/mnist_cnn/predict", {"json": {"inputs": images[:1].tolist()}}, 1),
            ("oip", "/v2/models/mnist_cnn/infer", {"json": oip_body(images[1:5])}, 4),
            (
                "npy",
                "/mnist/predict_batch",
                {"content": npy.getvalue(), "headers": {"content-type": "application/x-npy"}},
                8,
            ),
            ("bad", "/models/mnist_cnn/predict", {"json": {"inputs": [[1.5] * 28] * 28}}, 0),
        ]

    def check(self, kind: str, response: httpx.Response, offset: int, count: int) -> None:
        if kind == "bad":
            if response.status_code == 400:
                self.counts["refused_as_expected"] += 1
            else:
                self._problem("failed", f"bad body answered {response.status_code}")
            return
        if response.status_code != 200:
            self._problem("failed", f"{kind}: {response.status_code} {response.text[:200]}")
            return
        body = response.json()
        if kind == "oip":
            version = body["model_version"]
            outputs = {o["name"]: o for o in body["outputs"]}
            labels = outputs["label"]["data"]
            layers = outputs["sparsity"]["parameters"]["layers"].split(",")
            rows = np.reshape(outputs["sparsity"]["data"], (count, len(layers)))
            sparsity = {layer: rows[:, i].tolist() for i, layer in enumerate(layers)}
        else:
            version = body["model"].split(":")[1]
            labels = [p["label"] for p in body["predictions"]]
            sparsity = {
                layer: [p["sparsity"]["layers"][layer] for p in body["predictions"]]
                for layer in body["predictions"][0]["sparsity"]["layers"]
            }
        want = self.expected.get(version)
        if want is None:
            self._problem("wrong", f"{kind}: answered by unknown version {version}")
            return
        ok = labels == want["labels"][offset : offset + count] and all(
            np.allclose(sparsity[layer], want["sparsity"][layer][offset : offset + count], atol=1e-6)
            for layer in sparsity
        )
        if not ok:
            self._problem("wrong", f"{kind}: version {version} answered labels {labels}")
            return
        self.counts["ok"] += 1
        self.by_version[version] = self.by_version.get(version, 0) + 1

    def _problem(self, what: str, text: str) -> None:
        self.counts[what] += 1
        if len(self.problems) < 20:
            self.problems.append(text)

    async def client(self, deadline: float) -> None:
        offsets = {"own": 0, "oip": 1, "npy": 0, "bad": 0}
        async with httpx.AsyncClient(base_url=self.url, timeout=60) as client:
            i = 0
            while time.monotonic() < deadline:
                kind, path, options, count = self.requests[i % len(self.requests)]
                i += 1
                try:
                    response = await client.post(path, **options)
                except httpx.HTTPError as exc:
                    self._problem("failed", f"{kind}: {type(exc).__name__} {exc}")
                    continue
                self.check(kind, response, offsets[kind], count)


def oip_body(images: np.ndarray) -> dict:
    return {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(images.shape), "data": images.ravel().tolist()}]
    }


async def loads_under_traffic(
    url: str, plan: list[dict], seconds: float, connections: int, traffic: Traffic
) -> list[dict]:
    start = time.monotonic()
    clients = [asyncio.create_task(traffic.client(start + seconds)) for _ in range(connections)]
    done = []
    async with httpx.AsyncClient(
        base_url=url, timeout=300, headers={"Authorization": f"Bearer {MANAGEMENT_KEY}"}
    ) as admin:
        for i, parameters in enumerate(plan):
            await asyncio.sleep(max(0.0, start + seconds * (i + 1) / (len(plan) + 1) - time.monotonic()))
            started = time.monotonic()
            response = await admin.post(f"/v2/repository/models/{MODEL}/load", json={"parameters": parameters})
            done.append(
                {
                    "parameters": parameters,
                    "status": response.status_code,
                    "seconds": time.monotonic() - started,
                    "answer": response.text[:300],
                }
            )
            print(f"load {parameters}: {response.status_code} in {done[-1]['seconds']:.2f} s", flush=True)
    await asyncio.gather(*clients)
    return done


def part_loads(args, work: Path) -> dict:
    tags = versions_of(MODEL)
    if len(tags) < 2:
        return {"skipped": f"needs two stored versions of {MODEL}; the store has {len(tags)} (make train adds one)"}
    old, latest = tags[-2], tags[-1]
    images = np.random.default_rng(0).random((8, 28, 28), dtype=np.float32).round(4)
    expected = expected_answers([old, latest], images)
    (work / "management.keys").write_text(MANAGEMENT_KEY + "\n")
    env = {"SERVED_MODELS": MODEL, "MANAGEMENT_KEY_FILE": str(work / "management.keys")}
    server = Server(work / "serve-live.log", workers=2, env=env)
    try:
        server.wait_ready()
        traffic = Traffic(server.url, images, expected)
        plan = [{"version": old.split(":")[1], "replace": True}, {}, {"version": old.split(":")[1], "replace": True}][
            : args.loads
        ]
        loads = asyncio.run(loads_under_traffic(server.url, plan, args.seconds, args.connections, traffic))
    finally:
        server.stop()
    return {
        "versions": {"old": old, "latest": latest},
        "seconds": args.seconds,
        "connections": args.connections,
        "answers": traffic.counts,
        "answers_by_version": traffic.by_version,
        "problems": traffic.problems,
        "loads": loads,
        "max_load_seconds": max(load["seconds"] for load in loads),
    }


def part_protocol(args, work: Path) -> dict:
    image = np.random.default_rng(1).random((1, 28, 28), dtype=np.float32).round(4)
    (work / "own.json").write_text(json.dumps({"inputs": image.tolist()}))
    (work / "oip.json").write_text(json.dumps(oip_body(image)))
    server = Server(work / "serve-protocol.log", workers=1, env={"SERVED_MODELS": MODEL})
    rounds = {"own": [], "oip": []}
    try:
        server.wait_ready()
        paths = {"own": f"/models/{MODEL}/predict", "oip": f"/v2/models/{MODEL}/infer"}
        for name, path in paths.items():
            wrk(server.url + path, (work / f"{name}.json", "application/json"), 2, 1, work)  # warm-up
        for _ in range(args.rounds):
            for name, path in paths.items():
                r = wrk(server.url + path, (work / f"{name}.json", "application/json"), args.round_seconds, 1, work)
                assert r["non_2xx"] == 0 and r["socket_errors"] == 0, r
                rounds[name].append(r["requests_per_second"])
    finally:
        server.stop()
    own, oip = float(np.median(rounds["own"])), float(np.median(rounds["oip"]))
    return {"rounds": rounds, "own_median_rps": own, "oip_median_rps": oip, "oip_over_own": oip / own, "target": 0.9}


def register_wide_models(store: Path, count: int, units: int) -> list[str]:
    """``count`` toy MLPs of ``units`` hidden units, registered into ``store`` with the toy kind."""
    import subprocess

    env = {"BENTOML_HOME": str(store), "MODEL_KINDS": "tests.toy_kind", "PYTHONPATH": str(ROOT)}
    calibration = store.parent / "wide-cal.npy"
    np.save(calibration, np.random.default_rng(5).random((200, 4)).astype(np.float32))
    for i in range(count):
        rng = np.random.default_rng(100 + i)
        path = store.parent / f"wide_{i}.npz"
        np.savez(
            path,
            w1=rng.normal(size=(4, units)),
            b1=rng.normal(size=units) - 0.5,
            w2=rng.normal(size=(units, 3)),
            b2=np.zeros(3),
        )
        args = [
            sys.executable,
            "-m",
            "modelstore",
            "register",
            str(path),
            "--name",
            f"wide_{i}",
            "--calibration",
            str(calibration),
            "--input-range",
            "0",
            "1",
        ]
        subprocess.run(args, env={**__import__("os").environ, **env}, cwd=ROOT, check=True, capture_output=True)
    return [f"wide_{i}" for i in range(count)]


def metrics_size(url: str) -> dict:
    text = httpx.get(f"{url}/metrics", timeout=60).text
    series = [line for line in text.splitlines() if line and not line.startswith("#")]
    return {
        "bytes": len(text.encode()),
        "series": len(series),
        "request_series": sum(s.startswith("bentoml_service_request") for s in series),
    }


def part_series(args, work: Path) -> dict:
    store = work / "wide-store"
    names = register_wide_models(store, args.models, args.units)
    found = {}
    for label, limit in (("per_unit", args.models * args.units), ("default_limit", None)):
        env = {"BENTOML_HOME": str(store), "MODEL_KINDS": "tests.toy_kind"}
        if limit is not None:
            env["MAX_UNIT_SERIES"] = str(limit)
        server = Server(work / f"serve-series-{label}.log", workers=1, env=env)
        try:
            server.wait_ready(timeout=300)
            with httpx.Client(base_url=server.url, timeout=30) as client:
                for name in names:
                    assert (
                        client.post(f"/models/{name}/predict", json={"inputs": [[0.5, 0.5, 0.5, 0.5]]}).status_code
                        == 200
                    )
                time.sleep(1.5)  # the per-unit counts are flushed every second
                loaded = metrics_size(server.url)
                rng = np.random.default_rng(7)
                started = time.monotonic()
                for i in range(args.random_paths):
                    client.get(f"/{rng.integers(1 << 40):x}/{i}")
                after = metrics_size(server.url)
            found[label] = {
                "max_unit_series": limit or "default",
                "loaded": loaded,
                "after_random_paths": after,
                "random_paths": args.random_paths,
                "random_paths_seconds": time.monotonic() - started,
            }
            print(f"series ({label}): {loaded} -> {after}", flush=True)
        finally:
            server.stop()
    return {"models": args.models, "units_per_model": args.units, **found}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round-seconds", type=int, default=10)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--units", type=int, default=4096)
    parser.add_argument("--random-paths", type=int, default=10_000)
    parser.add_argument("--parts", default="loads,protocol,series")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "live.json")
    args = parser.parse_args(argv)
    work = args.out.parent / "live"
    work.mkdir(parents=True, exist_ok=True)
    report = {"machine": {"cpus": __import__("os").cpu_count()}}
    parts = {"loads": part_loads, "protocol": part_protocol, "series": part_series}
    for name in args.parts.split(","):
        report[name] = parts[name](args, work)
        args.out.write_text(json.dumps(report, indent=2))
        print(json.dumps({name: report[name]}, indent=1)[:3000], flush=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
