"""A stored model whose metadata is not a valid model card is refused at start by a real
``bentoml serve``: one line naming the tag and the field, exit status 2, no traceback."""

from __future__ import annotations

import shutil

import pytest
import yaml

from tests.integration.server import Server

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _tampered_store(bentoml_home, tmp_path, model: str, change) -> tuple:
    store = tmp_path / "store"
    shutil.copytree(bentoml_home, store)
    version = (store / "models" / model / "latest").read_text().strip()
    path = store / "models" / model / version / "model.yaml"
    info = yaml.safe_load(path.read_text())
    change(info["metadata"])
    path.write_text(yaml.safe_dump(info))
    return store, f"{model}:{version}"


def _refused_at_start(tmp_path, env: dict[str, str]) -> str:
    """Start a real serve with ``env``; it must exit 2 with exactly one ``error:`` line and no
    traceback. Returns that line."""
    server = Server(tmp_path / "serve.log", env=env)
    try:
        code = server.proc.wait(timeout=120)
    finally:
        server.stop()
    log = server.log()
    assert code == 2, log
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in log, log
    return errors[0]


@pytest.mark.parametrize(
    ("model", "change", "message"),
    [
        ("mnist_cnn", lambda m: m.pop("typicality"), "metadata field 'typicality' is missing"),
        (
            "mnist_cnn",
            lambda m: m["relu_layers"][1].update(units="many"),
            "metadata field 'relu_layers.1.units' is invalid: Input should be a valid integer",
        ),
        ("iris_l1", lambda m: m.pop("coefficients"), "metadata field 'coefficients' is missing"),
    ],
    ids=["mnist-missing", "mnist-mistyped", "iris-missing"],
)
def test_invalid_model_card_is_refused_at_start(trained, bentoml_home, tmp_path, model, change, message):
    store, tag = _tampered_store(bentoml_home, tmp_path, model, change)
    error = _refused_at_start(tmp_path, {"BENTOML_HOME": str(store)})
    assert error.startswith(f"error: model {tag}: {message}") and error.endswith("retrain it (make train)"), error


def _tampered_file(bentoml_home, tmp_path, model: str, write) -> tuple:
    """A copy of the store whose ``model``'s file is replaced by ``write(stored, path)``."""
    import bentoml

    store = tmp_path / "store"
    shutil.copytree(bentoml_home, store)
    version = (store / "models" / model / "latest").read_text().strip()
    stored = bentoml.models.get(f"{model}:{version}")
    directory = store / "models" / model / version
    write(stored, directory)
    return store, f"{model}:{version}"


def _keras_with_lambda(stored, directory) -> None:
    import keras

    import sparsity.layers  # noqa: F401

    model = keras.models.load_model(stored.path_of("model.keras"), compile=False)
    inputs = keras.Input(model.input_shape[1:])
    outputs = model(keras.layers.Lambda(lambda t: t * 1.0, name="evil")(inputs))
    keras.Model(inputs, outputs).save(directory / "model.keras")


def _skops_with_untrusted_type(stored, directory) -> None:
    import subprocess as sp

    import skops.io
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    model = skops.io.load(stored.path_of("model.skops"), trusted=[])
    tampered = Pipeline([("evil", FunctionTransformer(func=sp.getoutput)), *model.steps])
    skops.io.dump(tampered, directory / "model.skops")


@pytest.mark.parametrize(
    ("model", "write", "message"),
    [
        ("mnist_cnn", _keras_with_lambda, ("model.keras refused: /", "/evil: a Lambda layer")),
        ("iris_l1", _skops_with_untrusted_type, ("model.skops asks for types that are not trusted: [", "getoutput")),
    ],
    ids=["keras-lambda", "skops-untrusted-type"],
)
def test_tampered_model_file_is_refused_at_start(trained, bentoml_home, tmp_path, model, write, message):
    store, tag = _tampered_file(bentoml_home, tmp_path, model, write)
    error = _refused_at_start(tmp_path, {"BENTOML_HOME": str(store)})
    assert error.startswith(f"error: model {tag}: {message[0]}") and message[1] in error, error


def test_keras_safe_mode_refuses_a_lambda_in_the_worker_too(trained, bentoml_home, tmp_path):
    """The second line: a worker that were handed the file (the audit skipped) refuses it while loading."""
    import bentoml

    from service.runtime import MnistRuntime

    store, tag = _tampered_file(bentoml_home, tmp_path, "mnist_cnn", _keras_with_lambda)
    stored = bentoml.models.get(tag)

    class Tampered:
        info = stored.info

        @staticmethod
        def path_of(name):
            return str(store / "models" / "mnist_cnn" / tag.split(":")[1] / name)

    Tampered.tag = stored.tag
    with pytest.raises(ValueError, match="deserialization of a `Lambda` layer"):
        MnistRuntime(Tampered)


@pytest.mark.parametrize(
    ("name", "raw", "rule"),
    [
        ("SERVICE_WORKERS", "two", "must be a whole number from 1 to 64"),
        ("TF_INTRA_OP_THREADS", "0", "must be a whole number from 1 to 256"),
        ("TF_INTER_OP_THREADS", "999", "must be a whole number from 1 to 256"),
        ("MAX_BODY_BYTES", "16MB", "must be a whole number from 1024 to 1073741824"),
        ("MAX_DRAIN_BYTES", "-5", "must be a whole number from 0 to 4294967296"),
        ("BODY_TIMEOUT_SECONDS", "never", "must be a number of seconds from 0.1 to 3600"),
        ("MAX_IMAGE_PIXELS", "12", "must be a whole number from 784 to 268435456"),
        ("ACCESS_LOG", "maybe", "must be one of true, false"),
        ("MNIST_MODEL_TAG", "MNIST CNN", "must be a BentoML model tag"),
        ("IRIS_MODEL_TAG", "iris:", "must be a BentoML model tag"),
    ],
)
def test_bad_setting_stops_the_service_with_one_line(trained, tmp_path, name, raw, rule):
    error = _refused_at_start(tmp_path, {name: raw})
    assert error.startswith(f"error: environment variable {name}={raw!r} is invalid: {rule}"), error
