"""The deeper model end to end (issue 19): ``python -m training resnet`` trains, registers, prunes with tied
channels and registers the pruned model; a real ``bentoml serve`` then serves it as ``mnist_resnet`` with exact
per-layer sparsity, typicality and metrics; ``python -m lab prune`` prunes it exactly and times it."""

from __future__ import annotations

import json
import shutil
import sys

import httpx
import keras
import numpy as np
import pytest

from benchmarks.server import Server
from tests.helpers import without_versions
from tests.tools import run_in_project
from training.resnet_prune import channels

pytestmark = pytest.mark.slow

SMALL = ("--dataset", "mnist-5k", "--epochs", "1", "--limit", "400", "--width", "0.5", "--quiet")
"""Small and quick: the served configuration at a quarter of its channels, one epoch on 400 digits."""


def _training(*args: str, env: dict, timeout: int = 600):
    return run_in_project([sys.executable, "-m", "training", *args], env=env, timeout=timeout)


@pytest.fixture(scope="module")
def resnet_store(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("resnet")
    store, reports = root / "store", root / "reports"
    run = _training("resnet", *SMALL, "--report-dir", str(reports), env={"BENTOML_HOME": str(store)})
    assert run.returncode == 0, run.stderr[-3000:]
    return {"store": store, "report": json.loads((reports / "mnist_resnet.json").read_text()), "root": root}


@pytest.fixture(scope="module")
def resnet_server(resnet_store):
    server = Server(resnet_store["root"] / "server.log", env={"BENTOML_HOME": str(resnet_store["store"])})
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _model_at(store, tag: str) -> keras.Model:
    name, version = tag.split(":")
    return keras.models.load_model(store / "models" / name / version / "model.keras", compile=False)


def test_training_registers_the_parent_then_the_tied_pruned_model(resnet_store):
    report = resnet_store["report"]
    assert report["parent"] != report["tag"] and report["provenance"]["pruned_from"] == report["parent"]
    assert report["pruned"]["by"] == "activations" and report["pruned"]["max_firing"] == 0.02
    parent = _model_at(resnet_store["store"], report["parent"])
    pruned = _model_at(resnet_store["store"], report["tag"])
    before, after = channels(parent), channels(pruned)
    assert set(before) == set(after) and all(after[g] <= before[g] for g in before)
    assert {g: before[g] - after[g] for g in before} == report["pruned"]["units_removed"]
    # the card's layers are the pruned model's ReLUs; a stream group's gates all have its channel count
    units = {layer["name"]: layer["units"] for layer in report["relu_layers"]}
    assert units["s2b0_out"] == after["s2"] and units["s0b0_relu1"] == after["s0b0_mid"]
    assert report["options"]["placement"] == "post" and 0.0 <= report["test_accuracy"] <= 1.0
    assert report["provenance"]["overrides"] == {"width": 0.5, "epochs": 1}  # the rest is the study's choice
    assert report["options"]["l1"] == 1e-5 and report["options"]["width"] == 0.5


def test_the_served_resnet_counts_exactly_and_reports_typicality_and_metrics(resnet_store, resnet_server, test_images):
    images = test_images[0][:12]
    r = httpx.post(f"{resnet_server.url}/models/mnist_resnet/predict", json={"inputs": images.tolist()}, timeout=60)
    assert r.status_code == 200, r.text
    answers = r.json()["predictions"]
    model = _model_at(resnet_store["store"], resnet_store["report"]["tag"])
    names = [layer["name"] for layer in resnet_store["report"]["relu_layers"]]
    outs = keras.Model(model.inputs, [model.get_layer(n).output for n in names])([images], training=False)
    probabilities = np.asarray(model(images, training=False))
    for i, answer in enumerate(answers):
        assert answer["label"] == int(probabilities[i].argmax())
        assert list(answer["sparsity"]["layers"]) == names
        for name, out in zip(names, outs, strict=True):
            o = np.asarray(out)[i]
            assert answer["sparsity"]["layers"][name] == np.count_nonzero(o == 0) / o.size, (i, name)
        assert set(answer["typicality"]) >= {"score", "atypical"}
    listing = httpx.get(f"{resnet_server.url}/models/mnist_resnet").json()
    assert listing["tag"] == resnet_store["report"]["tag"] and listing["typicality"]["detector"] == "unit-firing"
    metrics = without_versions(httpx.get(f"{resnet_server.url}/metrics").text)
    for layer in (*names, "all"):
        assert f'activation_sparsity_ratio_count{{layer="{layer}",model="mnist_resnet"}} 12.0' in metrics, layer
    assert 'activation_sparsity_baseline_ratio{layer="s2b0_out",model="mnist_resnet"}' in metrics


def test_prune_from_the_cli_is_exact_at_level_0_and_times_the_residual_models(resnet_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(resnet_store["store"], store)
    parent = resnet_store["report"]["parent"]
    out = tmp_path / "prune"
    run = run_in_project(
        [
            sys.executable,
            "-m",
            "lab",
            "prune",
            "--model",
            parent,
            "--max-firing",
            "0",
            "--no-save",
            "--out",
            str(out),
            "--sweep",
            str(tmp_path / "x"),
        ],
        env={"BENTOML_HOME": str(store)},
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((out / "prune.json").read_text())
    (level,) = report["levels"]
    assert report["parent_tag"] == parent
    assert level["max_abs_probability_change_on_train_before_fine_tune"] < 1e-5
    assert level["changed_predictions"] == 0.0
    for row in (report["parent"], level):
        assert row["forward_ms_1"] > 0 and row["forward_ms_256"] > 0
    assert set(level["units"]) == set(report["parent"]["units"])  # the tied groups, not the CNN's layers
