"""The check a load makes: the card's examples replayed through the loaded runtime give registration's zeros
(within two flips per layer), an older card's examples stay near its baseline, and other weights are caught."""

from __future__ import annotations

import numpy as np
import pytest

from modelstore.replay import FLIPS_ALLOWED, replay_problem
from tests.unit.test_oip import _toy


@pytest.fixture
def runtime(tmp_path):
    return _toy(tmp_path, "toy:v1", 4)


def test_registration_stores_each_examples_zeros_and_the_same_model_reproduces_them(runtime):
    zeros = runtime.card.example_zeros["hidden"]
    assert len(zeros) == len(runtime.card.examples) and all(0 <= z <= 12 for z in zeros)
    x = np.asarray(runtime.card.examples, dtype=np.float32)
    assert zeros == np.rint(runtime.predict(x).layer_sparsity["hidden"] * 12).astype(int).tolist()
    assert replay_problem(runtime) is None


def test_a_flip_or_two_passes_and_more_is_refused_in_one_line(runtime):
    zeros = list(runtime.card.example_zeros["hidden"])
    runtime.card.example_zeros["hidden"] = [zeros[0] + FLIPS_ALLOWED, *zeros[1:]]
    assert replay_problem(runtime) is None
    runtime.card.example_zeros["hidden"] = [zeros[0] + FLIPS_ALLOWED + 1, *zeros[1:]]
    problem = replay_problem(runtime)
    assert problem.startswith("model toy:v1: layer hidden has ") and "registration measured" in problem
    assert "\n" not in problem


def test_other_weights_are_caught_by_the_exact_and_by_the_loose_check(runtime):
    runtime.probe.b1 = runtime.probe.b1 + 10.0  # every hidden unit on
    assert "registration measured" in replay_problem(runtime)
    runtime.card = runtime.card.model_copy(update={"example_zeros": None})  # a card from before the check
    assert "its baseline" in replay_problem(runtime)
    runtime.probe.b1 = runtime.probe.b1 - 10.0
    assert replay_problem(runtime) is None
