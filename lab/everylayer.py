"""``python -m lab every-layer``: making the last layers sparse too, and testing why they resist L1.

Each point is a model family (the CNN of ``python -m training mnist``, or the served residual net: post-
activation, 1 block per stage, width 2) and a sparsity method, trained with several seeds on the same data
and splits as the other studies. The methods (:data:`METHODS`, presets in :func:`default_points`):

- ``l1``: the L1 activity penalty alone, at several strengths (the scale experiment);
- ``l1-capped``: the same with every kernel that reads a ReLU output capped to unit norm per unit (the
  classifier's in the residual net, where batch norm renormalises the convolutions), so that the network
  cannot shrink a layer and grow the next layer's weights to pay less L1;
- ``hoyer``: a Hoyer-square penalty per layer, normalised by the layer's element count, ramped in over the
  first 30% of training (scale-invariant); ``hoyer-capped``, ``hoyer-nogamma`` (batch norm without gamma)
  with the rescaling blocked as well;
- ``kwta-short``: k-winners-take-all on the layers that fall short only (identical in training and at
  inference), L1 elsewhere;
- ``threshold``: per-layer FATReLU thresholds at a target zero share, set from the training
  pre-activations, then fine-tuned (:mod:`training.thresholds`);
- ``controlled``: Hoyer (and L1) whose strength a per-layer controller raises while a layer has fewer zeros
  than its target (:mod:`training.controller`).

Every run records, on the held-back split and on the 5,000 extra digits when ``make extra-digits`` fetched
them (:mod:`training.extra_digits`): accuracy, each ReLU layer's zero share and dead units; and for the scale
argument, the last hidden layer's mean activation, its mean over the units that fired, the Frobenius norm of
the classifier's kernel that reads it, and the layer's Hoyer density. The machinery is the sweep's: rows
written after every run, ``--resume``, ``--jobs``, progress with an ETA.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lab.frontier import aggregate
from lab.sweep import RUN_SETTINGS, Results, SweepConfig, pending_runs, run_all
from sparsity.logs import quiet_tensorflow, set_tensorflow_threads
from training.progress import Progress

FAMILIES = ("cnn", "resnet")
METHODS = ("l1", "l1-capped", "hoyer", "hoyer-capped", "hoyer-nogamma", "kwta-short", "threshold", "controlled")
POINT_FIELDS = (
    "family",
    "method",
    "l1",
    "hoyer",
    "ramp",
    "max_norm",
    "bn_scale",
    "kwta_layers",
    "kwta_density",
    "target",
    "fine_tune",
    "control",
)
TARGETS = {"cnn": {"every_layer": 0.85, "overall": 0.95}, "resnet": {"every_layer": 0.75, "overall": 0.90}}
"""Issue 30's targets on the held-back digits, per family."""
RESNET = {"depth": 1, "width": 2.0, "placement": "post"}
"""The served residual net's architecture (training.presets.RESNET_PRESET)."""
SCALE_L1S = (0.0, 1e-4, 1e-3, 3e-3, 1e-2)
"""The scale experiment's L1 strengths on the CNN; 3e-3 is the served default's."""
HOYER_RAMP = 0.3
COLLAPSED = 0.5
"""Mean accuracy below which a point counts as collapsed (10 classes: chance is 0.1), whatever its zeros."""


@dataclass(frozen=True)
class LayerPoint:
    """A model family and one sparsity method with its settings."""

    family: str = "cnn"
    method: str = "l1"
    l1: float = 0.0
    hoyer: float = 0.0
    ramp: float = 0.0
    max_norm: float = 0.0
    bn_scale: bool = True
    kwta_layers: str = ""  # "|"-separated layer names
    kwta_density: float = 0.1
    target: float = 0.0  # threshold: every layer's zero-share target
    fine_tune: int = 0
    control: float = 0.0  # controlled: the zero share the per-layer controller drives each layer toward

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")

    @property
    def key(self) -> str:
        parts = [f"l1={self.l1:g}"] if self.l1 or not self.hoyer else []
        if self.hoyer:
            parts.append(f"hoyer={self.hoyer:g}")
        if self.ramp:
            parts.append(f"ramp{self.ramp:g}")
        if self.max_norm:
            parts.append(f"cap{self.max_norm:g}")
        if not self.bn_scale:
            parts.append("no-gamma")
        if self.kwta_layers:
            parts.append(f"kwta[{self.kwta_layers.replace('|', ',')}](d={self.kwta_density:g})")
        if self.target:
            parts.append(f"threshold@{self.target:g}+ft{self.fine_tune}")
        if self.control:
            parts.append(f"control@{self.control:g}")
        return f"{self.family}/{self.method}/{'+'.join(parts)}"

    def layer_spec(self):
        from training.models import LayerSpec

        return LayerSpec(
            activity_l1=self.l1,
            hoyer=self.hoyer,
            ramp=self.ramp,
            max_norm=self.max_norm,
            kwta_layers=tuple(filter(None, self.kwta_layers.split("|"))),
            kwta_density=self.kwta_density,
            control=self.control,
        )


def default_points() -> list[LayerPoint]:
    """The study: the scale experiment on the CNN (L1 with and without the cap), then each method on each
    family, at settings chosen by short trial runs (README, "Why the last layer resists L1")."""
    cnn = [LayerPoint(l1=l1) for l1 in SCALE_L1S]
    cnn += [LayerPoint(method="l1-capped", l1=l1, max_norm=1.0) for l1 in (1e-3, 3e-3, 1e-2)]
    cnn += [
        LayerPoint(method="hoyer", hoyer=0.3, ramp=HOYER_RAMP),
        LayerPoint(method="hoyer-capped", hoyer=0.3, ramp=HOYER_RAMP, max_norm=1.0),
        LayerPoint(method="hoyer", l1=1e-3, hoyer=1.0, ramp=HOYER_RAMP),
        LayerPoint(method="hoyer", l1=3e-3, hoyer=1.0, ramp=HOYER_RAMP),
        LayerPoint(method="kwta-short", l1=3e-3, kwta_layers="dense", kwta_density=0.1),
        LayerPoint(method="kwta-short", l1=1e-3, kwta_layers="dense", kwta_density=0.1),
        LayerPoint(method="kwta-short", l1=1e-3, kwta_layers="dense", kwta_density=0.15),
        LayerPoint(method="threshold", l1=3e-3, target=0.9, fine_tune=3),
        LayerPoint(method="threshold", l1=1e-3, hoyer=1.0, ramp=HOYER_RAMP, target=0.88, fine_tune=3),
        LayerPoint(method="controlled", l1=1e-3, hoyer=1.0, ramp=HOYER_RAMP, control=0.9),
        LayerPoint(method="controlled", l1=1e-3, hoyer=1.0, ramp=HOYER_RAMP, control=0.85),
        LayerPoint(method="controlled", l1=3e-4, hoyer=1.0, ramp=HOYER_RAMP, control=0.87),
    ]
    last = "s2b0_relu1|s2b0_out"
    resnet = [
        LayerPoint("resnet", l1=1e-5),
        LayerPoint("resnet", "hoyer", hoyer=0.3, ramp=HOYER_RAMP),
        LayerPoint("resnet", "hoyer-nogamma", hoyer=0.3, ramp=HOYER_RAMP, bn_scale=False),
        LayerPoint("resnet", "kwta-short", l1=1e-5, kwta_layers=last, kwta_density=0.2),
        LayerPoint("resnet", "threshold", l1=1e-5, target=0.8, fine_tune=3),
        LayerPoint("resnet", "controlled", l1=1e-5, hoyer=0.3, ramp=HOYER_RAMP, control=0.8),
    ]
    return cnn + resnet


def quick_points() -> list[LayerPoint]:
    """Tiny runs for tests: L1 (the scale plot), Hoyer with the cap, thresholds, and a residual net without gamma."""
    return [
        LayerPoint(l1=1e-3),
        LayerPoint(method="hoyer", hoyer=0.3, ramp=HOYER_RAMP, max_norm=1.0),
        LayerPoint(method="threshold", l1=1e-3, target=0.9, fine_tune=1),
        LayerPoint("resnet", "hoyer-nogamma", hoyer=0.3, ramp=HOYER_RAMP, bn_scale=False),
    ]


@dataclass
class EveryLayerConfig(SweepConfig):
    points: list[LayerPoint]
    width: float = RESNET["width"]
    out_dir: Path = field(default_factory=lambda: Path("reports/every-layer"))


def _fit(point: LayerPoint, split, seed: int, settings: dict):
    """The trained model, the function that builds its family from a LayerSpec, and its ReLU layers."""
    from training import models
    from training.controller import controlled
    from training.mnist import MnistOptions, fit
    from training.resnet import ResNetSpec, build_resnet
    from training.resnet_fit import fit_resnet_spec

    spec = point.layer_spec()
    epochs, batch, limit = settings["epochs"], settings["batch_size"], settings["limit"]
    if point.family == "resnet":
        rspec = ResNetSpec(RESNET["depth"], settings["width"], RESNET["placement"], bn_scale=point.bn_scale)
        callbacks = controlled(spec.control, split.x_train)
        model = fit_resnet_spec(split, rspec, spec, seed, epochs, batch, limit, callbacks)
        return model, (lambda s: build_resnet(rspec, s, seed)), rspec.relu_names()
    options = {name: getattr(spec, name) for name in ("hoyer", "ramp", "max_norm", "kwta_layers", "kwta_density")}
    opts = MnistOptions(
        dataset=settings["dataset"],
        epochs=epochs,
        batch_size=batch,
        limit=limit,
        seed=seed,
        verbose=0,
        activity_l1=spec.activity_l1,
        control=spec.control,
        **options,
    )
    return fit(split, opts), (lambda s: models.build_cnn(s, seed)), list(models.CNN_LAYERS)


def scale_figures(model, last: str, x) -> dict:
    """The scale argument's quantities: the last hidden layer's activations and the classifier reading them."""
    import keras
    import numpy as np

    from sparsity.layers import hoyer_density

    activations = keras.Model(model.inputs[0], model.get_layer(last).output).predict(x, batch_size=256, verbose=0)
    fired = activations[activations > 0]
    kernel = np.asarray(model.get_layer("probabilities").kernel)
    figures = {
        "last_mean_activation": float(activations.mean()),
        "last_mean_fired": float(fired.mean()) if fired.size else 0.0,
        "next_kernel_norm": float(np.linalg.norm(kernel)),
        "last_hoyer_density": hoyer_density(activations),
    }
    names = {layer.name for layer in model.layers}
    bn = f"{last.rsplit('_', 1)[0]}_bn2"
    if bn in names and model.get_layer(bn).scale:  # post-activation: the BN before the last ReLU
        gamma, beta = (np.asarray(w) for w in model.get_layer(bn).get_weights()[:2])
        figures["last_bn_gamma"] = float(np.abs(gamma).mean())
        figures["last_bn_beta_over_gamma"] = float(np.median(beta / np.where(gamma == 0, 1e-12, gamma)))
    return figures


def train_one(point: dict, seed: int, settings: dict, threads: int = 0) -> dict:
    """Train and evaluate one (point, seed); runs in a worker process. Returns the run's row."""
    quiet_tensorflow()
    if threads:
        set_tensorflow_threads(threads, threads)
    from training import data
    from training.extra_digits import load_extra_digits
    from training.mnist import evaluate
    from training.thresholds import threshold_and_fine_tune

    p = LayerPoint(**point)
    split = data.load_mnist(settings["dataset"], seed)
    start = time.perf_counter()
    model, build, layers = _fit(p, split, seed, settings)
    spec = p.layer_spec()
    if p.target:
        x, y = split.x_train, split.y_train
        if settings["limit"]:
            x, y = x[: settings["limit"]], y[: settings["limit"]]
        targets = dict.fromkeys(layers, p.target)
        model, spec = threshold_and_fine_tune(build, model, spec, layers, x, y, targets, p.fine_tune)
    seconds = time.perf_counter() - start
    row = {"point": p.key, **asdict(p), "seed": seed, **settings, "layers": "|".join(layers)}
    row["params"] = int(model.count_params())
    row["thresholds"] = json.dumps({name: round(t, 5) for name, t in spec.thresholds})
    sets = {"": (split.x_test, split.y_test)}
    extra = load_extra_digits()
    if extra is not None:
        sets["extra_"] = extra
    for prefix, (x, y) in sets.items():
        ev = evaluate(model, x, y)
        row[f"{prefix}accuracy"] = ev["test_accuracy"]
        for layer in [*layers, "all"]:
            row[f"{prefix}sparsity_{layer}"] = ev["activation_sparsity"][layer]["mean"]
        for layer in layers:
            row[f"{prefix}dead_{layer}"] = ev["dead_unit_ratio"][layer]
    row["test_accuracy"] = row["accuracy"]
    row.update(scale_figures(model, layers[-1], split.x_test))
    row["train_seconds"] = round(seconds, 2)
    return row


def meets_targets(point: dict, prefix: str = "") -> bool:
    """Whether a point's mean sparsities meet its family's :data:`TARGETS` (on ``prefix``'s digits)."""
    target = TARGETS[point["family"]]
    layers = point["layers"].split("|")
    least = min(point[f"{prefix}sparsity_{name}_mean"] for name in layers)
    return point[f"{prefix}sparsity_all_mean"] >= target["overall"] and least >= target["every_layer"]


class EveryLayerResults(Results):
    def summary(self) -> dict:
        points = aggregate(self.runs, (*POINT_FIELDS, *RUN_SETTINGS, "width", "layers"))
        prefix = "extra_" if points and all("extra_accuracy_mean" in p for p in points) else ""
        for p in points:
            p["collapsed"] = p["accuracy_mean"] < COLLAPSED  # at chance: its zeros are a dead network's
            p["meets_sparsity_targets"] = meets_targets(p, prefix) and not p["collapsed"]
        return {
            "description": self.config.description,
            "settings": self.config.settings(),
            "targets": TARGETS,
            "measured_on": "the 5,000 extra digits" if prefix else "the held-back split",
            "runs": self.runs,
            "points": points,
        }


def markdown(summary: dict) -> str:
    """One row per point: accuracy (split, extra digits), overall and per-layer zeros, the scale figures."""
    prefix = "extra_" if summary["measured_on"].startswith("the 5,000") else ""
    lines = [
        "| point | seeds | accuracy % (split) | accuracy % (extra) | overall | per layer | last layer mean | "
        "classifier norm | targets |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in summary["points"]:
        layers = p["layers"].split("|")
        extra = (
            f"{p['extra_accuracy_mean'] * 100:.2f} ± {p['extra_accuracy_std'] * 100:.2f}"
            if "extra_accuracy_mean" in p
            else "-"
        )
        per_layer = " ".join(f"{p[f'{prefix}sparsity_{n}_mean']:.3f}" for n in layers)
        point = p["point"].replace("[", "\\[")  # kwta[dense](d=0.1) is no Markdown link
        lines.append(
            f"| {point} | {p['seeds']} | "
            f"{p['accuracy_mean'] * 100:.2f} ± {p['accuracy_std'] * 100:.2f} | {extra} | "
            f"{p[f'{prefix}sparsity_all_mean']:.3f} | {per_layer} | {p['last_mean_activation_mean']:.3f} | "
            f"{p['next_kernel_norm_mean']:.2f} | {_verdict(p)} |"
        )
    return "\n".join(lines) + "\n"


def _verdict(point: dict) -> str:
    if point.get("collapsed"):
        return "collapsed"
    return "met" if point["meets_sparsity_targets"] else "no"


def run_every_layer(config: EveryLayerConfig, resume: bool = False) -> dict:
    """Train every (point, seed) not yet done, writing rows as they finish; then the table and the plots."""
    results = EveryLayerResults(config.out_dir, config, resume)
    settings = {**config.settings(), "width": config.width}
    todo = pending_runs(config, results, RUN_SETTINGS, "every-layer study")
    run_all(train_one, todo, settings, results, Progress(total=len(todo)), config.jobs)
    summary = results.write()
    if summary["points"]:
        (config.out_dir / "results.md").write_text(markdown(summary))
        from lab.everylayer_plots import draw_all

        draw_all(summary, config.out_dir)
    return summary
