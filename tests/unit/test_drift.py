"""Drift over windows (:mod:`sparsity.drift`) and the service's windows and log writer (:mod:`service.logbook`)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from predlog.rows import Entry
from predlog.store import open_store
from service.logbook.drift import DriftMonitors
from service.logbook.writer import LogWriter, size_of
from sparsity.drift import ALARM, SCORE, Bins, Window, baseline_of, psi


def test_baseline_bins_hold_their_quantile_shares_and_merge_repeated_edges():
    values = np.random.default_rng(0).normal(size=10_000)
    bins = baseline_of(values)
    assert len(bins.shares) == len(bins.edges) + 1 == 12
    assert sum(bins.shares) == pytest.approx(1.0)
    assert bins.shares[-1] == pytest.approx(0.01, abs=0.002) and bins.shares[0] == pytest.approx(0.1, abs=0.002)
    discrete = baseline_of(np.repeat([0.5, 0.75, 1.0], [600, 300, 100]))
    assert len(discrete.edges) < 11 and sum(discrete.shares) == pytest.approx(1.0)
    assert Bins.from_dict(bins.to_dict()) == bins
    with pytest.raises(ValueError):
        baseline_of(np.array([np.nan]))


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(1)
    bins = baseline_of(rng.normal(size=20_000))
    same = psi(bins.counts(rng.normal(size=500)), bins.shares)
    shifted = psi(bins.counts(rng.normal(loc=1.0, size=500)), bins.shares)
    assert same < 0.1 < ALARM < shifted


def test_a_minority_beyond_the_tail_moves_the_index_over_the_alarm():
    rng = np.random.default_rng(2)
    bins = baseline_of(rng.normal(size=20_000))
    mixed = np.concatenate([rng.normal(size=400), rng.normal(loc=6.0, size=100)])  # 20% far out
    assert psi(bins.counts(mixed), bins.shares) > ALARM


def test_windows_close_every_size_items_whatever_the_batches():
    rng = np.random.default_rng(3)
    window = Window({"a": baseline_of(rng.normal(size=5000))}, size=100)
    closed = []
    for n in (30, 50, 1, 119, 250):
        closed += window.add({"a": rng.normal(size=n)})
    assert len(closed) == 4 and window.items == 50
    assert all(set(c) == {"a"} for c in closed)


def runtime_with_baseline(rng):
    card = SimpleNamespace(drift_baseline={
        "conv1": baseline_of(rng.uniform(0.9, 1.0, 5000)).to_dict(),
        SCORE: baseline_of(rng.gamma(2.0, 2.0, 5000)).to_dict(),
    })  # fmt: skip
    return SimpleNamespace(name="m", version="v1", card=card)


def predictions(rng, n, strange=0.0):
    far = rng.random(n) < strange
    scores = np.where(far, rng.uniform(60, 80, n), rng.gamma(2.0, 2.0, n))
    return SimpleNamespace(layer_sparsity={"conv1": rng.uniform(0.9, 1.0, n)}, scores=scores)


def test_monitors_export_each_closed_window_and_say_when_it_drifted():
    rng = np.random.default_rng(4)
    monitors = DriftMonitors(window=200)
    monitors.watch(runtime_with_baseline(rng))
    monitors.add("m", "v1", predictions(rng, 200))
    clean = monitors.state("m", "v1")["last"]
    assert clean["drifted"] is False and max(clean["psi"].values()) < ALARM
    monitors.add("m", "v1", predictions(rng, 200, strange=0.2))
    assert monitors.state("m", "v1")["last"]["drifted"] is True
    monitors.add("unknown", "v1", predictions(rng, 10))  # a version without a baseline: nothing
    assert monitors.state("unknown", "v1") is None


def entry_of(n, rng):
    p = predictions(rng, n)
    probabilities = rng.dirichlet(np.ones(3), n)
    p.probabilities, p.labels, p.overall = probabilities, probabilities.argmax(1), p.layer_sparsity["conv1"]
    p.atypical, p.contributions = np.zeros(n, bool), None
    return Entry(time.time(), "r", "m", "v1", "primary", "/models/{name}/predict", rng.uniform(0, 1, (n, 4)), p, 0.001)


def test_the_writer_writes_what_is_queued_and_counts_the_drift(tmp_path):
    rng = np.random.default_rng(5)
    path = str(tmp_path / "log.sqlite3")
    writer = LogWriter(lambda: open_store(path), monitors=DriftMonitors(window=50))
    writer.monitors.watch(runtime_with_baseline(rng))
    writer.offer(entry_of(3, rng))  # not started: nothing is kept
    writer._thread = object()  # as if started (the thread itself is exercised by the integration tests)
    for _ in range(20):
        writer.offer(entry_of(3, rng))
    assert writer.flush() == 60
    assert open_store(path).count("m") == 60
    assert writer.monitors.state("m", "v1")["open_items"] == 10


def test_a_full_queue_drops_and_counts_and_a_failing_database_costs_rows_not_answers(tmp_path):
    rng = np.random.default_rng(6)
    entries = [entry_of(3, rng) for _ in range(5)]
    writer = LogWriter(lambda: open_store(str(tmp_path / "x.sqlite3")), max_queue_bytes=3 * size_of(entries[0]))
    writer._thread = object()
    for entry in entries:
        writer.offer(entry)  # 3 fit
    assert len(writer._queue) == 3 and writer._dropped == 6
    assert writer.flush() == 9 and writer._dropped == 0

    def broken():
        raise OSError("disk on fire")

    failing = LogWriter(broken)
    failing._thread = object()
    failing.offer(entry_of(4, rng))
    assert failing.flush() == 4 and failing.failed == 4 and failing.written == 0


def test_an_entry_holds_the_inputs_only_when_one_will_be_stored_and_no_per_unit_arrays():
    rng = np.random.default_rng(7)
    prediction = entry_of(3, rng).prediction
    prediction.fired, prediction.shares = {"conv1": np.ones((3, 32), bool)}, {"conv1": np.ones((3, 32))}
    x = rng.uniform(0, 1, (3, 4))
    writer = LogWriter(None)  # inputs of atypical items (the default)
    kept_x, kept = writer.kept(x, prediction)
    assert kept_x is None and not hasattr(kept, "fired") and not hasattr(kept, "shares")
    prediction.atypical = np.array([False, True, False])
    assert writer.kept(x, prediction)[0] is x
    assert LogWriter(None, inputs="none").kept(x, prediction)[0] is None
    assert LogWriter(None, inputs="all").kept(x, entry_of(3, rng).prediction)[0] is x
