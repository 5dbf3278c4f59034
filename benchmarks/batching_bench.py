"""What batching gains on its own: ``make bench-batching`` (reports/batching.json).

Two servers of this checkout, one worker each, the same models: one with batching off (``BATCH_MAX_SIZE=1``), one
with the defaults. wrk sends one real digit a request at 1, 8 and 32 connections, to ``mnist_cnn`` and, when the
store has it, ``mnist_resnet``; the cases alternate between the two servers for several rounds so the machine's
noise falls on both alike, and each reports both medians and their ratio (on / off). The answers of both are
checked equal first.

Usage: ``python -m benchmarks.batching_bench --seconds 5 --rounds 3``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.load import JSON, client_latency, digit_body, wrk
from benchmarks.reports import write_report
from benchmarks.server import ROOT, Server

CONNECTIONS = (1, 8, 32)


def statuses(server: Server) -> dict[str, float]:
    """The answers of the generic prediction route so far, by status (BentoML's request series)."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics", timeout=30).text):
        for sample in family.samples:
            if sample.name == "bentoml_service_request_total" and sample.labels["endpoint"] == "/models/{name}/predict":
                code = sample.labels["http_response_code"]
                found[code] = found.get(code, 0.0) + sample.value
    return found


def overloaded(server: Server, body, model: str, seconds: int, work: Path) -> dict | None:
    """``seconds`` of one-image requests at 64 connections, then how long the next answers take: what a worker
    answers under overload (the queue's 503s, never a 5xx) and how soon it is itself again."""
    if seconds <= 0:
        return None
    before = statuses(server)
    url = f"{server.url}/models/{model}/predict"
    load = wrk(url, body, seconds, 64, work)
    after_ms = []
    for _ in range(5):
        start = time.perf_counter()
        answer = httpx.post(url, content=body[0].read_bytes(), headers={"content-type": JSON}, timeout=30)
        after_ms.append(round((time.perf_counter() - start) * 1000, 2))
        assert answer.status_code == 200, answer.text[:300]
    counts = {code: n - before.get(code, 0.0) for code, n in statuses(server).items()}
    return {"seconds": seconds, "connections": 64, "requests_per_second": load["requests_per_second"],
            "statuses": {code: int(n) for code, n in sorted(counts.items()) if n}, "after_ms": after_ms,
            "non_2xx": load["non_2xx"], "socket_errors": load["socket_errors"]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--overload-seconds", type=int, default=60, help="64 connections at once (0: skip)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "batching.json")
    args = parser.parse_args(argv)
    from modelstore.audit import latest_tag

    models = [name for name in ("mnist_cnn", "mnist_resnet") if latest_tag(name)]
    work = Path(tempfile.mkdtemp(prefix="bench-batching-"))
    bodies = {name: digit_body(work, name) for name in models}
    served = {"SERVED_MODELS": ",".join(models)}
    servers = {
        "off": Server(work / "off.log", env={**served, "BATCH_MAX_SIZE": "1"}),
        "on": Server(work / "on.log", env=served),
    }
    runs: dict[str, dict[str, list[dict]]] = {}
    try:
        for server in servers.values():
            server.wait_ready()
        for name in models:
            answers = {
                side: httpx.post(f"{s.url}/models/{name}/predict", content=bodies[name][0].read_bytes(),
                                 headers={"content-type": JSON}, timeout=30).content
                for side, s in servers.items()
            }  # fmt: skip
            assert answers["on"] == answers["off"], f"{name}: batching changed the answer"
        for round_ in range(args.rounds):
            for name in models:
                for connections in CONNECTIONS:
                    label = f"{name}, 1 image, {connections} conn"
                    for side in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
                        url = f"{servers[side].url}/models/{name}/predict"
                        result = wrk(url, bodies[name], args.seconds, connections, work)
                        if not result["latency_consistent"]:  # wrk's percentiles do not hold up: a second client's
                            result |= client_latency(url, bodies[name], args.seconds, connections)
                        runs.setdefault(label, {"off": [], "on": []})[side].append(result)
        overload = overloaded(servers["on"], bodies[models[0]], models[0], args.overload_seconds, work)
    finally:
        for server in servers.values():
            server.stop()
    cases = {}
    head = ("case", "off req/s", "on req/s", "ratio", "p50 off", "p50 on", "p99 off", "p99 on")
    print(f"{head[0]:<34}" + "".join(f"{h:>10}" for h in head[1:]))
    for label, sides in runs.items():
        figures = {
            side: {
                key: statistics.median(r[key] for r in results) for key in ("requests_per_second", "p50_ms", "p99_ms")
            }
            for side, results in sides.items()
        }
        off, on = figures["off"], figures["on"]
        ratio = on["requests_per_second"] / off["requests_per_second"]
        cases[label] = {**figures, "ratio": ratio, "non_2xx": sum(r["non_2xx"] for s in sides.values() for r in s)}
        cells = (off["requests_per_second"], on["requests_per_second"])
        print(f"{label:<34}{cells[0]:>10,.0f}{cells[1]:>10,.0f}{ratio:>10.3f}{off['p50_ms']:>10.2f}{on['p50_ms']:>10.2f}"
              f"{off['p99_ms']:>10.2f}{on['p99_ms']:>10.2f}")  # fmt: skip
    report = {"seconds": args.seconds,
              "rounds": args.rounds, "cases": cases, "overload": overload}  # fmt: skip
    if overload:
        print(f"overload, {overload['seconds']} s at {overload['connections']} connections: "
              f"{overload['requests_per_second']:,.0f} req/s, answers by status {overload['statuses']}; after it "
              f"stopped, the next answers took {overload['after_ms']} ms")  # fmt: skip
    write_report(args.out, **report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
