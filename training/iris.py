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

from modelstore.kinds.linear import LinearCard, register_linear
from modelstore.register import Calibration
from sparsity.linear import LinearProbe
from training import data
from training.datasets import IRIS_CLASS_NAMES, IRIS_FEATURE_LIMIT, IRIS_FEATURES, IRIS_MODEL_NAME

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
    return LinearProbe.from_fitted(model.named_steps["scale"], model.named_steps["logreg"])


def train_iris(opts: IrisOptions, report_dir: Path | None = None) -> dict:
    """Fit, then register as ``iris_l1`` (kind ``linear``) with the training rows as the calibration set
    and the held-back rows' accuracy as the training run's figure."""
    split = data.load_iris(opts.seed)
    model = fit(split, opts)
    accuracy = float(np.mean(probe_of(model).run(split.x_test).labels == split.y_test))

    def write(path: Path) -> None:
        skops.io.dump(model, path / LinearCard.MODEL_FILE)

    tag, card = register_linear(
        model.named_steps["scale"],
        model.named_steps["logreg"],
        IRIS_MODEL_NAME,
        Calibration(split.x_train, split.y_train, source="iris training rows"),
        write=write,
        feature_names=list(IRIS_FEATURES),
        class_names=list(IRIS_CLASS_NAMES),
        input_range=(-IRIS_FEATURE_LIMIT, IRIS_FEATURE_LIMIT),
        seed=opts.seed,
        facts={
            "dataset": "iris",
            "dataset_size": split.size,
            "train_size": len(split.x_train),
            "test_size": len(split.x_test),
            "test_accuracy": accuracy,
            "accuracy_on": f"the {len(split.x_test)} held-back rows",
            "options": asdict(opts),
            "seed": opts.seed,
        },
        labels={"task": "iris"},
        report_dir=report_dir,
    )
    log.info("saved %s: test accuracy %.4f, weight sparsity %.3f", tag, accuracy, card.weight_sparsity["coefficients"])
    return {"tag": tag, **card.metadata()}
