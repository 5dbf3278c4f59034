"""Train, evaluate and save the L1-regularised logistic-regression iris classifier."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import skops.io
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sparsity.card import IrisCard
from sparsity.contract import IRIS_CLASS_NAMES, IRIS_FEATURE_LIMIT, IRIS_FEATURES, IRIS_MODEL_FILE, IRIS_MODEL_NAME
from sparsity.linear import LinearProbe
from sparsity.typicality import calibrate
from training import data
from training.store import save_model
from training.versions import library_versions

log = logging.getLogger(__name__)


@dataclass
class IrisOptions:
    c: float = 0.1
    max_iter: int = 5000
    seed: int = 0


def fit(split: data.Split, opts: IrisOptions) -> Pipeline:
    """StandardScaler + pure-L1 logistic regression (saga; liblinear's l1 fails for 3 classes)."""
    model = Pipeline(
        [
            ("scale", StandardScaler()),
            (
                "logreg",
                LogisticRegression(
                    C=opts.c, l1_ratio=1.0, solver="saga", max_iter=opts.max_iter, random_state=opts.seed
                ),
            ),
        ]
    )
    return model.fit(split.x_train, split.y_train)


def probe_of(model: Pipeline) -> LinearProbe:
    """The core's linear probe over the fitted pipeline: the same pass the service runs."""
    return LinearProbe(model.named_steps["scale"], model.named_steps["logreg"], limit=IRIS_FEATURE_LIMIT)


def train_iris(opts: IrisOptions, report_dir: Path | None = None) -> dict:
    split = data.load_iris(opts.seed)
    model = fit(split, opts)
    probe = probe_of(model)
    test, train = probe.run(split.x_test), probe.run(split.x_train)
    accuracy = float(np.mean(test.labels == split.y_test))
    sp = test.sparsity
    typicality = calibrate(
        train.scaled,
        train.scaled,
        features=list(IRIS_FEATURES),
        false_alarm_rate=0.01,
        shrinkage=0.01,
        calibration_name=f"{len(split.x_train)} training rows (standardized features)",
    )
    typicality = typicality.measured(test.scaled, on=f"the {len(split.x_test)} held-back rows")
    metadata = {
        "dataset": "iris",
        "dataset_size": split.size,
        "train_size": len(split.x_train),
        "test_size": len(split.x_test),
        "test_accuracy": accuracy,
        "weight_sparsity": {"coefficients": sp.weights},
        "contribution_sparsity": {
            "mean": float(np.mean(sp.contributions)),
            "std": float(np.std(sp.contributions)),
        },
        "coefficients": model.named_steps["logreg"].coef_.tolist(),
        "typicality": typicality.to_dict(),
        "feature_names": list(IRIS_FEATURES),
        "class_names": list(IRIS_CLASS_NAMES),
        "options": asdict(opts),
        "seed": opts.seed,
        "versions": library_versions(),
    }

    def write(path: Path) -> None:
        skops.io.dump(model, path / IRIS_MODEL_FILE)

    metadata = IrisCard.model_validate(metadata).metadata()  # what the service will read, checked now
    tag = save_model(IRIS_MODEL_NAME, write, labels={"task": "iris"}, metadata=metadata, report_dir=report_dir)
    log.info("saved %s: test accuracy %.4f, weight sparsity %.3f", tag, accuracy, sp.weights)
    return {"tag": tag, **metadata}
