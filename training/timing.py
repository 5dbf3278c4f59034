"""Median time per call, measured in turns: within every repeat each candidate runs on each input
in turn, so a noisy neighbour slows them all alike. Used by the pruning report and the in-process
benchmark."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def median_ms_in_turns(
    calls: dict[str, Callable[[Any], Any]], inputs: dict[int, Any], inner: dict[int, int], repeats: int
) -> dict[str, dict[int, float]]:
    """``{call: {input key: median ms per call}}``. Every call runs once per input first (tracing,
    warm-up); each sample then times ``inner[key]`` back-to-back calls."""
    for fn in calls.values():
        for x in inputs.values():
            fn(x)
    samples: dict[str, dict[int, list[float]]] = {name: {key: [] for key in inputs} for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            for key, x in inputs.items():
                count = inner[key]
                start = time.perf_counter()
                for _ in range(count):
                    fn(x)
                samples[name][key].append((time.perf_counter() - start) / count * 1000)
    return {name: {key: float(np.median(times)) for key, times in per.items()} for name, per in samples.items()}
