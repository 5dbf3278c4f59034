"""The sweep's arithmetic, free of TensorFlow: per-point aggregates, the Pareto frontier and the rule
that picks the default model.

A *point* is a dict with at least ``point`` (its key), ``test_accuracy_mean``, ``test_accuracy_std``
and ``sparsity_all_mean``.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

ACCURACY_TOLERANCE = 0.002
"""0.2 points of accuracy: how far below the best mean a point may be and still be chosen."""

SELECTION_RULE = (
    "the sparsest point (overall activation sparsity, mean over seeds) whose mean accuracy is within "
    "0.2 points of the best mean accuracy of the sweep, or within one seed standard deviation of the "
    "best point if that is larger"
)


def aggregate(runs: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """One row per point: the point's descriptive fields from its first run, then mean and standard
    deviation (over seeds, ddof=1; 0 for a single seed) of every numeric field not in ``keys``."""
    by_point: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        by_point[run["point"]].append(run)
    points = []
    for key, group in by_point.items():
        row = {k: group[0][k] for k in keys if k in group[0]}
        row["point"] = key
        row["seeds"] = len(group)
        numeric = [k for k, v in group[0].items() if k not in keys and k not in ("point", "seed") and _is_number(v)]
        for field in numeric:
            values = np.array([r[field] for r in group if field in r], dtype=np.float64)
            row[f"{field}_mean"] = float(values.mean())
            row[f"{field}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        points.append(row)
    return points


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def pareto_frontier(points: list[dict], x: str = "sparsity_all_mean", y: str = "test_accuracy_mean") -> list[dict]:
    """Points that no other point beats on both ``x`` and ``y`` (higher is better for both),
    sorted by ``x``."""
    frontier = []
    for p in points:
        dominated = any(q is not p and q[x] >= p[x] and q[y] >= p[y] and (q[x] > p[x] or q[y] > p[y]) for q in points)
        if not dominated:
            frontier.append(p)
    return sorted(frontier, key=lambda p: p[x])


def select_default(points: list[dict], tolerance: float = ACCURACY_TOLERANCE) -> dict:
    """Apply :data:`SELECTION_RULE`; returns the chosen point."""
    if not points:
        raise ValueError("no points to choose from")
    best = max(points, key=lambda p: p["test_accuracy_mean"])
    margin = max(tolerance, best.get("test_accuracy_std", 0.0))
    eligible = [p for p in points if p["test_accuracy_mean"] >= best["test_accuracy_mean"] - margin - 1e-12]
    return max(eligible, key=lambda p: (p["sparsity_all_mean"], p["test_accuracy_mean"]))
