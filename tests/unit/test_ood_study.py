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


def test_every_study_detector_scores_a_planted_outlier_above_every_inlier():
    from benchmarks.ood_study import fit_detectors

    rng = np.random.default_rng(0)

    def make(labels: np.ndarray) -> dict:
        n = len(labels)
        patterns = np.array([[1.0, 0.0] * 5, [0.0, 1.0] * 5])  # each class lights up its own half of 10 units
        penultimate = np.maximum(patterns[labels] * 3 + rng.normal(0, 0.2, size=(n, 10)), 0)
        kernel = np.stack([patterns[0] - patterns[1], patterns[1] - patterns[0]], axis=1)
        return {
            "zeros": np.clip(0.8 + rng.normal(0, 0.02, size=(n, 2)), 0, 1),
            "shares": [np.clip(patterns[labels] * 0.6 + rng.normal(0, 0.05, size=(n, 10)), 0, 1)],
            "penultimate": penultimate,
            "logits": penultimate @ kernel,
            "kernel": kernel,
            "bias": np.zeros(2),
        }

    labels = np.repeat([0, 1], 200)
    train = make(labels)
    detectors = fit_detectors(train, labels)
    inliers = make(np.repeat([0, 1], 30))
    # the outlier: no class's pattern anywhere, dense where the inliers are sparse, weak undecided logits
    outlier = {
        "zeros": np.array([[0.3, 0.3]]),
        "shares": [np.full((1, 10), 0.3)],
        "penultimate": np.array([[0.2] + [0.0] * 9]),
        "kernel": train["kernel"],
        "bias": train["bias"],
    }
    outlier["logits"] = outlier["penultimate"] @ train["kernel"]
    both = {
        key: (
            value
            if key in ("kernel", "bias")
            else [np.concatenate([a, b]) for a, b in zip(value, outlier[key], strict=True)]
            if isinstance(value, list)
            else np.concatenate([value, outlier[key]])
        )
        for key, value in inliers.items()
    }
    assert len(detectors) == 9
    for name, detector in detectors.items():
        scores = detector(both)
        assert scores[-1] > scores[:-1].max(), name
