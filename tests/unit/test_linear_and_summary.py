"""L1 linear sparsity, batch checks and summaries."""

from __future__ import annotations

import numpy as np
import pytest

from sparsity import InvalidInputError, ProbeResult, linear_sparsity
from sparsity.summary import summarize
from sparsity.validation import check_batch


def test_linear_sparsity_by_hand():
    coef = np.array([[0.0, 1.0, 2.0], [0.0, 0.0, -1.0]])  # 3 of 6 weights are zero
    x = np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
    s = linear_sparsity(coef, x)
    assert s.weights == 0.5
    # row 0: zero terms where coef is zero -> 3/6; row 1: only coef[0,1]*1 nonzero -> 5/6; row 2: all zero
    np.testing.assert_allclose(s.contributions, [3 / 6, 5 / 6, 1.0])


def test_linear_sparsity_refuses_bad_rows():
    coef = np.ones((3, 4))
    with pytest.raises(InvalidInputError, match="shape"):
        linear_sparsity(coef, np.ones((2, 3)))
    with pytest.raises(InvalidInputError, match="finite"):
        linear_sparsity(coef, np.array([[1.0, np.nan, 1.0, 1.0]]))


def test_check_batch_refuses_booleans_and_reports_first_bad_index():
    with pytest.raises(InvalidInputError, match="numbers"):
        check_batch(np.array([[True, False]]), field="rows", item_shape=(2,))
    with pytest.raises(InvalidInputError) as info:
        check_batch(np.array([[0.5, 0.5], [0.5, -0.1]]), field="rows", item_shape=(2,), low=0.0, high=1.0)
    assert info.value.field == "rows[1][1]"


def test_summary_means_stds_and_dead_ratio():
    result = ProbeResult(
        probabilities=np.zeros((2, 2)),
        layer_sparsity={"a": np.array([0.2, 0.4])},
        overall=np.array([0.1, 0.3]),
        fired={"a": np.array([[True, False, False], [True, True, False]])},
    )
    s = summarize(result)
    assert s["activation_sparsity"]["a"] == pytest.approx({"mean": 0.3, "std": 0.1})
    assert s["activation_sparsity"]["all"] == pytest.approx({"mean": 0.2, "std": 0.1})
    assert s["dead_unit_ratio"] == {"a": pytest.approx(1 / 3)}


def test_linear_probe_scales_once_and_measures_what_the_classifier_saw():
    from sparsity.linear import LinearProbe

    # a scaler x / 2 (mean 0, scale 2) and a softmax over x @ coef.T + intercept
    probe = LinearProbe([[1.0, 0.0], [0.0, 0.0]], [0.0, 0.0], [0.0, 0.0], [2.0, 2.0], value_range=(-10.0, 10.0))
    result = probe.run(np.array([[4.0, 2.0], [0.0, 6.0]]))
    np.testing.assert_array_equal(result.scaled, [[2.0, 1.0], [0.0, 3.0]])
    np.testing.assert_allclose(result.probabilities[0], [np.exp(2) / (np.exp(2) + 1), 1 / (np.exp(2) + 1)])
    assert result.labels.tolist() == [0, 0]  # row 1 ties: argmax takes the first class
    assert result.sparsity.weights == 0.75
    # row 0: only coef[0,0] * 2 is non-zero -> 3/4 zero; row 1: every term is zero
    np.testing.assert_allclose(result.sparsity.contributions, [0.75, 1.0])
    with pytest.raises(InvalidInputError, match=r"features\[1\]\[0\]: must be within"):
        probe.run(np.array([[1.0, 1.0], [11.0, 0.0]]))


def test_linear_probe_matches_scikit_learn_for_several_and_for_two_classes():
    from sklearn.datasets import load_breast_cancer, load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from sparsity.linear import LinearProbe

    for load in (load_wine, load_breast_cancer):  # 3 classes (softmax), 2 classes (one coefficient row)
        x, y = load(return_X_y=True)
        scaler = StandardScaler().fit(x)
        classifier = LogisticRegression(l1_ratio=1.0, solver="saga", C=0.5, max_iter=5000).fit(scaler.transform(x), y)
        probe = LinearProbe.from_fitted(scaler, classifier)
        expected = classifier.predict_proba(scaler.transform(x))
        np.testing.assert_allclose(probe.run(x).probabilities, expected, rtol=0, atol=1e-12)
