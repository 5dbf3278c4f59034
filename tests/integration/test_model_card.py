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
    server = Server(tmp_path / "serve.log", env={"BENTOML_HOME": str(store)})
    try:
        code = server.proc.wait(timeout=120)
    finally:
        server.stop()
    log = server.log()
    assert code == 2, log
    errors = [line for line in log.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: model {tag}: {message}"), log
    assert errors[0].endswith("retrain it (make train)") and "Traceback" not in log
