from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def small_store(tmp_path_factory) -> dict[str, str]:
    """The environment of a model store of its own holding one registered model (iris, linear: no training
    of a network, a few seconds), for tests that import the service module in a child process: the service
    refuses to start from an empty store."""
    home = tmp_path_factory.mktemp("small-store")
    env = {**os.environ, "BENTOML_HOME": str(home), "PYTHONPATH": str(ROOT)}
    code = "from training.iris import IrisOptions, train_iris; train_iris(IrisOptions())"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    return env
