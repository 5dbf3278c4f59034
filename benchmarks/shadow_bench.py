"""What a shadow costs the primary: one server (2 workers) serving ``mnist_cnn``, its latest version answering,
another stored version as a 100% shadow, against no shadow, taking turns in one run.

- One image at 1 connection (the machine has headroom): the primary's p50 and p99. Target: p50 at most 10%
  higher with the shadow.
- One image at 16 connections (both cores busy): the primary's requests/s. Target: at least 90% of its
  throughput without a shadow; the shadow work that could not keep up is dropped and counted (read back from
  ``GET /models/mnist_cnn/shadow``).

The shadow's own work is counted per case (compared, dropped), read back from ``GET /models/mnist_cnn/shadow``
once its queues are empty. ``make bench`` runs it after the service benchmark; alone:
``python -m benchmarks.shadow_bench --seconds 6``.
Writes ``reports/shadow-bench.json``. Needs two stored versions of ``mnist_cnn`` (``make models`` stores the
trained and the pruned one).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import httpx

from benchmarks.load import make_bodies, wrk
from benchmarks.server import Server

ROOT = Path(__file__).resolve().parent.parent
NAME = "mnist_cnn"
KEY = "shadow-bench-key"
ROUNDS = 2
LIGHT, SATURATED = 1, 16


def versions() -> list[str]:
    """The stored versions of ``mnist_cnn``, newest first."""
    import bentoml

    found = [m for m in bentoml.models.list() if m.tag.name == NAME]
    return [str(m.tag) for m in sorted(found, key=lambda m: m.info.creation_time, reverse=True)]


def run(seconds: int, work: Path) -> dict:
    tags = versions()
    if len(tags) < 2:
        print(f"shadow benchmark skipped: the store holds {len(tags)} version(s) of {NAME}, it needs two", flush=True)
        return {"skipped": f"{len(tags)} stored version(s) of {NAME}"}
    primary, candidate = tags[0], tags[1]
    print(f"a shadow's cost: {primary} answering, {candidate} as a 100% shadow, 2 workers ...", flush=True)
    (work / "management.keys").write_text(KEY + "\n")
    env = {"SERVED_MODELS": primary, "MANAGEMENT_KEY_FILE": str(work / "management.keys")}
    bodies = make_bodies(work)
    server = Server(work / "serve-shadow.log", workers=2, env=env)
    rounds: dict[str, list[dict]] = {"none": [], "shadow": []}
    try:
        server.wait_ready()
        url = f"{server.url}/models/{NAME}/predict"
        shadow_url = f"{server.url}/models/{NAME}/shadow"
        auth = {"Authorization": f"Bearer {KEY}"}
        wrk(url, bodies["inputs1"], 2, LIGHT, work)  # warm-up
        for _ in range(ROUNDS):
            for mode in ("none", "shadow"):
                if mode == "shadow":
                    body = {"version": candidate.split(":")[1], "share": 1.0}
                    answer = httpx.put(shadow_url, json=body, headers=auth, timeout=300)
                    answer.raise_for_status()
                light = wrk(url, bodies["inputs1"], seconds, LIGHT, work)
                if mode == "shadow":
                    light["shadow"] = _settled(shadow_url, auth)
                saturated = wrk(url, bodies["inputs1"], seconds, SATURATED, work)
                row = {"light": light, "saturated": saturated}
                if mode == "shadow":
                    total = _settled(shadow_url, auth)
                    saturated["shadow"] = {k: total[k] - light["shadow"][k] for k in total}
                    row["shadow"] = httpx.delete(shadow_url, headers=auth, timeout=60).json()["inputs"]
                rounds[mode].append(row)
                print(_line(mode, row), flush=True)
    finally:
        server.stop()
    return summarise(primary, candidate, rounds)


def _settled(shadow_url: str, auth: dict, timeout: float = 60) -> dict:
    """The shadow's input counts once its queues are empty (what was mirrored is compared)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        counts = httpx.get(shadow_url, headers=auth, timeout=30).json()["inputs"]
        if counts["pending"] <= 0 or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


def _line(mode: str, row: dict) -> str:
    light, saturated = row["light"], row["saturated"]
    text = (
        f"  {mode:<7} 1 conn: p50 {light['p50_ms']:.3f} ms, p99 {light['p99_ms']:.3f} ms, "
        f"{light['requests_per_second']:.0f} req/s | {SATURATED} conn: {saturated['requests_per_second']:.0f} req/s"
    )
    for case, conn in (("light", LIGHT), ("saturated", SATURATED)):
        if "shadow" in row[case]:
            s = row[case]["shadow"]
            text += f" | shadow at {conn}: {s['compared']} compared, {s['dropped']} dropped"
    errors = sum(r["non_2xx"] + r["socket_errors"] for r in (light, saturated))
    return text + (f", {errors} errors" if errors else "")


def summarise(primary: str, candidate: str, rounds: dict[str, list[dict]]) -> dict:
    def median(mode: str, case: str, key: str) -> float:
        return statistics.median(row[case][key] for row in rounds[mode])

    figures = {
        mode: {
            "p50_ms_1_conn": median(mode, "light", "p50_ms"),
            "p99_ms_1_conn": median(mode, "light", "p99_ms"),
            f"requests_per_second_{SATURATED}_conn": median(mode, "saturated", "requests_per_second"),
        }
        for mode in rounds
    }
    for case, conn in (("light", LIGHT), ("saturated", SATURATED)):
        shadowed = [row[case]["shadow"] for row in rounds["shadow"]]
        figures["shadow"][f"inputs_{conn}_conn"] = {k: sum(s[k] for s in shadowed) for k in ("compared", "dropped")}
    p50 = figures["shadow"]["p50_ms_1_conn"] / figures["none"]["p50_ms_1_conn"]
    key = f"requests_per_second_{SATURATED}_conn"
    throughput = figures["shadow"][key] / figures["none"][key]
    checked = {
        "shadow: p50 at 1 conn over no shadow (at most 1.10)": {"value": p50, "met": p50 <= 1.10},
        f"shadow: throughput at {SATURATED} conn over no shadow (at least 0.90)": {
            "value": throughput,
            "met": throughput >= 0.90,
        },
    }
    print("shadow targets:")
    for name, t in checked.items():
        print(f"  {name:<62} {t['value']:>8.3f}  {'MET' if t['met'] else 'NOT MET'}", flush=True)
    return {"primary": primary, "candidate": candidate, "rounds": rounds, "figures": figures, "targets": checked}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=6, help="duration of each wrk run (default 6)")
    parser.add_argument("--output", type=Path, default=ROOT / "reports" / "shadow-bench.json")
    args = parser.parse_args(argv)
    result = run(args.seconds, Path(tempfile.mkdtemp(prefix="shadow-bench-")))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
