"""The audit of a Keras file (at registration and at the service's start) reads its config only and refuses
anything that is not a Keras object or a core layer: Lambda layers, serialized Python functions, foreign
modules."""

from __future__ import annotations

import json
import zipfile

import keras
import pytest

from sparsity.keras_file import keras_file_problems
from sparsity.layers import ThresholdedReLU


def _save(model, path) -> str:
    model.save(path)
    return str(path)


def _rewrite_config(path, change) -> None:
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    change(config)
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


@pytest.fixture
def clean(tmp_path) -> str:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"), ThresholdedReLU(0.1)])
    return _save(model, tmp_path / "clean.keras")


def test_keras_and_core_layers_pass(clean):
    assert keras_file_problems(clean) == []


def test_a_lambda_layer_is_named(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2)(keras.layers.Lambda(lambda t: t * 2.0, name="sneaky")(inputs))
    problems = keras_file_problems(_save(keras.Model(inputs, outputs), tmp_path / "lambda.keras"))
    # one problem: the Lambda layer (the __lambda__ function it holds is that same code)
    assert len(problems) == 1 and "sneaky: a Lambda layer" in problems[0], problems


def test_an_object_from_another_module_is_refused(clean):
    def change(config):
        config["config"]["layers"][1]["module"] = "os"
        config["config"]["layers"][1]["class_name"] = "system"

    _rewrite_config(clean, change)
    [problem] = keras_file_problems(clean)
    assert problem.endswith(": os.system is not a Keras or core object"), problem


def test_a_core_module_without_the_core_registration_is_refused(clean):
    def change(config):
        config["config"]["layers"][2]["registered_name"] = "evil>ThresholdedReLU"

    _rewrite_config(clean, change)
    problems = keras_file_problems(clean)
    assert len(problems) == 1 and "sparsity.layers.ThresholdedReLU is not a Keras or core object" in problems[0]


def test_an_unreadable_file_is_refused(tmp_path):
    path = tmp_path / "broken.keras"
    path.write_bytes(b"not a zip")
    [problem] = keras_file_problems(str(path))
    assert problem.startswith("unreadable Keras file")
