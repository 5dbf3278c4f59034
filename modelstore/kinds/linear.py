"""Kind ``linear``: a standardising step plus a linear classifier (scikit-learn's ``LogisticRegression``,
alone or after a ``StandardScaler``), e.g. the L1-regularised iris model.

- file: ``model.skops``, kept beside the card but never read by the service: it serves from the card's
  coefficients and scaler (no scikit-learn, no file to unpickle);
- registration: a ``.skops`` file is loaded with skops' own trusted types only; the typicality score is the
  Mahalanobis distance of the standardized features (``profile-mahalanobis``);
- the answers carry weight sparsity and the share of coefficient x feature terms that are exactly zero.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from modelstore.card import MeanStd, ModelCard, ModelCardError
from modelstore.files import save_model
from modelstore.kind import Kind, LoadOptions
from modelstore.register import (
    FALSE_ALARM_RATE,
    Calibration,
    Parts,
    RegistrationError,
    accuracy_on,
    calibration_facts,
    check_calibration,
    check_name,
    class_names_for,
    input_range_of,
    merge,
    out_of_fold,
    shown_facts,
    split,
)
from modelstore.runtime import Prediction, Runtime
from modelstore.versions import library_versions
from sparsity.contract import LINEAR_LAYER
from sparsity.linear import LinearProbe
from sparsity.typicality import calibrate, ledoit_wolf_shrinkage

NAME = "linear"
TYPICALITY_SHRINKAGE = 0.01
"""The least shrinkage of the typicality covariance; more when the Ledoit-Wolf estimate asks for it (few
calibration rows for the profile's columns). Little is right where rows are many: the layers' zero
fractions are strongly correlated, and that correlation is what sets unusual inputs apart (measured on
MNIST: 0.1 already lets a share of noise images through; Ledoit-Wolf gives 0.012 there)."""


class LinearCard(ModelCard):
    PUBLIC: ClassVar[tuple[str, ...]] = (*ModelCard.PUBLIC, "contribution_sparsity", "feature_names")
    MODEL_FILE: ClassVar[str] = "model.skops"

    kind: Literal[NAME]
    contribution_sparsity: MeanStd
    coefficients: list[list[float]] = Field(min_length=1)  # (classes, features); one row for two classes
    intercept: list[float] = Field(min_length=1)
    scaler_mean: list[float]
    scaler_scale: list[float]
    feature_names: list[str]

    def summary_lines(self) -> list[str]:
        stats = self.contribution_sparsity
        return [
            f"  sparsity weights {self.weight_sparsity[LINEAR_LAYER]:.3f} zero; "
            f"contributions {stats.mean:.3f} +/- {stats.std:.3f}"
        ]

    def log_text(self) -> str:
        weights = ", ".join(f"{name} {value:.3f}" for name, value in self.weight_sparsity.items())
        return f"weight sparsity {weights}; contribution sparsity baseline {self.contribution_sparsity.mean:.3f}"


class LinearRuntime(Runtime):
    engine = "numpy"

    def __init__(self, tag: str, card: LinearCard, path: str | None = None, options: LoadOptions | None = None) -> None:
        super().__init__(tag, card)
        try:
            self.probe = LinearProbe(
                card.coefficients,
                card.intercept,
                card.scaler_mean,
                card.scaler_scale,
                field="inputs",
                value_range=self.value_range,
            )
        except ValueError as exc:
            raise ModelCardError(f"model {tag}: {exc}") from None
        self.layers = [LINEAR_LAYER]

    def predict(self, x: np.ndarray) -> Prediction:
        result = self.probe.run(x)
        scores, atypical = self.card.typicality.flag(result.scaled)
        contributions = result.sparsity.contributions
        return Prediction(
            probabilities=result.probabilities,
            layer_sparsity={LINEAR_LAYER: contributions},
            overall=contributions,
            scores=scores,
            atypical=atypical,
            weights=result.sparsity.weights,
            contributions=contributions,
        )


def typicality_and_accuracy(profiles, labels_pred, calibration: Calibration, parts: Parts, features, describe: str):
    """A linear model's ``profile-mahalanobis`` score, fitted on the first part with its threshold from
    out-of-fold scores of the first two (:func:`out_of_fold`, as for ``unit-firing``); its false-alarm rate and
    the accuracy measured on the part used for nothing else. Measured on iris (40 rows a part): fitted and
    thresholded on the same 40 rows, 7.5% false alarms on the other 40."""

    def fit(rows: np.ndarray):
        part = profiles[rows]
        return calibrate(
            part,
            part,
            features=list(features),
            false_alarm_rate=FALSE_ALARM_RATE,
            shrinkage=min(1.0, max(TYPICALITY_SHRINKAGE, ledoit_wolf_shrinkage(part))),
        )

    served, threshold, unseen = out_of_fold(fit, profiles, parts)
    scored = len(unseen)
    typicality = served.model_copy(
        update={
            "threshold": threshold,
            "calibration": f"{scored} out-of-fold scores of calibration items ({describe})",
            "calibration_size": scored,
            "fit_size": len(parts.baseline),
        }
    )
    typicality = typicality.measured(profiles[parts.measured], on=f"{len(parts.measured)} other calibration items")
    return typicality, accuracy_on(labels_pred, calibration, parts)


def register_linear(
    scaler,
    classifier,
    name: str,
    calibration: Calibration,
    *,
    write,
    feature_names: list[str],
    class_names: list[str] | None = None,
    input_range: tuple[float, float] | None = None,
    seed: int = 0,
    facts: dict | None = None,
    labels: dict | None = None,
    report_dir: Path | None = None,
) -> tuple[str, LinearCard]:
    """Card and store entry of a fitted standardising step plus linear classifier (kind ``linear``);
    ``write(directory)`` saves the fitted objects next to the card (the service serves from the card)."""
    check_name(name)
    probe = LinearProbe.from_fitted(scaler, classifier)
    check_calibration(calibration, probe.item_shape, probe.classes)
    low, high = input_range_of(calibration, input_range)
    parts = split(len(calibration.x), seed)
    result = probe.run(calibration.x)
    typicality, accuracy = typicality_and_accuracy(
        result.scaled, result.labels, calibration, parts, feature_names, "standardized features"
    )
    contributions = result.sparsity.contributions[parts.baseline]
    card = LinearCard.model_validate(
        merge(
            {
                "kind": NAME,
                "input_shape": [probe.item_shape[0]],
                "input_range": [low, high],
                "class_names": class_names_for(class_names, probe.classes),
                "feature_names": list(feature_names),
                "coefficients": probe.coef.tolist(),
                "intercept": probe.intercept.tolist(),
                "scaler_mean": probe.mean.tolist(),
                "scaler_scale": probe.scale.tolist(),
                "weight_sparsity": {LINEAR_LAYER: result.sparsity.weights},
                "contribution_sparsity": {"mean": float(np.mean(contributions)), "std": float(np.std(contributions))},
                "typicality": typicality.to_dict(),
                "test_accuracy": accuracy,
                "accuracy_on": None if accuracy is None else f"{len(parts.measured)} measured calibration items",
                "calibration": calibration_facts(calibration, parts, seed),
                "versions": library_versions(),
                **shown_facts(calibration, parts, probe.item_shape),
            },
            facts,
        )
    )
    tag = save_model(
        name, write, labels={"kind": card.kind, **(labels or {})}, metadata=card.metadata(), report_dir=report_dir
    )
    return tag, card


class _Identity:
    """The standardising step of a bare classifier: it leaves the features as they are."""

    def __init__(self, features: int) -> None:
        self.mean_ = np.zeros(features)
        self.scale_ = np.ones(features)


def linear_parts(fitted) -> tuple[object, object]:
    """``(scaler, classifier)`` of a fitted ``LogisticRegression``, or of a ``Pipeline`` of a
    ``StandardScaler`` then a ``LogisticRegression``; RegistrationError for anything else."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    rule = "a kind linear model is a fitted LogisticRegression, or a Pipeline of a StandardScaler then one"
    if isinstance(fitted, LogisticRegression) and hasattr(fitted, "coef_"):
        return _Identity(fitted.coef_.shape[1]), fitted
    if isinstance(fitted, Pipeline) and len(fitted.steps) == 2:
        scaler, classifier = (step for _, step in fitted.steps)
        standard = isinstance(scaler, StandardScaler) and scaler.with_mean and scaler.with_std
        if standard and isinstance(classifier, LogisticRegression) and hasattr(classifier, "coef_"):
            return scaler, classifier
    raise RegistrationError(f"{type(fitted).__name__} is not supported: {rule}")


def load_skops_safely(path: Path):
    """A ``.skops`` file loaded with skops' own trusted types only: a file that asks for others is refused."""
    import skops.io

    try:
        untrusted = skops.io.get_untrusted_types(file=path)
        if untrusted:
            raise RegistrationError(f"{path} asks for types that are not trusted: {untrusted}")
        return skops.io.load(path, trusted=[])
    except RegistrationError:
        raise
    except Exception as exc:  # a file skops cannot read
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RegistrationError(f"{path} could not be read by skops: {first}") from None


def register_file(
    path: Path,
    name: str,
    calibration: Calibration,
    *,
    feature_names: list[str] | None = None,
    preprocessing: str | None = None,
    **options,
) -> tuple[str, LinearCard]:
    """``register`` of a ``.skops`` file: a fitted ``LogisticRegression``, alone or after a ``StandardScaler``."""
    check_name(name)
    if preprocessing is not None:
        raise RegistrationError("--preprocessing: a linear model takes rows of features, not pictures")
    scaler, classifier = linear_parts(load_skops_safely(path))
    features = classifier.coef_.shape[1]
    names = feature_names or [f"x{i}" for i in range(features)]
    if len(names) != features:
        raise RegistrationError(f"--feature-names: the model has {features} features, {len(names)} names were given")

    def write(directory: Path) -> None:
        shutil.copyfile(path, directory / LinearCard.MODEL_FILE)

    return register_linear(scaler, classifier, name, calibration, write=write, feature_names=names, **options)


KIND = Kind(
    name=NAME,
    card=LinearCard,
    runtime=LinearRuntime,
    suffixes=(".skops",),
    register_file=register_file,
    describes="A linear classifier's card and baselines",
)
