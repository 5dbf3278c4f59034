"""A stored model the service cannot serve, started by a real ``bentoml serve``: a card that is not a
valid card, a Keras file that asks for code. The service starts without it, says so in one log line
naming the tag and the reason, and lists it at ``/models`` under ``refused``; with nothing left to serve
it exits 2 with one line. Bad settings stop it with one line too."""

from __future__ import annotations

import shutil

import httpx
import pytest
import yaml

from benchmarks.server import Server

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _version(store, name: str) -> str:
    return (store / "models" / name / "latest").read_text().strip()


def _change_card(store, name: str, change) -> str:
    version = _version(store, name)
    path = store / "models" / name / version / "model.yaml"
    info = yaml.safe_load(path.read_text())
    change(info["metadata"])
    path.write_text(yaml.safe_dump(info))
    return f"{name}:{version}"


def _copy_model(store, name: str, new_name: str) -> tuple[str, object]:
    """``name``'s latest version stored again as ``new_name`` (same version)."""
    version = _version(store, name)
    target = store / "models" / new_name / version
    shutil.copytree(store / "models" / name / version, target)
    (store / "models" / new_name / "latest").write_text(version)
    info = yaml.safe_load((target / "model.yaml").read_text())
    info["name"] = new_name
    (target / "model.yaml").write_text(yaml.safe_dump(info))
    return f"{new_name}:{version}", target


def _keras_with_lambda(source, target) -> None:
    import keras

    import sparsity.layers  # noqa: F401

    model = keras.models.load_model(source, compile=False)
    inputs = keras.Input(model.input_shape[1:])
    outputs = model(keras.layers.Lambda(lambda t: t * 1.0, name="evil")(inputs))
    keras.Model(inputs, outputs).save(target)


@pytest.fixture(scope="module")
def bad_store(trained, bentoml_home, tmp_path_factory):
    """A copy of the session store: iris_l1 as trained; mnist_cnn without a typicality field; evil_cnn, a
    copy of the CNN whose file holds a Lambda layer; mistyped_cnn, whose card has units: "many"."""
    store = tmp_path_factory.mktemp("bad-store") / "store"
    shutil.copytree(bentoml_home, store)
    for name in [p.name for p in (store / "models").iterdir()]:
        if name not in ("iris_l1", "mnist_cnn"):
            shutil.rmtree(store / "models" / name)  # only the two trained models
    evil, directory = _copy_model(store, "mnist_cnn", "evil_cnn")
    _keras_with_lambda(directory / "model.keras", directory / "model.keras")
    mistyped, _ = _copy_model(store, "mnist_cnn", "mistyped_cnn")
    _change_card(store, "mistyped_cnn", lambda m: m["relu_layers"][1].update(units="many"))
    missing = _change_card(store, "mnist_cnn", lambda m: m.pop("typicality"))
    return store, {
        evil: "model.keras refused: /",
        mistyped: "metadata field 'relu_layers.1.units' is invalid: Input should be a valid integer",
        missing: "metadata field 'typicality' is missing",
    }


def test_bad_models_are_not_served_and_the_service_says_why(bad_store, tmp_path):
    store, reasons = bad_store
    server = Server(tmp_path / "serve.log", env={"BENTOML_HOME": str(store)})
    try:
        server.wait_ready()
        listing = httpx.get(f"{server.url}/models").json()
        assert [model["name"] for model in listing["models"]] == ["iris_l1"]
        refused = {item["tag"]: item["reason"] for item in listing["refused"]}
        assert set(refused) == set(reasons)
        for tag, reason in reasons.items():
            assert refused[tag].startswith(f"model {tag}: {reason}"), refused[tag]
        assert "/evil: a Lambda layer" in refused[next(t for t in reasons if t.startswith("evil_cnn"))]
        missing = next(t for t in reasons if t.startswith("mnist_cnn"))
        answer = httpx.post(f"{server.url}/mnist/predict", json={"images": [[[0.0] * 28] * 28]})
        assert answer.status_code == 404 and answer.json()["error"].startswith("model: no model named 'mnist_cnn'")
        assert httpx.get(f"{server.url}/models/mnist_cnn").status_code == 404
        log = server.log_text()
        for tag in reasons:
            assert sum(f"not serving model {tag}: " in line for line in log.splitlines()) == 1, log
        assert "Traceback" not in log
        assert f"refused: model {missing}" in log  # the start-up summary repeats it
    finally:
        server.stop()


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


def test_nothing_left_to_serve_stops_the_service_with_one_line(bad_store, tmp_path):
    store, reasons = bad_store
    missing = next(t for t in reasons if t.startswith("mnist_cnn"))
    error = _refused_at_start(tmp_path, {"BENTOML_HOME": str(store), "SERVED_MODELS": "mnist_cnn,nonexistent"})
    assert error.startswith("error: no model can be served: "), error
    assert f"model {missing}: metadata field 'typicality' is missing" in error
    assert "model nonexistent is not in the store" in error


def test_keras_safe_mode_refuses_a_lambda_in_the_worker_too(bad_store):
    """The second line: a worker that were handed the file (the audit skipped) refuses it while loading."""
    from modelstore.card import ModelCardError
    from modelstore.kinds import load_card
    from modelstore.kinds.keras_relu import KerasReluRuntime

    store, reasons = bad_store
    evil = next(t for t in reasons if t.startswith("evil_cnn"))
    directory = store / "models" / "evil_cnn" / evil.split(":")[1]
    card = load_card(evil, yaml.safe_load((directory / "model.yaml").read_text())["metadata"])
    with pytest.raises(ModelCardError, match="deserialization of a `Lambda` layer"):
        KerasReluRuntime(evil, card, str(directory / "model.keras"))


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
        ("SERVED_MODELS", "MNIST CNN", "must be comma-separated model tags"),
        (
            "SERVED_MODELS",
            "iris_l1,iris_l1:latest",
            "must be comma-separated model tags name[:version], lower-case names, each tag once",
        ),
    ],
)
def test_bad_setting_stops_the_service_with_one_line(trained, tmp_path, name, raw, rule):
    error = _refused_at_start(tmp_path, {name: raw})
    assert error.startswith(f"error: environment variable {name}={raw!r} is invalid: {rule}"), error
