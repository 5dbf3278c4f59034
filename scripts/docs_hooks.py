"""MkDocs hook: the figures that go stale are not typed into the docs by hand.

- ``<!-- table: peers -->`` and ``<!-- table: engines -->`` become the measurement tables, generated from the
  reports copied under ``docs/sparsity-lab/engines/`` (``make bench-peers``, ``make bench-engines``) by the same
  functions the benchmarks print them with, with the report's date and machine under each;
- ``{{ default.<field>[:format] }}`` becomes a figure of the default model, from
  ``docs/reference/default-model.json`` (written from its card by ``scripts/default_model_facts.py``); formats:
  a number of decimals (``:2``) or ``pct`` (a percentage with one decimal).
An unknown table or field stops the build (``make docs`` is strict).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "docs" / "sparsity-lab" / "engines"
FACTS = ROOT / "docs" / "reference" / "default-model.json"
TABLE = re.compile(r"<!-- table: (\w+) -->")
FACT = re.compile(r"\{\{ default\.([\w.]+)(?::(\w+))? \}\}")


def _measured(report: dict, path: Path, command: str) -> str:
    date = (
        report.get("date")
        or subprocess.run(
            ["git", "log", "-1", "--format=%cs", "--", str(path)], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    )
    machine = report.get("machine", "machine not recorded in this report")
    return f"*Measured {date or 'at an unknown date'} on {machine} by `{command}` ({path.relative_to(ROOT)}).*"


def table(name: str) -> str:
    if str(ROOT) not in sys.path:  # the benchmarks' table functions, whether or not PYTHONPATH names the checkout
        sys.path.insert(0, str(ROOT))  # (MkDocs puts sys.path back after importing this hook)
    if name == "peers":
        from benchmarks.peers_bench import table as peers_table

        path = REPORTS / "peers.json"
        report = json.loads(path.read_text())
        return peers_table(report["systems"]) + "\n\n" + _measured(report, path, "make bench-peers")
    if name == "engines":
        from benchmarks.engine_bench import table as engines_table

        path = REPORTS / "engines.json"
        report = json.loads(path.read_text())
        return engines_table(report) + "\n\n" + _measured(report, path, "make bench-engines")
    if name == "memory":
        path = REPORTS / "memory.json"
        report = json.loads(path.read_text())
        rows = ["| after | supervisor | workers | whole tree |", "| --- | ---: | ---: | ---: |"]
        rows += [
            f"| {s['after']} | {s['supervisor_mb']} MB | {', '.join(str(w) for w in s['worker_mb'])} MB | "
            f"{s['tree_mb']} MB |"
            for s in report["steps"]
        ]
        return "\n".join(rows) + "\n\n" + _measured(report, path, "make bench-memory")
    if name == "profile":
        from benchmarks.profile_request import table as profile_table

        path = REPORTS / "profile.json"
        report = json.loads(path.read_text())
        figures = (
            f"{report['requests_per_second']:,.0f} requests/s at {report['connections']} connection, "
            f"{report['microseconds_per_request']:.0f} us of CPU a request."
        )
        return figures + "\n\n" + profile_table(report) + "\n\n" + _measured(report, path, "make profile")
    if name == "batching":
        path = REPORTS / "batching.json"
        report = json.loads(path.read_text())
        rows = [
            "| case | batching off: req/s, p50 / p99 ms | on (the defaults) | on / off |",
            "| --- | ---: | ---: | ---: |",
        ]
        for label, case in report["cases"].items():
            off, on = case["off"], case["on"]
            cells = [
                f"{side['requests_per_second']:,.0f}, {side['p50_ms']:.2f} / {side['p99_ms']:.2f}" for side in (off, on)
            ]
            rows.append(f"| {label} | {cells[0]} | {cells[1]} | {case['ratio']:.2f}x |")
        text = "\n".join(rows)
        if report.get("overload"):
            o = report["overload"]
            statuses = ", ".join(f"{n:,} x {code}" for code, n in o["statuses"].items())
            text += (
                f"\n\nOverload, {o['seconds']} s at {o['connections']} connections (batching on): "
                f"{o['requests_per_second']:,.0f} requests/s, answered {statuses} ({o['non_2xx']} not 2xx, "
                f"{o['socket_errors']} socket errors); the next answers after it stopped took "
                f"{', '.join(f'{ms:g}' for ms in o['after_ms'])} ms (a new connection each)."
            )
        return text + "\n\n" + _measured(report, path, "make bench-batching")
    if name == "log":
        return _log_table()
    if name == "drift":
        return _drift_table()
    raise ValueError(f"no table named {name!r} (peers, engines, memory, batching, profile, log, drift)")


def _log_table() -> str:
    path = REPORTS / "prediction-log.json"
    report = json.loads(path.read_text())
    rows = [
        "| case | log off: req/s | SQLite | SQLite / off | PostgreSQL | PostgreSQL / off |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, case in report["cases"].items():
        rps, ratio = case["requests_per_second"], case["ratio"]
        rows.append(
            f"| {label} | {rps['off']:,.0f} | {rps['sqlite']:,.0f} | {ratio['sqlite']:.3f} | "
            f"{rps['postgresql']:,.0f} | {ratio['postgresql']:.3f} |"
        )
    text = "\n".join(rows)
    checks = report["checks"]
    text += "\n\n" + " ".join(
        f"{side}: {c['answered']:,} items answered, {c['rows']:,} rows in the log "
        f"({c.get('metric_dropped', 0):.0f} dropped, {c.get('metric_failed', 0):.0f} failed)."
        for side, c in checks.items()
    )
    for side, kill in report.get("kill", {}).items():
        text += (
            f"\n\n`kill -9` of a worker under load ({side}, two workers, 8 connections): {kill['answered']:,} "
            f"answers, {kill['rows']:,} rows, **{kill['lost']} lost** (a worker answers about "
            f"{kill['worker_answers_a_second']:,} a second); the database afterwards: {kill['database']}."
        )
    return text + "\n\n" + _measured(report, path, "make bench-log")


def _drift_table() -> str:
    path = REPORTS / "drift.json"
    report = json.loads(path.read_text())
    clean, drifted = report["clean"], report["drifted"]
    until = drifted["requests_until_alarm"]
    rows = [
        "| stream | windows of 500 items | alarmed | largest PSI a window (median / p99 / max) |",
        "| --- | ---: | ---: | ---: |",
        f"| clean held-back digits | {clean['windows']} | {clean['drifted']} ({100 * clean['alarm_share']:.1f}%) | "
        f"{clean['psi_median']:.3f} / {clean['psi_p99']:.3f} / {clean['psi_max']:.3f} |",
    ]
    psi = ", ".join(f"{k} {v:.2f}" for k, v in (drifted["psi"] or {}).items())
    text = "\n".join(rows) + (
        f"\n\n{100 * drifted['share_rotated']:.0f}% of the digits rotated by 90 degrees: the alert's condition held "
        f"after **{until:,} requests** (PSI then: {psi})."
        if until
        else f"\n\n{100 * drifted['share_rotated']:.0f}% rotated: the condition never held."
    )
    return text + "\n\n" + _measured(report, path, "make bench-drift")


def fact(field: str, style: str | None, facts: dict) -> str:
    value = facts
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ValueError(f"the default model's facts have no {field!r} ({FACTS.relative_to(ROOT)})")
        value = value[part]
    if style == "pct":
        return f"{100 * value:.1f}%"
    if style is not None and style.isdigit():
        return f"{value:.{int(style)}f}"
    return str(value)


def on_page_markdown(markdown: str, page, config, files) -> str:
    facts = json.loads(FACTS.read_text())
    markdown = TABLE.sub(lambda m: table(m.group(1)), markdown)
    return FACT.sub(lambda m: fact(m.group(1), m.group(2), facts), markdown)
