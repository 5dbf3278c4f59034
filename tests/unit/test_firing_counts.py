"""Per-unit firing counts: added up in memory, written to the counters in one flush."""

from __future__ import annotations

import numpy as np

from service.observability.pending import FiringCounts


class FakeCounter:
    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        assert amount > 0  # a unit that did not fire is never written
        self.value += amount


def test_counts_are_exact_sums_and_written_only_on_flush():
    samples = FakeCounter()
    units = {"conv": [FakeCounter() for _ in range(3)], "dense": [FakeCounter() for _ in range(2)]}
    counts = FiringCounts(samples, units, interval=3600)
    counts.add({"conv": np.array([[1, 0, 0], [1, 1, 0]], bool), "dense": np.array([[0, 1], [0, 1]], bool)})
    counts.add({"conv": np.array([[1, 0, 0]], bool), "dense": np.array([[0, 1]], bool)})
    assert samples.value == 0 and units["conv"][0].value == 0  # nothing written before the flush
    counts.flush()
    assert samples.value == 3
    assert [c.value for c in units["conv"]] == [3, 1, 0]
    assert [c.value for c in units["dense"]] == [0, 3]
    counts.flush()  # nothing pending: nothing written twice
    assert samples.value == 3 and [c.value for c in units["conv"]] == [3, 1, 0]


def test_the_background_flush_writes_within_its_interval():
    import time

    samples, unit = FakeCounter(), FakeCounter()
    counts = FiringCounts(samples, {"layer": [unit]}, interval=0.05)
    counts.add({"layer": np.array([[True], [False]])})
    deadline = time.monotonic() + 5
    while samples.value == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (samples.value, unit.value) == (2, 1)
