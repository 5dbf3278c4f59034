"""``python -m training register``: reproducible calibration parts, and one line and exit status 2 for
every model or calibration set it cannot register (the served examples are in tests/integration)."""

from __future__ import annotations

import hashlib
import sys

import keras
import numpy as np
import onnx
import pytest

from modelstore.register import (
    MIN_CALIBRATION,
    Calibration,
    RegistrationError,
    check_calibration,
    class_names_for,
    input_range_of,
    split,
)
from tests import onnx_models
from tests.tools import run_in_project


def test_calibration_parts_are_disjoint_cover_everything_and_repeat_with_the_seed():
    parts = split(100, seed=3)
    together = np.concatenate([parts.baseline, parts.typicality, parts.measured])
    assert sorted(together.tolist()) == list(range(100))
    assert (len(parts.baseline), len(parts.typicality), len(parts.measured)) == (33, 33, 34)
    again = split(100, seed=3)
    np.testing.assert_array_equal(parts.measured, again.measured)
    assert not np.array_equal(split(100, seed=4).measured, parts.measured)
    with pytest.raises(RegistrationError, match=f"at least {MIN_CALIBRATION} are needed"):
        split(MIN_CALIBRATION - 1)


def test_calibration_checks_name_the_rule():
    good = Calibration(np.zeros((40, 3), dtype=np.float32), np.zeros(40, dtype=np.int64))
    check_calibration(good, (3,), classes=2)
    cases = [
        (Calibration(np.zeros((40, 4))), "must have shape (N, 3) (the model's input), got (40, 4)"),
        (Calibration(np.array([[np.nan, 0, 0]] * 40)), "holds NaN or Infinity"),
        (Calibration(np.zeros((40, 3)), np.zeros(39, dtype=int)), "labels: must be 40 whole numbers"),
        (Calibration(np.zeros((40, 3)), np.full(40, 2)), "labels: must be class indexes 0 to 1"),
        (Calibration(np.zeros((40, 3)), np.zeros(40)), "labels: must be 40 whole numbers"),
    ]
    for calibration, message in cases:
        with pytest.raises(RegistrationError) as info:
            check_calibration(calibration, (3,), classes=2)
        assert message in str(info.value)


def test_input_range_comes_from_the_option_or_the_data():
    data = Calibration(np.array([[0.5, 2.0], [1.0, 3.0]]))
    assert input_range_of(data, None) == (0.5, 3.0)
    assert input_range_of(data, (0.0, 4.0)) == (0.0, 4.0)
    with pytest.raises(RegistrationError, match="fall outside --input-range 0 1"):
        input_range_of(data, (0.0, 1.0))
    with pytest.raises(RegistrationError, match="LOW must be below HIGH"):
        input_range_of(data, (1.0, 1.0))
    assert class_names_for(None, 3) == ["0", "1", "2"]
    with pytest.raises(RegistrationError, match="3 classes, 2 names"):
        class_names_for(["a", "b"], 3)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A valid small ReLU model, and the models and calibration sets registration must refuse."""
    d = tmp_path_factory.mktemp("register")
    keras.utils.set_random_seed(0)

    def save(name: str, hidden) -> str:
        inputs = keras.Input((4,))
        x = inputs
        for layer in hidden:
            x = layer(x)
        keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x)).save(d / name)
        return str(d / name)

    paths = {
        "good": save("good.keras", [keras.layers.Dense(8, activation="relu")]),
        "lambda": save(
            "lambda.keras", [keras.layers.Dense(8, activation="relu"), keras.layers.Lambda(lambda t: t * 2)]
        ),
        "no_relu": save("no_relu.keras", [keras.layers.Dense(8, activation="tanh")]),
    }
    custom = onnx_models.cnn()
    custom.graph.node[1].domain = "com.example.fast"
    custom.opset_import.append(onnx.helper.make_opsetid("com.example.fast", 1))
    gelu_only = onnx_models.cnn()
    relus = [n for n in gelu_only.graph.node if n.op_type in ("Relu", "Clip", "Max")]
    for node in relus:
        node.op_type = "Gelu"
        del node.input[1:]
    for name, model in {"onnx_good": onnx_models.cnn(), "onnx_custom": custom, "onnx_gelu": gelu_only}.items():
        (d / f"{name}.onnx").write_bytes(model.SerializeToString())
        paths[name] = str(d / f"{name}.onnx")
    (d / "garbage.onnx").write_bytes(b"this is not protobuf" * 8)
    paths["onnx_garbage"] = str(d / "garbage.onnx")
    rng = np.random.default_rng(0)
    for name, array in {
        "cal": rng.random((60, 4), dtype=np.float32),
        "cal_wrong_shape": rng.random((60, 5), dtype=np.float32),
        "cal_small": rng.random((10, 4), dtype=np.float32),
        "cal_objects": np.array([{"a": 1}] * 40, dtype=object),
        "cal_images": onnx_models.calibration(90),
        "cal_channels_last": onnx_models.calibration(90).reshape(90, 12, 12, 1),
    }.items():
        np.save(d / f"{name}.npy", array, allow_pickle=True)
        paths[name] = str(d / f"{name}.npy")
    return paths


def _register(*args: str):
    return run_in_project([sys.executable, "-m", "training", "register", *args], timeout=180)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "name", "calibration", "message"),
    [
        ("lambda", "lambda_model", "cal", "a Lambda layer or function (arbitrary Python code)"),
        ("no_relu", "no_relu", "cal", "has no ReLU-family layer to probe (hidden activations without exact zeros: "),
        ("good", "wrong_shape", "cal_wrong_shape", "must have shape (N, 4) (the model's input), got (60, 5)"),
        ("good", "Not/A-Name", "cal", "--name 'Not/A-Name' is not a valid model name"),
        ("good", "too_few", "cal_small", "calibration set has 10 items; at least 30 are needed"),
        ("good", "objects", "cal_objects", "not a plain numeric .npy array"),
        ("onnx_garbage", "garbage", "cal_images", "error: garbage.onnx is not an ONNX model (DecodeError"),
        ("onnx_custom", "custom", "cal_images", "uses custom operator domains ['com.example.fast']"),
        ("onnx_gelu", "gelu", "cal_images", "no ReLU-family node to probe (Relu, Clip with min 0, Max(x, 0)); "),
        ("onnx_good", "last", "cal_channels_last", "must have shape (N, 1, 12, 12) (the model's input), got"),
    ],
)
def test_registration_refuses_with_one_line_and_exit_2(files, model, name, calibration, message):
    out = _register(files[model], "--name", name, "--calibration", files[calibration])
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.stderr
    assert "Traceback" not in out.stderr and "registered" not in out.stdout


@pytest.mark.slow
def test_a_registered_model_gets_a_typed_card_and_a_one_screen_summary(files, bentoml_home):
    import bentoml

    out = _register(files["good"], "--name", "small_relu", "--calibration", files["cal"], "--class-names", "a,b,c")
    assert out.returncode == 0, out.stderr
    summary = out.stdout.strip().splitlines()
    assert summary[0].startswith("registered small_relu:") and len(summary) <= 24
    assert any("not_probed  none" in line for line in summary)
    stored = bentoml.models.get("small_relu:latest")
    card = stored.info.metadata
    assert card["kind"] == "keras-relu" and card["class_names"] == ["a", "b", "c"]
    assert card["input_shape"] == [4] and card["calibration"]["size"] == 60
    assert [layer["name"] for layer in card["relu_layers"]] == ["dense"]
    assert card["typicality"]["detector"] == "unit-firing" and card["typicality"]["fit_size"] == 20
    assert card["typicality"]["calibration_size"] == 40 and "test_accuracy" not in card  # two parts set the threshold
    with open(stored.path_of("typicality.npz"), "rb") as state:
        assert card["typicality"]["state_sha256"] == hashlib.sha256(state.read()).hexdigest()
    with open(files["good"], "rb") as handle:
        assert card["provenance"]["sha256"] == hashlib.sha256(handle.read()).hexdigest()
    # the file is stored unchanged
    with open(stored.path_of("model.keras"), "rb") as a, open(files["good"], "rb") as b:
        assert a.read() == b.read()
    bentoml.models.delete(str(stored.tag))  # the session's servers serve every stored model: leave none extra


@pytest.mark.slow
def test_an_onnx_model_gets_an_onnx_relu_card_with_its_nodes_and_the_unit_convention(files, bentoml_home):
    import bentoml

    out = _register(files["onnx_good"], "--name", "small_onnx", "--calibration", files["cal_images"])
    assert out.returncode == 0, out.stderr
    assert "onnx     opset 20, written by tests; counted inside ONNX Runtime" in out.stdout
    assert "not_probed  gelu (Gelu)" in out.stdout
    stored = bentoml.models.get("small_onnx:latest")
    card = stored.info.metadata
    assert card["kind"] == "onnx-relu" and card["opset"] == 20 and card["output"] == "probabilities"
    assert [(l["name"], l["tensor"], l["op"], l["units"], l["axis"]) for l in card["relu_layers"]] == [
        ("relu1", "r1", "Relu", 4, 1),
        ("relu6", "r2", "Clip(0, 6)", 6, 1),
        ("max0", "h2", "Max(x, 0)", 8, 1),
    ]
    assert card["unit_convention"].startswith("units: axis 1 of a (N, units) tensor and of a convolution's output")
    assert set(card["weight_sparsity"]) == {"conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight"}
    assert card["typicality"]["features"] == ["relu1", "relu6", "max0"]
    with open(stored.path_of("model.onnx"), "rb") as a, open(files["onnx_good"], "rb") as b:
        assert a.read() == b.read()
    bentoml.models.delete(str(stored.tag))


def test_ledoit_wolf_shrinkage_is_scikit_learns():
    from sklearn.covariance import ledoit_wolf_shrinkage as sklearn_shrinkage

    from sparsity.typicality import ledoit_wolf_shrinkage

    rng = np.random.default_rng(0)
    for rows, columns in ((29, 13), (400, 3), (40, 4)):
        x = rng.normal(size=(rows, columns)) @ rng.normal(size=(columns, columns))
        assert ledoit_wolf_shrinkage(x) == pytest.approx(sklearn_shrinkage(x), rel=1e-9)


@pytest.mark.slow
def test_a_scikit_learn_linear_model_saved_with_skops_registers_as_kind_linear(tmp_path, bentoml_home):
    import bentoml
    import skops.io
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from modelstore.kinds import load_card
    from modelstore.kinds.linear import LinearRuntime

    x, y = load_wine(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(l1_ratio=1.0, solver="saga", C=0.5, max_iter=5000))
    model.fit(x[::2], y[::2])
    skops.io.dump(model, tmp_path / "wine.skops")
    np.save(tmp_path / "cal.npy", x[1::2])
    np.save(tmp_path / "labels.npy", y[1::2])
    args = ["--name", "wine_l1", "--calibration", str(tmp_path / "cal.npy"), "--labels", str(tmp_path / "labels.npy")]
    out = _register(str(tmp_path / "wine.skops"), *args, "--class-names", "a,b,c", "--input-range", "0", "2000")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("registered wine_l1:") and "(kind linear)" in out.stdout
    assert "warning  only 58 items set the typicality threshold" in out.stdout  # 89 rows: a coarse threshold
    stored = bentoml.models.get("wine_l1:latest")
    card = load_card(str(stored.tag), stored.info.metadata)
    assert card.kind == "linear" and card.feature_names == [f"x{i}" for i in range(13)]
    runtime = LinearRuntime(str(stored.tag), card)
    np.testing.assert_allclose(runtime.predict(x).probabilities, model.predict_proba(x), rtol=0, atol=1e-12)
    bentoml.models.delete(str(stored.tag))  # the session's servers serve every stored model: leave none extra
    # anything but a scaler + logistic regression is refused, and so is a picture step
    skops.io.dump(make_pipeline(StandardScaler(), StandardScaler()).fit(x), tmp_path / "two_scalers.skops")
    refused = _register(str(tmp_path / "two_scalers.skops"), *args)
    assert refused.returncode == 2 and "Pipeline is not supported: a kind linear model is" in refused.stderr
