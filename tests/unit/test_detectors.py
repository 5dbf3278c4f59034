"""The served typicality detectors (sparsity.detectors): what they compute, against a direct computation;
a planted outlier; their saved state (reproducible, refused when altered)."""

from __future__ import annotations

import numpy as np
import pytest

from sparsity.detectors import (
    STATE_FILE,
    ClassMahalanobis,
    DetectorStateError,
    ProfileMahalanobis,
    UnitFiring,
    load_detector,
    sha256,
    shrunk_precision,
)
from sparsity.typicality import TypicalityModel

UNITS = [3, 5, 8]


@pytest.fixture(scope="module")
def fixture_shares():
    """Per-unit on-shares of three layers for two classes: each class has its own firing pattern."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 150)
    pattern = rng.random((2, sum(UNITS)))
    shares = np.clip(pattern[labels] + rng.normal(0, 0.05, size=(300, sum(UNITS))), 0, 1)
    return shares, labels, pattern


def test_class_mahalanobis_is_the_smallest_distance_to_a_class_mean_under_the_shared_precision():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2], 40)
    x = rng.normal(size=(120, 4)) + labels[:, None] * 2.0
    fitted = ClassMahalanobis.fit(x, labels)
    means = np.stack([x[labels == c].mean(0) for c in range(3)])
    precision = shrunk_precision(x - means[labels])
    probe = rng.normal(size=(7, 4)) * 3
    direct = np.array([min((p - m) @ precision @ (p - m) for m in means) for p in probe])
    np.testing.assert_allclose(fitted.scores(probe), direct, rtol=1e-9)


def test_unit_firing_is_the_sum_of_standardised_per_layer_class_distances(fixture_shares):
    shares, labels, _ = fixture_shares
    detector = UnitFiring.fit(shares, UNITS, labels)
    probe = np.random.default_rng(2).random((9, sum(UNITS)))
    expected = np.zeros(len(probe))
    start = 0
    for width in UNITS:  # one layer at a time, standardised by the fitting data's own distances
        block = slice(start, start + width)
        layer = ClassMahalanobis.fit(shares[:, block], labels)
        fitted = layer.scores(shares[:, block])
        expected += (layer.scores(probe[:, block]) - fitted.mean()) / fitted.std()
        start += width
    np.testing.assert_allclose(detector.scores(probe), expected, rtol=1e-9, atol=1e-9)


def test_a_planted_outlier_scores_above_every_inlier(fixture_shares):
    shares, labels, pattern = fixture_shares
    detector = UnitFiring.fit(shares[::2], UNITS, labels[::2])
    inliers = shares[1::2]  # not fitted on
    # halfway between the two classes' patterns: every unit within the range of the fitting data, no
    # class's pattern as a whole (each layer is scored against its nearest class on its own)
    mixed = (pattern[0] + pattern[1]) / 2
    silent = np.zeros(sum(UNITS))  # nothing fires, as on a blank input
    scores = detector.scores(np.vstack([inliers, mixed, silent]))
    assert scores[-2] > scores[:-2].max()
    assert scores[-1] > scores[:-2].max()


def unit_firing_card(data: bytes) -> TypicalityModel:
    """A card's typicality part for a unit-firing state ``data`` over the fixture's three layers."""
    return TypicalityModel(
        detector="unit-firing",
        features=["a", "b", "c"],
        state_file=STATE_FILE,
        state_sha256=sha256(data),
        threshold=1.0,
        false_alarm_rate=0.01,
        calibration="test",
        calibration_size=300,
    )


def test_saved_state_reproduces_the_scores_exactly(tmp_path, fixture_shares):
    shares, labels, _ = fixture_shares
    detector = UnitFiring.fit(shares, UNITS, labels)
    data = detector.to_bytes()
    (tmp_path / STATE_FILE).write_bytes(data)
    card = unit_firing_card(data)
    again = load_detector(card, tmp_path)
    np.testing.assert_array_equal(again.scores(shares), detector.scores(shares))
    # and refitting on the same data gives the same state
    np.testing.assert_array_equal(UnitFiring.fit(shares, UNITS, labels).scores(shares), detector.scores(shares))


def test_an_altered_missing_or_mismatched_state_is_refused_with_one_line(tmp_path, fixture_shares):
    shares, labels, _ = fixture_shares
    data = UnitFiring.fit(shares, UNITS, labels).to_bytes()
    card = unit_firing_card(data)
    with pytest.raises(DetectorStateError, match=r"typicality state typicality\.npz: No such file"):
        load_detector(card, tmp_path)
    (tmp_path / STATE_FILE).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(DetectorStateError, match="does not match the hash in the card"):
        load_detector(card, tmp_path)
    (tmp_path / STATE_FILE).write_bytes(b"not an npz")
    with pytest.raises(DetectorStateError, match="not a unit-firing detector state"):
        load_detector(card.model_copy(update={"state_sha256": None}), tmp_path)
    (tmp_path / STATE_FILE).write_bytes(data)
    with pytest.raises(DetectorStateError, match=r"3 layers, the card's typicality\.features names 2"):
        load_detector(card.model_copy(update={"features": ["a", "b"]}), tmp_path)


def test_a_card_of_the_profile_detector_scores_from_the_card_itself():
    card = TypicalityModel(
        features=["x", "y"],
        mean=[1.0, 2.0],
        precision=[[1.0, 0.0], [0.0, 4.0]],
        threshold=3.0,
        false_alarm_rate=0.01,
        calibration="test",
        calibration_size=10,
    )
    detector = load_detector(card, None)
    assert isinstance(detector, ProfileMahalanobis)
    np.testing.assert_allclose(detector.scores(np.array([[1.0, 2.0], [4.0, 2.0], [1.0, 3.0]])), [0.0, 3.0, 2.0])


def test_a_rows_score_is_the_same_alone_and_among_up_to_row_by_row_rows(fixture_shares, monkeypatch):
    """What batching needs: an item's score does not depend on the rows scored with it, up to the largest pass
    (ROW_BY_ROW_UP_TO); past it one matrix product is used (faster; its last bits may differ)."""
    import sparsity.detectors as detectors

    shares, labels, _ = fixture_shares
    detector = UnitFiring.fit(shares, UNITS, labels)
    monkeypatch.setattr(detectors, "ROW_BY_ROW_UP_TO", 40)
    together = detector.scores(shares[:40])
    alone = np.concatenate([detector.scores(shares[i : i + 1]) for i in range(40)])
    np.testing.assert_array_equal(together, alone)
    np.testing.assert_allclose(detector.scores(shares[:41])[:40], alone, rtol=1e-12)  # one product: close
