"""Batched metric writes give exactly what one write per value gives."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from service.observability.metrics import RATIO_BUCKETS, inc_by_label, observe_many


def _exposition(fill) -> str:
    registry = CollectorRegistry()
    hist = Histogram("h", "h", ["layer"], buckets=RATIO_BUCKETS, registry=registry)
    counter = Counter("c", "c", ["label"], registry=registry)
    fill(hist.labels("conv1"), [counter.labels(str(i)) for i in range(4)])
    return generate_latest(registry).decode()


def test_observe_many_and_inc_by_label_equal_one_write_per_value():
    rng = np.random.default_rng(0)
    # bucket edges exactly (a value equal to a bound belongs to that bucket), 0, and above the last bound
    values = np.concatenate([rng.random(500), [0.0, 0.05, 0.1, 0.95, 1.0, 1.5, 0.35]])
    labels = rng.integers(0, 4, size=300)
    labels[:3] = 2  # one label more frequent than the rest

    def loop(hist, children):
        for v in values.tolist():
            hist.observe(v)
        for label in labels.tolist():
            children[label].inc()

    def batched(hist, children):
        observe_many(hist, values[:200])
        observe_many(hist, values[200:])
        observe_many(hist, np.array([]))
        inc_by_label(children, labels)

    looped, batch = _exposition(loop), _exposition(batched)
    assert "h_bucket" in looped and 'c_total{label="2"}' in looped

    # sums may differ in the last float digit (summation order); compare all else exactly
    def strip(text):
        return [line for line in text.splitlines() if not line.startswith(("h_sum", "h_created", "c_created"))]

    assert strip(looped) == strip(batch)
    sum_line = lambda text: float(next(line for line in text.splitlines() if line.startswith("h_sum")).split()[-1])  # noqa: E731
    assert abs(sum_line(looped) - sum_line(batch)) < 1e-9


def test_pending_figures_written_on_flush_equal_one_write_per_value():
    """service.observability.pending: what a worker holds in memory and writes in one go is what one observe or
    inc per value writes, one value at a time (the one-image path) or many (a batch), and nothing before a flush."""
    from service.observability.pending import PendingCounter, PendingHistogram

    rng = np.random.default_rng(1)
    values = np.concatenate([rng.random(300), [0.0, 0.05, 0.1, 0.95, 1.0, 1.5, 0.35]])
    labels = rng.integers(0, 4, size=120)

    def loop(hist, children):
        for v in values.tolist():
            hist.observe(v)
        for label in labels.tolist():
            children[label].inc()

    def pending(hist, children):
        histogram, counters = PendingHistogram(hist), [PendingCounter(child) for child in children]
        for v in values[:100].tolist():
            histogram.add(v)
        histogram.add_many(values[100:])
        histogram.add_many(np.array([]))
        for label in labels.tolist():
            counters[label].count += 1
        assert hist._buckets[0].get() == 0 and children[int(labels[0])]._value.get() == 0  # nothing written yet
        histogram.flush()
        for counter in counters:
            counter.flush()
        histogram.flush()  # nothing pending: nothing written twice
        for counter in counters:
            counter.flush()

    def strip(text):
        return [line for line in text.splitlines() if not line.startswith(("h_sum", "h_created", "c_created"))]

    looped, flushed = _exposition(loop), _exposition(pending)
    assert strip(looped) == strip(flushed)
    sum_line = lambda text: float(next(line for line in text.splitlines() if line.startswith("h_sum")).split()[-1])  # noqa: E731
    assert abs(sum_line(looped) - sum_line(flushed)) < 1e-9
