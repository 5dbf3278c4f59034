"""The soak of ``make soak``, one minute long: a real two-worker serve under mixed valid and invalid
traffic must pass every criterion (no 5xx, no connection error, right answers, flat memory and
latency). ``make soak`` runs the same code for five minutes."""

from __future__ import annotations

import json
import sys

import pytest

from tests.tools import run_in_project

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_one_minute_soak_passes(trained, tmp_path):
    report = tmp_path / "soak.json"
    out = run_in_project([sys.executable, "-m", "benchmarks.soak", "--seconds", "60", "--report", str(report)])
    table = out.stdout[out.stdout.find("criterion") :]
    print(table)
    result = json.loads(report.read_text())
    assert out.returncode == 0 and result["passed"], table + out.stderr[-3000:]
    assert [c["met"] for c in result["criteria"]] == [True] * 6
    # every kind of request was sent, and the answers were really checked
    assert all(count > 0 for count in result["per_kind"].values()), result["per_kind"]
    assert result["samples"]["checked"] >= 50 and len(result["worker_rss_growth"]) == 2
