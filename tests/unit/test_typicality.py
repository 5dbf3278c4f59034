"""The typicality score: calibration, flags, and a round trip through the stored metadata (JSON)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sparsity.typicality import TypicalityModel, calibrate, mahalanobis_fit


@pytest.fixture(scope="module")
def profiles() -> np.ndarray:
    """Correlated 3-D profiles, like per-layer zero fractions."""
    rng = np.random.default_rng(0)
    base = rng.normal(0.9, 0.02, size=(4000, 1))
    return np.clip(base + rng.normal(0, 0.01, size=(4000, 3)), 0, 1)


def test_threshold_gives_the_chosen_false_alarm_rate_on_the_calibration_data(profiles):
    for rate in (0.01, 0.05):
        model = calibrate(profiles[:2000], profiles[:2000], features=["a", "b", "c"], false_alarm_rate=rate)
        flagged = model.atypical(model.scores(profiles[:2000])).mean()
        assert flagged == pytest.approx(rate, abs=0.002)
        # and about the same on data the calibration never saw
        assert model.atypical(model.scores(profiles[2000:])).mean() == pytest.approx(rate, abs=0.01)


def test_flags_rise_on_inputs_unlike_the_reference(profiles):
    model = calibrate(profiles, profiles, features=["a", "b", "c"])
    shifted = profiles[:500] - 0.2  # every layer far less sparse: 10 standard deviations
    decorrelated = np.random.default_rng(1).permutation(profiles[:500].ravel()).reshape(-1, 3)
    assert model.atypical(model.scores(shifted)).mean() == 1.0
    # each column alone looks normal; the broken correlation between layers is what gives it away
    assert model.atypical(model.scores(decorrelated)).mean() > 0.2  # against 1% on real profiles


def test_score_is_the_mahalanobis_distance():
    reference = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [2.0, 4.0]])
    mean, precision = mahalanobis_fit(reference, shrinkage=0.0)
    np.testing.assert_allclose(mean, [1.0, 2.0])
    model = TypicalityModel(
        features=["x", "y"],
        mean=mean.tolist(),
        precision=precision.tolist(),
        threshold=1.0,
        false_alarm_rate=0.01,
        calibration="hand-made",
        calibration_size=4,
    )
    var_x, var_y = np.var(reference, axis=0, ddof=1)
    expected = np.sqrt(1.0 / var_x + 4.0 / var_y)  # one unit away on x, two on y
    assert model.scores(np.array([[2.0, 4.0]]))[0] == pytest.approx(expected)
    assert model.scores(np.array([[1.0, 2.0]]))[0] == 0.0


def test_round_trip_through_json_keeps_the_scores(profiles):
    model = calibrate(profiles, profiles, features=["a", "b", "c"], calibration_name="synthetic")
    again = TypicalityModel.from_dict(json.loads(json.dumps(model.to_dict())))
    np.testing.assert_array_equal(again.scores(profiles[:100]), model.scores(profiles[:100]))
    assert again == model


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"false_alarm_rate": 0.0}, "false_alarm_rate"), ({"shrinkage": 2.0}, "shrinkage")],
)
def test_bad_settings_are_refused(profiles, kwargs, message):
    with pytest.raises(ValueError, match=message):
        calibrate(profiles, profiles, features=["a", "b", "c"], **kwargs)


def test_measured_records_the_false_alarm_rate_on_unseen_profiles(profiles):
    model = calibrate(profiles[:2000], profiles[:2000], features=["a", "b", "c"])
    scores, flags = model.flag(profiles[2000:])
    np.testing.assert_array_equal(scores, model.scores(profiles[2000:]))
    measured = model.measured(profiles[2000:], on="the other 2000")
    assert measured.measured_false_alarm_rate == float(flags.mean())
    assert measured.measured_on == "the other 2000" and measured.threshold == model.threshold
