"""Shared fixtures. The model store is a temporary BENTOML_HOME for the whole session, set
before anything imports bentoml, so tests never touch the developer's store."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

_HOME = tempfile.mkdtemp(prefix="bentoml-home-")
os.environ["BENTOML_HOME"] = _HOME
os.environ["BENTOML_DO_NOT_TRACK"] = "true"

import pytest  # noqa: E402

from sparsity.logs import quiet_tensorflow  # noqa: E402

quiet_tensorflow()

ROOT = Path(__file__).resolve().parent.parent


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def bentoml_home() -> Path:
    return Path(_HOME)


@pytest.fixture(scope="session")
def trained(bentoml_home, tmp_path_factory) -> dict:
    """Both models trained tiny into the session store; returns their reports."""
    from training.iris import IrisOptions, train_iris
    from training.mnist import MnistOptions, train_mnist

    reports = tmp_path_factory.mktemp("reports")
    iris = train_iris(IrisOptions(), report_dir=reports)
    mnist = train_mnist(
        MnistOptions(dataset="mnist-5k", epochs=2, limit=1000, verbose=0),
        report_dir=reports,
    )
    return {"iris": iris, "mnist": mnist, "report_dir": reports}
