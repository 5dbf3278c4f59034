"""The docs against the code: the README's length and its figures about the default model, the generated
tables and figures of the site, the settings table, and the facts file against the model's card."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
FACTS = json.loads((DOCS / "reference" / "default-model.json").read_text())


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "scripts" / "docs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_is_short_and_points_at_the_docs():
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    for page in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / page).exists(), page


def test_the_readmes_figures_about_the_default_model_are_its_cards():
    text = " ".join(README.read_text().split())
    layers = FACTS["layers"]
    stated = (
        f"{layers['conv1']:.2f} / {layers['conv2']:.2f} / {layers['dense']:.2f} exact zeros in conv1 / conv2 / dense"
    )
    assert stated in text
    assert f"{FACTS['overall']:.3f} overall" in text
    assert f"{100 * FACTS['test_accuracy']:.1f}% on the held-back digits" in text
    assert f"the `{FACTS['preset']}` preset" in text


def test_the_facts_are_of_the_model_make_train_builds_by_default():
    """A new default preset, or new options for it, makes the facts (and every figure drawn from them) stale."""
    from training.presets import DEFAULT_PRESET, PRESETS

    assert FACTS["preset"] == DEFAULT_PRESET
    assert {k: FACTS["options"][k] for k in PRESETS[DEFAULT_PRESET]} == PRESETS[DEFAULT_PRESET]


def test_the_facts_are_the_stored_models_card_where_the_store_has_it():
    """Where the developer's store (``~/bentoml``, or ``DEFAULT_MODEL_STORE``) holds the tag the facts name, they
    are that card's (``scripts/default_model_facts.py --check``)."""
    store = Path(os.environ.get("DEFAULT_MODEL_STORE", Path.home() / "bentoml"))
    name, version = FACTS["tag"].split(":")
    if not (store / "models" / name / version).is_dir():
        pytest.skip(f"{store} does not hold {FACTS['tag']}")
    env = {**os.environ, "BENTOML_HOME": str(store), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "default_model_facts.py"), "--check", "--tag", FACTS["tag"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_every_page_renders_its_generated_tables_and_figures():
    hooks = _hooks()
    rendered = {path: hooks.on_page_markdown(path.read_text(), None, None, None) for path in DOCS.rglob("*.md")}
    for path, text in rendered.items():
        assert "<!-- table:" not in text and "{{ default." not in text, path
    speed = rendered[DOCS / "speed.md"]
    peers = json.loads((DOCS / "sparsity-lab" / "engines" / "peers.json").read_text())
    assert peers["date"] in speed and peers["machine"] in speed
    kserve = peers["systems"]["kserve"]["routes"]["V1"]["1 image, 1 conn"]
    assert f"| {kserve['requests_per_second']:,.0f}, {kserve['p50_ms']:.2f} / {kserve['p99_ms']:.2f} |" in speed
    index = rendered[DOCS / "index.md"]
    assert f"{FACTS['layers']['conv1']:.2f} /" in index and f"{FACTS['overall']:.3f} overall" in index
    with pytest.raises(ValueError, match="no table named"):
        hooks.on_page_markdown("<!-- table: nothing -->", None, None, None)
    with pytest.raises(ValueError, match=r"no 'layers\.conv9'"):
        hooks.on_page_markdown("{{ default.layers.conv9:2 }}", None, None, None)


def test_the_settings_table_is_the_settings_the_service_reads():
    from service.config import SETTINGS

    table = (DOCS / "configuration.md").read_text()
    documented = set()
    for row in re.findall(r"^\| (`[A-Z_]+`(?:, `[A-Z_]+`)*) \|", table, re.M):
        documented |= set(re.findall(r"`([A-Z_]+)`", row))
    read = {setting.env for setting in SETTINGS}
    assert documented - {"BENTOML_HOME"} == read
    everywhere = README.read_text() + "".join(p.read_text() for p in DOCS.rglob("*.md"))
    assert "MNIST_MODEL_TAG" not in everywhere and "KERAS_ENGINE=" not in everywhere
