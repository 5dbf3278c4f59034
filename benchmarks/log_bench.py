"""The prediction log's cost and its safety, on real servers (``make bench-log``):

1. Throughput with the log off, on SQLite (the default) and on a real PostgreSQL server, every item logged (the
   inputs of atypical items only, the defaults): one real digit a request at 1 and 8 connections, one worker,
   rounds in alternating order; every logged case checked afterwards (rows written = items answered, none
   dropped or failed).
2. ``kill -9`` of a worker under load (two workers, 8 connections), on each database: the database checked
   (SQLite's ``integrity_check``), and the rows lost counted: answers the clients got minus rows in the log,
   against what the killed worker answers in a second.

Writes ``reports/prediction-log.json``.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.load import digit_body, wrk
from benchmarks.postgres import fresh_database, postgres_server
from benchmarks.reports import write_report
from benchmarks.server import ROOT, Server
from predlog.store import open_store

CONNECTIONS = (1, 8)


def log_rows(server: Server) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    return {
        s.labels["outcome"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "prediction_log_rows_total"
    }


def workers_of(server: Server) -> list[int]:
    """The PIDs of the server's worker processes (``bentoml serve``'s descendants with a worker id)."""
    import psutil

    tree = psutil.Process(server.proc.pid).children(recursive=True)
    return [p.pid for p in tree if any(arg.startswith("--worker-id") for arg in p.cmdline())]


def throughput(args, work: Path, pg_url: str) -> dict:
    body = digit_body(work)
    settings = {
        "off": {"PREDICTION_LOG": "false"},
        "sqlite": {"PREDICTION_LOG_URL": str(work / "bench.sqlite3")},
        "postgresql": {"PREDICTION_LOG_URL": fresh_database(pg_url, "bench_log")},
    }
    servers = {side: Server(work / f"{side}.log", env={"SERVED_MODELS": "mnist_cnn", **env})
               for side, env in settings.items()}  # fmt: skip
    runs: dict[str, dict[str, list[dict]]] = {}
    checks = {}
    try:
        for server in servers.values():
            server.wait_ready()
        for round_ in range(args.rounds):
            order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
            for connections in CONNECTIONS:
                for side in order:
                    result = wrk(f"{servers[side].url}/models/mnist_cnn/predict", body, args.seconds, connections, work)
                    runs.setdefault(f"1 image, {connections} conn", {}).setdefault(side, []).append(result)
        time.sleep(1.0)  # the writers' last flush
        for side in ("sqlite", "postgresql"):
            answered = sum(r["requests"] - r["non_2xx"] for case in runs.values() for r in case[side])
            rows = open_store(settings[side]["PREDICTION_LOG_URL"]).count("mnist_cnn")
            counted = log_rows(servers[side])
            checks[side] = {"answered": answered, "rows": rows, **{f"metric_{k}": v for k, v in counted.items()}}
    finally:
        for server in servers.values():
            server.stop()
    cases = {}
    print(f"{'case':<22}" + "".join(f"{h:>12}" for h in ("off req/s", "sqlite", "ratio", "postgresql", "ratio")))
    for label, sides in runs.items():
        figures = {
            side: statistics.median(r["requests_per_second"] for r in results) for side, results in sides.items()
        }
        p99 = {side: statistics.median(r["p99_ms"] for r in results) for side, results in sides.items()}
        # each round's ratio against the log-off run next to it in time, then their median: this machine's speed
        # drifts over a run by more than the difference measured
        per_round = {}
        for side in ("sqlite", "postgresql"):
            pairs = zip(sides[side], sides["off"], strict=True)
            per_round[side] = [a["requests_per_second"] / b["requests_per_second"] for a, b in pairs]
        ratios = {side: statistics.median(values) for side, values in per_round.items()}
        cases[label] = {"requests_per_second": figures, "p99_ms": p99, "ratio": ratios, "round_ratios": per_round}
        print(f"{label:<22}{figures['off']:>12,.0f}{figures['sqlite']:>12,.0f}{ratios['sqlite']:>12.3f}"
              f"{figures['postgresql']:>12,.0f}{ratios['postgresql']:>12.3f}")  # fmt: skip
    for side, check in checks.items():
        print(f"{side}: {check['answered']:,} items answered, {check['rows']:,} rows in the log, "
              f"dropped {check.get('metric_dropped', 0):.0f}, failed {check.get('metric_failed', 0):.0f}")  # fmt: skip
    return {"cases": cases, "checks": checks}


def killed(args, work: Path, side: str, where: str) -> dict:
    """Two workers under load; one is killed with SIGKILL halfway; rows lost and the database's state."""
    body = digit_body(work)
    server = Server(
        work / f"kill-{side}.log", workers=2, env={"SERVED_MODELS": "mnist_cnn", "PREDICTION_LOG_URL": where}
    )
    try:
        server.wait_ready()
        before = open_store(where).count("mnist_cnn")
        result: dict = {}
        load = threading.Thread(target=lambda: result.update(
            wrk(f"{server.url}/models/mnist_cnn/predict", body, args.kill_seconds, 8, work)))  # fmt: skip
        load.start()
        time.sleep(args.kill_seconds / 2)
        victim = workers_of(server)[0]
        os.kill(victim, signal.SIGKILL)
        load.join()
        time.sleep(1.5)  # the surviving worker's (and a restarted one's) last flush
        rows = open_store(where).count("mnist_cnn") - before
    finally:
        server.stop()
    answered = result["requests"] - result["non_2xx"]
    per_worker_second = answered / args.kill_seconds / 2
    figures = {"answered": answered, "rows": rows, "lost": answered - rows, "killed_pid": victim,
               "socket_errors": result["socket_errors"],
               "worker_answers_a_second": round(per_worker_second)}  # fmt: skip
    if where.startswith("postgres"):
        figures["database"] = "ok (every write a transaction; the server never saw the worker die mid-commit)"
    else:
        import sqlite3

        with sqlite3.connect(where) as connection:
            figures["database"] = connection.execute("PRAGMA integrity_check").fetchone()[0]
    figures["lost_within_a_second"] = figures["lost"] <= per_worker_second
    print(f"kill -9 ({side}): {answered:,} answered, {rows:,} rows, {figures['lost']} lost (a worker answers "
          f"{per_worker_second:,.0f} a second); database: {figures['database']}")  # fmt: skip
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--kill-seconds", type=int, default=8, help="0: no kill -9 runs")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "prediction-log.json")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-log-"))
    with postgres_server() as pg_url:
        speed = throughput(args, work, pg_url)
        kills = {}
        if args.kill_seconds:
            kills = {
                "sqlite": killed(args, work, "sqlite", str(work / "kill.sqlite3")),
                "postgresql": killed(args, work, "postgresql", fresh_database(pg_url, "bench_kill")),
            }
    write_report(args.out, seconds=args.seconds, rounds=args.rounds, **speed, kill=kills)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
