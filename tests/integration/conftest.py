from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from benchmarks.server import Server
from tests import onnx_models
from tests.tools import run_in_project

EXAMPLES = {
    "residual_cnn": ["--input-range", "0", "1", "--preprocessing", "mnist-digit"],
    "digits_onnx": ["--input-range", "0", "16"],
    "digits_mlp": [
        "--input-range",
        "0",
        "16",
        "--class-names",
        ",".join(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]),
    ],
}

HELPER_MODELS = {"small_onnx": 1, "colour_onnx": 3}
"""The ``onnx.helper`` CNNs the session serves, by their input channels."""


@pytest.fixture(scope="session")
def examples(trained, tmp_path_factory) -> dict[str, Path]:
    """The example models of ``examples/`` (all but the PyTorch one, whose torch the tests never need),
    trained by their scripts and registered with the CLI into the session store, as the README's walkthrough
    does; and the ``onnx.helper`` CNNs of :mod:`tests.onnx_models`, ``small_onnx`` on grey (1, 12, 12) inputs and
    ``colour_onnx`` on colour (3, 12, 12) ones. Returns the folder of each one's files."""
    out = tmp_path_factory.mktemp("examples")
    for name, channels in HELPER_MODELS.items():
        calibration = onnx_models.calibration(300, seed=channels, channels=channels)
        (out / f"{name}.onnx").write_bytes(onnx_models.cnn(channels=channels).SerializeToString())
        np.save(out / f"{name}_calibration.npy", calibration)
        np.save(out / f"{name}_labels.npy", onnx_models.labels(calibration))
    for name, options in [*EXAMPLES.items(), *((name, ["--input-range", "0", "1"]) for name in HELPER_MODELS)]:
        model = out / f"{name}.onnx"
        if name in EXAMPLES:
            done = run_in_project([sys.executable, f"examples/{name}.py", "--out", str(out)], timeout=600)
            assert done.returncode == 0, done.stderr[-3000:]
            model = model if model.exists() else out / f"{name}.keras"
        registered = run_in_project(
            [
                sys.executable,
                "-m",
                "training",
                "register",
                str(model),
                "--name",
                name,
                "--calibration",
                str(out / f"{name}_calibration.npy"),
                "--labels",
                str(out / f"{name}_labels.npy"),
                *options,
            ],
            timeout=300,
        )
        assert registered.returncode == 0, registered.stderr[-3000:]
    return {name: out for name in [*EXAMPLES, *HELPER_MODELS]}


@pytest.fixture(scope="session")
def server(trained, examples, tmp_path_factory):
    """A real one-worker ``bentoml serve`` of every model in the session store: the project's two tiny
    models and the two examples."""
    with Server(tmp_path_factory.mktemp("server") / "serve.log", workers=1) as srv:
        yield srv


@pytest.fixture(scope="session")
def reference(trained):
    """An independent view of the served MNIST model: Keras outputs of every ReLU layer, no probe."""
    import bentoml

    stored = bentoml.models.get("mnist_cnn:latest")
    model = keras.models.load_model(stored.path_of("model.keras"), compile=False)
    names = [l["name"] for l in stored.info.metadata["relu_layers"]]
    multi = keras.Model(model.inputs, [model.output, *[model.get_layer(n).output for n in names]])

    def compute(images: np.ndarray) -> dict:
        outs = [np.asarray(o) for o in multi([np.asarray(images, dtype=np.float32)], training=False)]
        layers = {n: (o.reshape(len(o), -1) == 0).mean(axis=1) for n, o in zip(names, outs[1:], strict=True)}
        zeros = sum((o.reshape(len(o), -1) == 0).sum(axis=1) for o in outs[1:])
        size = sum(o[0].size for o in outs[1:])
        # a unit fired on an image if its output was > 0 anywhere (conv: at any position)
        fired = {n: (o.reshape(len(o), -1, o.shape[-1]) > 0).any(axis=1) for n, o in zip(names, outs[1:], strict=True)}
        # and the share of its positions where it was on (the typicality detector's profile)
        shares = {
            n: (o.reshape(len(o), -1, o.shape[-1]) > 0).mean(axis=1) for n, o in zip(names, outs[1:], strict=True)
        }
        return {
            "probabilities": outs[0],
            "layers": layers,
            "overall": zeros / size,
            "fired": fired,
            "shares": shares,
            "tag": str(stored.tag),
        }

    return compute


@pytest.fixture(scope="session")
def letters() -> np.ndarray:
    """The typicality study's near-miss letters: A-J in every installed font, as MNIST-style digits."""
    from benchmarks.ood_sets import render_letters

    images, fonts = render_letters()
    assert len(fonts) >= 5, f"only {len(fonts)} fonts installed (make system-deps installs the font packages)"
    return images


@pytest.fixture(scope="session")
def test_images() -> tuple[np.ndarray, np.ndarray]:
    from training.data import load_mnist_5k

    split = load_mnist_5k(seed=0)
    return split.x_test, split.y_test


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SCREENSHOTS = Path(os.environ.get("SCREENSHOTS", Path(__file__).resolve().parents[2] / "reports" / "screenshots"))


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("chromium and chromedriver are missing: make system-deps installs Debian's chromium-driver")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a browser or a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1500"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()
