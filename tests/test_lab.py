"""The sparsity lab end to end: a --quick sweep (files, frontier, rule, resume) and prune from the CLI."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from lab.frontier import pareto_frontier, select_default
from sparsity import logs
from tests.tools import run_in_project

pytestmark = pytest.mark.slow


def _lab(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return run_in_project([sys.executable, "-m", "lab", *args], env=env, timeout=timeout)


def _training(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return run_in_project([sys.executable, "-m", "training", *args], env=env, timeout=timeout)


@pytest.fixture(scope="module")
def quick_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    run = _lab("sweep", "--quick", "--design", "relu,fatrelu", "--out", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    return out, run


def test_quick_sweep_writes_rows_points_and_the_plot(quick_sweep):
    out, run = quick_sweep
    summary = json.loads((out / "results.json").read_text())
    assert len(summary["runs"]) == 2 * 2 * 2  # 2 L1 values x 2 designs x 2 seeds
    assert {r["seed"] for r in summary["runs"]} == {0, 1}
    assert len(summary["points"]) == 4 and all(p["seeds"] == 2 for p in summary["points"])
    for run_row in summary["runs"]:
        assert {"sparsity_conv1", "sparsity_conv2", "sparsity_dense", "sparsity_all", "dead_dense"} <= set(run_row)
        assert 0.0 <= run_row["sparsity_all"] <= 1.0 and run_row["train_seconds"] > 0
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["kind"] for r in rows].count("run") == 8 and [r["kind"] for r in rows].count("point") == 4
    png = (out / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # one progress line per run, with an ETA, and the chosen point named at the end
    assert run.stderr.count("ETA") == 8
    assert "chosen by the rule" in run.stderr


def test_frontier_and_choice_follow_from_the_csv_rows(quick_sweep):
    out, _ = quick_sweep
    with (out / "results.csv").open() as f:
        points = [
            {**r, **{k: float(r[k]) for k in ("test_accuracy_mean", "test_accuracy_std", "sparsity_all_mean")}}
            for r in csv.DictReader(f)
            if r["kind"] == "point"
        ]
    summary = json.loads((out / "results.json").read_text())
    assert summary["chosen"] == select_default(points)["point"]
    assert summary["frontier"] == [p["point"] for p in pareto_frontier(points)]


def test_resume_skips_finished_runs_and_trains_only_new_ones(quick_sweep, tmp_path):
    out, _ = quick_sweep
    copy = tmp_path / "sweep"
    shutil.copytree(out, copy)
    again = _lab("sweep", "--quick", "--design", "relu,fatrelu,kwta", "--l1", "0", "--out", str(copy), "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 to train (4 already done)" in again.stderr
    summary = json.loads((copy / "results.json").read_text())
    assert len(summary["runs"]) == 8 + 2  # the 8 old runs are kept; only kwta's 2 seeds were trained


def test_sweep_options_are_checked():
    run = _lab("sweep", "--design", "relu,swish")
    assert run.returncode == 2 and "swish not among relu, fatrelu, kwta" in run.stderr


def test_prune_from_the_cli_saves_a_pruned_model_the_service_loads(trained, bentoml_home, tmp_path):
    import bentoml

    store = tmp_path / "store"
    shutil.copytree(bentoml_home, store)  # the session store stays as it is for the other tests
    parent = bentoml.models.get("mnist_cnn:latest")
    run = _lab(
        "prune",
        "--max-firing",
        "0",
        "--out",
        str(tmp_path / "prune"),
        "--sweep",
        str(tmp_path / "none"),
        env={"BENTOML_HOME": str(store)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "prune" / "prune.json").read_text())
    (level,) = report["levels"]
    assert report["parent_tag"] == str(parent.tag)
    assert level["max_abs_probability_change_on_train_before_fine_tune"] < 1e-5
    for row in (report["dense_reference"], report["parent"], level):
        assert row["forward_ms_1"] > 0 and row["forward_ms_256"] > 0
    script = (
        "import bentoml, json, numpy as np; from modelstore.kinds import from_store; "
        "m = bentoml.models.get('mnist_cnn:latest'); r = from_store('mnist_cnn:latest'); r.warm_up(); "
        "print(json.dumps({'labels': m.info.labels, 'parent': m.info.metadata['parent'], "
        "'units': [l.units for l in r.card.relu_layers]}))"
    )
    listing = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "BENTOML_HOME": str(store)},
        check=True,
        timeout=120,
    )
    info = json.loads(listing.stdout)
    assert info["labels"]["pruned"] == "true" and info["parent"] == str(parent.tag)
    kept = [u - level["units_removed"][n] for u, n in zip([32, 64, 128], ["conv1", "conv2", "dense"], strict=True)]
    assert info["units"] == kept


def test_prune_names_a_missing_model():
    run = _lab("prune", "--model", "mnist_cnn:doesnotexist", "--no-save")
    assert run.returncode == 2 and "no model mnist_cnn:doesnotexist" in run.stderr


def test_training_mnist_with_the_sparse_preset_saves_the_parent_then_the_pruned_model(tmp_path):
    store, reports = tmp_path / "store", tmp_path / "reports"
    small = ("--dataset", "mnist-5k", "--epochs", "1", "--limit", "300", "--quiet", "--report-dir", str(reports))
    run = _training("mnist", *small, "--preset", "sparse", env={"BENTOML_HOME": str(store)})
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((reports / "mnist_cnn.json").read_text())  # the served model's report: the pruned one
    assert report["provenance"]["preset"] == "sparse" and report["options"]["activity_l1"] == 3e-3
    assert report["pruned"]["by"] == "activations" and report["pruned"]["max_firing"] == 0.02
    assert report["parent"] != report["tag"] and report["provenance"]["pruned_from"] == report["parent"]
    units = [layer["units"] for layer in report["relu_layers"]]
    assert units == [
        u - report["pruned"]["units_removed"][n]
        for u, n in zip([32, 64, 128], ["conv1", "conv2", "dense"], strict=True)
    ]
    default = _training("mnist", *small, env={"BENTOML_HOME": str(store)})
    assert default.returncode == 0, default.stderr[-3000:]
    report = json.loads((reports / "mnist_cnn.json").read_text())
    assert report["provenance"]["preset"] == "controlled" and report["options"]["hoyer"] == 1.0
    assert report["options"]["control"] == 0.87 and report["options"]["ramp"] == 0.3
    assert "pruned" not in report and [layer["units"] for layer in report["relu_layers"]] == [32, 64, 128]


def test_training_into_a_log_writes_one_formatted_line_per_epoch_and_no_progress_bar(tmp_path):
    """Not a terminal (a pipe, as under make serve > log or CI): Keras' redrawn bar would write escape
    codes and carriage returns; instead each epoch is one log line in the project's format."""
    args = ("--dataset", "mnist-5k", "--preset", "dense", "--epochs", "3", "--limit", "300")
    run = _training("mnist", *args, "--report-dir", str(tmp_path / "r"), env={"BENTOML_HOME": str(tmp_path / "s")})
    assert run.returncode == 0, run.stderr[-3000:]
    output = run.stdout + run.stderr
    assert "\x1b" not in output and "\r" not in output and "━" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines and all(re.match(logs.LINE_PATTERN, line) for line in lines), lines
    epochs = [line for line in lines if "[training.mnist] epoch " in line]
    assert [re.search(r"epoch (\d)/3: ", line).group(1) for line in epochs] == ["1", "2", "3"]
    assert all(re.search(r"accuracy 0\.\d{4}, loss \d+\.\d{4} \(\d+\.\d s", line) for line in epochs), epochs
    assert "ETA" in epochs[0] and "ETA" not in epochs[-1]


def test_quick_depth_study_writes_its_rows_plots_and_resumes(tmp_path):
    from lab.depth import choose
    from training.resnet import ResNetSpec

    out = tmp_path / "depth"
    run = _lab("depth", "--quick", "--out", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((out / "results.json").read_text())
    assert len(summary["runs"]) == 2 * 2 and len(summary["points"]) == 2
    for row in summary["runs"]:  # every ReLU of the configuration, inside the blocks too, in graph order
        names = ResNetSpec(row["depth"], row["width"], row["placement"]).relu_names()
        assert row["layers"].split("|") == names
        assert all(0.0 <= row[f"sparsity_{n}"] <= 1.0 and f"dead_{n}" in row for n in names)
        assert row["dataset_used"] == "mnist-5k" and row["train_seconds"] > 0
    assert summary["chosen"] == choose(summary["points"])["point"]
    with (out / "results.csv").open() as f:
        kinds = [r["kind"] for r in csv.DictReader(f)]
    assert kinds.count("run") == 4 and kinds.count("point") == 2
    for plot in ("layers.png", "scaling.png", "pareto.png"):
        png = (out / plot).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000, plot
    assert run.stderr.count("ETA") == 4 and "chosen by the rule" in run.stderr
    again = _lab("depth", "--quick", "--out", str(out), "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 to train (4 already done)" in again.stderr
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 4


def test_depth_and_resnet_options_are_checked():
    run = _lab("depth", "--jobs", "0")
    assert run.returncode == 2 and "--jobs" in run.stderr
    run = _training("resnet", "--placement", "middle")
    assert run.returncode == 2 and "middle" in run.stderr


def test_quick_every_layer_study_writes_rows_table_plots_and_resumes(tmp_path):
    from training.extra_digits import load_extra_digits

    out = tmp_path / "every"
    run = _lab("every-layer", "--quick", "--out", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((out / "results.json").read_text())
    assert len(summary["runs"]) == 4 and {r["family"] for r in summary["runs"]} == {"cnn", "resnet"}
    extra = load_extra_digits() is not None
    assert summary["measured_on"] == ("the 5,000 extra digits" if extra else "the held-back split")
    for row in summary["runs"]:
        names = row["layers"].split("|")
        assert all(0.0 <= row[f"sparsity_{n}"] <= 1.0 for n in [*names, "all"])
        assert row["next_kernel_norm"] > 0 and 0.0 <= row["last_hoyer_density"] <= 1.0
        assert ("extra_accuracy" in row) == extra
    threshold = next(r for r in summary["runs"] if r["method"] == "threshold")
    assert json.loads(threshold["thresholds"]), "a 1-epoch CNN falls short of 90% zeros somewhere: a threshold is set"
    assert "| point |" in (out / "results.md").read_text()
    for plot in ("layers.png", "scale.png"):
        png = (out / plot).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000, plot
    again = _lab("every-layer", "--quick", "--out", str(out), "--resume")
    assert again.returncode == 0 and "0 to train (4 already done)" in again.stderr
