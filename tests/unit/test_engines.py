"""Engines at registration and at load: the sparse program checked on the whole calibration set and timed beside
ONNX Runtime, the ENGINE setting, the fall-back with its one line, and the same answers on every engine."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from modelstore.engines import EngineCheck, choose
from modelstore.kind import LoadOptions
from modelstore.kinds.onnx_relu import OnnxReluCard, OnnxReluRuntime, open_onnx
from modelstore.register import Calibration, relu_card
from service.config import Settings, SettingsError
from sparsity.detectors import STATE_FILE
from tests.onnx_models import calibration, cnn


def register(directory, model):
    path = directory / OnnxReluCard.MODEL_FILE
    path.write_bytes(model.SerializeToString())
    card, files = relu_card(path, Calibration(calibration(90)), open_onnx(path), input_range=(0.0, 1.0))
    (directory / STATE_FILE).write_bytes(files[STATE_FILE])
    return card, path


@pytest.fixture(scope="module")
def supported(tmp_path_factory):
    return register(tmp_path_factory.mktemp("relu-cnn"), cnn(gelu=False))


def test_registration_checks_the_sparse_program_on_the_whole_calibration_set_and_times_both(supported):
    card, _ = supported
    checks = {check.engine: check for check in card.engines}
    assert set(checks) == {"onnxruntime", "sparse"}
    assert all(check.passed and check.ms_1 > 0 and check.ms_256 > 0 for check in checks.values())
    assert card.sparse.check.items == 90 and card.sparse.check.labels_equal
    assert card.sparse.check.max_probability_difference <= 1e-5
    assert card.sparse.multiply_adds > 0
    assert "engines" in card.describe()
    assert any(line.strip().startswith("engine sparse") for line in card.summary_lines())


@pytest.mark.parametrize("engine", ["sparse", "onnxruntime"])
def test_every_engine_gives_the_same_answers(supported, engine):
    card, path = supported
    runtime = OnnxReluRuntime("small:1", card, str(path), LoadOptions(engine=engine))
    reference = OnnxReluRuntime("small:1", card, str(path), LoadOptions(engine="onnxruntime"))
    assert runtime.engine == engine and runtime.info["engine"] == engine
    x = calibration(40, seed=7)
    got, want = runtime.predict(x), reference.predict(x)
    np.testing.assert_array_equal(got.labels, want.labels)
    np.testing.assert_allclose(got.probabilities, want.probabilities, atol=1e-5)
    for layer in runtime.layers:
        np.testing.assert_array_equal(got.shares[layer], want.shares[layer])
        np.testing.assert_array_equal(got.layer_sparsity[layer], want.layer_sparsity[layer])
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)
    np.testing.assert_array_equal(got.atypical, want.atypical)


def test_a_graph_with_an_operator_it_lacks_keeps_onnx_runtime_with_one_line(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        card, path = register(tmp_path, cnn())  # a Gelu between two dense layers
    sparse = next(check for check in card.engines if check.engine == "sparse")
    assert not sparse.passed and sparse.reason == "operator Gelu (node 'gelu')"
    assert card.sparse is None
    assert [r.getMessage() for r in caplog.records if "sparse engine" in r.getMessage()] == [
        "the sparse engine cannot run this model: operator Gelu (node 'gelu')"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        runtime = OnnxReluRuntime("gelu:1", card, str(path), LoadOptions(engine="sparse"))
    assert runtime.engine == "onnxruntime"
    assert [r.getMessage() for r in caplog.records] == [
        "model gelu:1: ENGINE=sparse is not available for this model (operator Gelu (node 'gelu')); it runs on "
        "onnxruntime"
    ]


class Card:
    def __init__(self, *checks: EngineCheck) -> None:
        self.engines = list(checks)


def timed(engine: str, ms_1: float, ms_256: float, passed: bool = True) -> EngineCheck:
    return EngineCheck(engine=engine, passed=passed, ms_1=ms_1, ms_256=ms_256, reason=None if passed else "differs")


@pytest.mark.parametrize(
    ("sparse", "setting", "expected"),
    [
        (timed("sparse", 0.05, 9.0), "auto", ("sparse", None)),
        (timed("sparse", 0.05, 30.0), "auto", ("onnxruntime", None)),  # slower for batches: never slower
        (timed("sparse", 0.2, 9.0), "auto", ("onnxruntime", None)),
        (timed("sparse", 0.05, 9.0, passed=False), "auto", ("onnxruntime", None)),
        (timed("sparse", 0.05, 9.0), "onnxruntime", ("onnxruntime", None)),
        (timed("sparse", 0.2, 30.0), "sparse", ("sparse", None)),  # forced where it passed, even if slower
        (
            timed("sparse", 0.05, 9.0, passed=False),
            "sparse",
            ("onnxruntime", "ENGINE=sparse is not available for this model (differs); it runs on onnxruntime"),
        ),
        (
            timed("sparse", 0.05, 9.0),
            "tensorflow",
            (
                "sparse",
                "ENGINE=tensorflow is not available for this model (not checked at registration); it runs on sparse",
            ),
        ),
    ],
)
def test_auto_takes_the_sparse_engine_only_where_it_passed_and_is_faster_at_both_sizes(sparse, setting, expected):
    card = Card(timed("onnxruntime", 0.1, 17.0), sparse)
    assert choose(card, "onnxruntime", setting, ("sparse", "onnxruntime")) == expected


def test_a_card_from_before_engines_runs_on_its_old_engine():
    assert choose(Card(), "onnxruntime", "auto", ("sparse", "onnxruntime")) == ("onnxruntime", None)


def test_the_engine_setting_and_its_old_name():
    assert Settings.from_env({"ENGINE": "Sparse"}).engine == "sparse"
    assert Settings.from_env({}).engine == "auto"
    with pytest.raises(SettingsError, match=r"KERAS_ENGINE='tensorflow' is invalid: is no longer read; set ENGINE"):
        Settings.from_env({"KERAS_ENGINE": "tensorflow"})


@pytest.mark.parametrize("engine", ["sparse", "onnxruntime"])
def test_a_large_request_runs_in_chunks_with_every_items_own_answer(supported, engine):
    """The data plane runs a request of more than 256 items 256 at a time (memory bounded by the chunk, not by
    what clients send): each item's answer is the one the whole batch in one pass gives it."""
    from service.dataplane import predict_in_chunks

    card, path = supported
    runtime = OnnxReluRuntime("small:1", card, str(path), LoadOptions(engine=engine))
    x = calibration(600, seed=11)
    whole, chunked = runtime.predict(x), predict_in_chunks(runtime, x, chunk=256)
    np.testing.assert_array_equal(chunked.probabilities, whole.probabilities)
    np.testing.assert_array_equal(chunked.scores, whole.scores)
    np.testing.assert_array_equal(chunked.atypical, whole.atypical)
    np.testing.assert_array_equal(chunked.overall, whole.overall)
    for layer in runtime.layers:
        np.testing.assert_array_equal(chunked.shares[layer], whole.shares[layer])
        np.testing.assert_array_equal(chunked.fired[layer], whole.fired[layer])
        np.testing.assert_array_equal(chunked.layer_sparsity[layer], whole.layer_sparsity[layer])
    assert len(chunked.probabilities) == 600
