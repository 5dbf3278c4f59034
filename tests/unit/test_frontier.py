"""The sweep's arithmetic on hand-made rows: aggregates, Pareto frontier, the selection rule."""

from __future__ import annotations

import pytest

from lab.frontier import aggregate, pareto_frontier, select_default


def _p(key: str, acc: float, sparsity: float, acc_std: float = 0.0) -> dict:
    return {"point": key, "test_accuracy_mean": acc, "test_accuracy_std": acc_std, "sparsity_all_mean": sparsity}


def test_aggregate_gives_mean_and_sample_std_per_point():
    runs = [
        {"point": "a", "l1": 0.0, "seed": 0, "test_accuracy": 0.97, "sparsity_all": 0.6},
        {"point": "a", "l1": 0.0, "seed": 1, "test_accuracy": 0.99, "sparsity_all": 0.8},
        {"point": "b", "l1": 1e-4, "seed": 0, "test_accuracy": 0.95, "sparsity_all": 0.9},
    ]
    a, b = aggregate(runs, ("l1",))
    assert (a["point"], a["l1"], a["seeds"]) == ("a", 0.0, 2)
    assert a["test_accuracy_mean"] == pytest.approx(0.98)
    assert a["test_accuracy_std"] == pytest.approx(0.0141421356)  # ddof=1
    assert a["sparsity_all_mean"] == pytest.approx(0.7)
    assert b["seeds"] == 1 and b["test_accuracy_std"] == 0.0
    assert "seed_mean" not in a and "l1_mean" not in a


def test_frontier_keeps_only_undominated_points_sorted_by_sparsity():
    points = [_p("dense", 0.981, 0.69), _p("mid", 0.985, 0.85), _p("worse", 0.980, 0.80), _p("sparse", 0.975, 0.95)]
    assert [p["point"] for p in pareto_frontier(points)] == ["mid", "sparse"]


def test_rule_takes_the_sparsest_point_within_two_tenths_of_a_point():
    points = [_p("best", 0.986, 0.80), _p("close", 0.9841, 0.92), _p("too_far", 0.9835, 0.97), _p("dense", 0.981, 0.69)]
    assert select_default(points)["point"] == "close"


def test_rule_widens_to_one_seed_std_of_the_best_when_larger():
    points = [_p("best", 0.986, 0.80, acc_std=0.004), _p("within_std", 0.9825, 0.97), _p("outside", 0.9815, 0.99)]
    assert select_default(points)["point"] == "within_std"


def test_rule_with_the_best_point_also_sparsest_keeps_it():
    assert select_default([_p("a", 0.99, 0.95), _p("b", 0.985, 0.9)])["point"] == "a"


def test_rule_refuses_an_empty_sweep():
    with pytest.raises(ValueError, match="no points"):
        select_default([])
