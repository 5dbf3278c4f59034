"""The study's scoring (AUROC, FPR at 95% TPR) by hand, and its detectors on a planted outlier."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.ood_study import auroc, class_mahalanobis, energy, fpr_at_95_tpr, knn, mahalanobis


def test_auroc_is_the_share_of_pairs_ordered_right_ties_counting_half():
    assert auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 0.0
    assert auroc(np.array([0.0, 2.0]), np.array([1.0, 3.0])) == 0.75
    assert auroc(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.5


def test_fpr95_is_the_share_of_inliers_above_the_threshold_that_catches_95_percent():
    inside = np.arange(100, dtype=float)  # 0..99
    outside = np.arange(50, 150, dtype=float)  # the 5% quantile is 54.95
    assert fpr_at_95_tpr(inside, outside) == pytest.approx(0.45)


@pytest.mark.parametrize("make", ["mahalanobis", "class", "knn"])
def test_a_planted_outlier_scores_above_every_inlier(make):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 200)
    train = rng.normal(size=(400, 5)) + 4.0 + labels[:, None] * 3.0  # two clusters away from the origin
    score = {
        "mahalanobis": lambda: mahalanobis(train),
        "class": lambda: class_mahalanobis(train, labels),
        "knn": lambda: knn(train, k=5),
    }[make]()
    inliers = rng.normal(size=(50, 5)) + 4.0 + np.repeat([0, 1], 25)[:, None] * 3.0
    outlier = np.array([[-4.0, 4.0, -4.0, 4.0, 0.0]])  # far in distance and in direction (KNN normalises)
    scores = score(np.concatenate([inliers, outlier]))
    assert scores[-1] > scores[:-1].max()
    again = {"mahalanobis": mahalanobis(train), "class": class_mahalanobis(train, labels), "knn": knn(train, 5)}[make]
    np.testing.assert_array_equal(again(outlier), score(outlier))  # reproducible from what it was fitted on


def test_energy_is_minus_logsumexp():
    logits = np.array([[1.0, 2.0, 3.0]])
    assert energy(logits)[0] == pytest.approx(-np.log(np.exp(1) + np.exp(2) + np.exp(3)))
