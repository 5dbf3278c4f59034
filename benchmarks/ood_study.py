"""Typicality detectors side by side, as the OOD literature scores them (OpenOOD's AUROC and FPR at 95% TPR).

A study, not the product: ``python -m benchmarks.ood_study [--model mnist_cnn:latest]`` fits every
detector post hoc on the model's own training digits (in-distribution only, never on outliers), sets
each one's threshold at 1% false alarms on half of the held-back digits, and scores the other half
against the near and far sets of :mod:`benchmarks.ood_sets`. Writes ``reports/ood_study.json`` and
``reports/ood_roc.png`` and prints one table.

Detectors (higher score = less typical):

- ``layer sparsity`` (served today): Mahalanobis distance of the per-layer zero fractions.
- ``unit firing, class Mahalanobis``: per layer, each unit's share of positions on; class-conditional
  Mahalanobis with a shared covariance (Lee et al. 2018) per layer, standardised and summed.
- ``unit firing, KNN``: distance to the k-th nearest training digit of the normalised firing shares.
- baselines from their papers: MSP (Hendrycks & Gimpel 2017), energy (Liu et al. 2020), class
  Mahalanobis on the penultimate layer, ReAct + energy (Sun et al. 2021, clip at the 90th percentile),
  ASH-S + energy (Djurisic et al. 2023, keep the top 10% per sample, rescale), KNN on normalised
  penultimate features (Sun et al. 2022, k = 50).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sparsity.logs import quiet_tensorflow, set_tensorflow_threads
from sparsity.typicality import ledoit_wolf_shrinkage

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("conv1", "conv2", "dense")
PENULTIMATE, OUTPUT = "dense", "probabilities"


def features(model, x: np.ndarray, batch: int = 512) -> dict[str, np.ndarray]:
    """Per-layer zero fractions, per-unit firing shares, penultimate activations and logits of ``x``."""
    import keras

    outputs = [model.get_layer(name).output for name in LAYERS]
    multi = keras.Model(model.inputs, outputs)
    kernel, bias = model.get_layer(OUTPUT).get_weights()
    parts: dict[str, list] = {"zeros": [], "shares": [], "penultimate": []}
    for start in range(0, len(x), batch):
        outs = [np.asarray(o) for o in multi([x[start : start + batch]], training=False)]
        parts["zeros"].append(np.stack([(o == 0).reshape(len(o), -1).mean(1) for o in outs], axis=1))
        parts["shares"].append([(o > 0).reshape(len(o), -1, o.shape[-1]).mean(1) for o in outs])
        parts["penultimate"].append(outs[LAYERS.index(PENULTIMATE)])
    shares = [np.concatenate([p[i] for p in parts["shares"]]) for i in range(len(LAYERS))]
    penultimate = np.concatenate(parts["penultimate"])
    return {
        "zeros": np.concatenate(parts["zeros"]),
        "shares": shares,
        "penultimate": penultimate,
        "logits": penultimate @ kernel + bias,
        "kernel": kernel,
        "bias": bias,
    }


def _precision(centred: np.ndarray) -> np.ndarray:
    shrink = max(0.01, ledoit_wolf_shrinkage(centred))
    cov = np.atleast_2d(np.cov(centred, rowvar=False))
    scale = max(float(np.trace(cov)) / len(cov), 1e-12)
    return np.linalg.inv((1 - shrink) * cov + shrink * scale * np.eye(len(cov)))


def mahalanobis(train: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    mean = train.mean(0)
    precision = _precision(train - mean)
    return lambda x: np.einsum("ij,jk,ik->i", x - mean, precision, x - mean)


def class_mahalanobis(train: np.ndarray, labels: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Smallest distance to a class mean, with one covariance shared by the classes."""
    classes = np.unique(labels)
    means = np.stack([train[labels == c].mean(0) for c in classes])
    precision = _precision(train - means[np.searchsorted(classes, labels)])
    # whitened once: (x - m) P (x - m) = |x L - m L|^2 with P = L L^T, one (U x U) product per input
    # instead of one per class (measured, one input, three layers: 0.30 ms -> 0.10 ms)
    whiten = np.linalg.cholesky(precision)
    centres = means @ whiten
    centre_norms = (centres**2).sum(axis=1)

    def score(x: np.ndarray) -> np.ndarray:
        z = x @ whiten
        return ((z**2).sum(axis=1, keepdims=True) - 2.0 * z @ centres.T + centre_norms).min(axis=1)

    return score


def knn(train: np.ndarray, k: int) -> Callable[[np.ndarray], np.ndarray]:
    def normalise(a: np.ndarray) -> np.ndarray:
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    bank = normalise(train)

    def score(x: np.ndarray) -> np.ndarray:
        similarity = normalise(x) @ bank.T
        return 1.0 - np.sort(similarity, axis=1)[:, -k]  # 1 - cosine of the k-th nearest = half its squared distance

    return score


def energy(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=1, keepdims=True)
    return -(top[:, 0] + np.log(np.exp(logits - top).sum(axis=1)))


def fit_detectors(train: dict, labels: np.ndarray) -> dict[str, Callable[[dict], np.ndarray]]:
    """Each detector fitted on the training digits' features; each maps features to scores."""
    zeros = mahalanobis(train["zeros"])
    per_layer = [class_mahalanobis(shares, labels) for shares in train["shares"]]
    train_scores = [f(s) for f, s in zip(per_layer, train["shares"], strict=True)]
    standard = [(float(s.mean()), float(s.std()) or 1.0) for s in train_scores]
    units_knn = knn(np.concatenate(train["shares"], axis=1), k=10)
    penultimate = class_mahalanobis(train["penultimate"], labels)
    react_clip = float(np.percentile(train["penultimate"], 90))
    penultimate_knn = knn(train["penultimate"], k=50)
    kernel, bias = train["kernel"], train["bias"]

    def ash_s(h: np.ndarray, keep: float = 0.1) -> np.ndarray:
        cut = np.quantile(h, 1 - keep, axis=1, keepdims=True)
        pruned = np.where(h >= cut, h, 0.0)
        total, kept = h.sum(axis=1, keepdims=True), np.maximum(pruned.sum(axis=1, keepdims=True), 1e-12)
        return pruned * np.exp(total / kept)

    def softmax_max(logits: np.ndarray) -> np.ndarray:
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).max(axis=1)

    return {
        "layer sparsity (served)": lambda f: zeros(f["zeros"]),
        "unit firing, class Mahalanobis": lambda f: sum(
            (m(s) - mu) / sd for m, s, (mu, sd) in zip(per_layer, f["shares"], standard, strict=True)
        ),
        "unit firing, KNN (k=10)": lambda f: units_knn(np.concatenate(f["shares"], axis=1)),
        "MSP": lambda f: -softmax_max(f["logits"]),
        "energy": lambda f: energy(f["logits"]),
        "Mahalanobis, penultimate": lambda f: penultimate(f["penultimate"]),
        "ReAct + energy": lambda f: energy(np.minimum(f["penultimate"], react_clip) @ kernel + bias),
        "ASH-S + energy": lambda f: energy(ash_s(f["penultimate"]) @ kernel + bias),
        "KNN, penultimate (k=50)": lambda f: penultimate_knn(f["penultimate"]),
    }


def first_item(feats: dict) -> dict:
    """The features of the first input alone (for timing a one-input score)."""
    one = {}
    for key, value in feats.items():
        if key in ("kernel", "bias"):
            one[key] = value
        elif isinstance(value, list):
            one[key] = [a[:1] for a in value]
        else:
            one[key] = value[:1]
    return one


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(an outside score > an inside score), ties counting half (the Mann-Whitney U statistic)."""
    both = np.concatenate([inside, outside])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both))
    sorted_scores = both[order]
    ranks[order] = np.arange(1, len(both) + 1)
    for value in np.unique(sorted_scores):  # average ranks over ties
        tied = both == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    u = ranks[len(inside) :].sum() - len(outside) * (len(outside) + 1) / 2
    return float(u / (len(inside) * len(outside)))


def fpr_at_95_tpr(inside: np.ndarray, outside: np.ndarray) -> float:
    """Share of in-distribution inputs flagged when the threshold catches 95% of the outliers."""
    threshold = np.quantile(outside, 0.05)
    return float(np.mean(inside >= threshold))


PLOTTED = ("layer sparsity (served)", "unit firing, class Mahalanobis", "MSP", "Mahalanobis, penultimate")


def roc_curve(inside: np.ndarray, outside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False-positive and true-positive rates at every threshold (outside = positive)."""
    thresholds = np.unique(np.concatenate([inside, outside]))[::-1]
    fpr = np.array([0.0, *[(inside >= t).mean() for t in thresholds]])
    tpr = np.array([0.0, *[(outside >= t).mean() for t in thresholds]])
    return fpr, tpr


def plot_roc(scores: dict, sets: dict, calibrate, measure, path: Path) -> None:
    """Two panels, the near sets pooled and the far sets pooled, one curve per plotted detector."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, kind in zip(axes, ("near", "far"), strict=True):
        names = [n for n, s in sets.items() if s["kind"] == kind]
        for detector in PLOTTED:
            inside = scores[detector]["unseen digits"][measure]
            outside = np.concatenate([scores[detector][n] for n in names])
            fpr, tpr = roc_curve(inside, outside)
            ax.plot(fpr, tpr, label=f"{detector} (AUROC {auroc(inside, outside):.3f})")
        ax.plot([0, 1], [0, 1], color="#bbbbbb", linestyle=":")
        ax.set_title(f"{kind} sets: " + ", ".join(n.split(" (")[0] for n in names), fontsize=9)
        ax.set_xlabel("false-positive rate (unseen digits flagged)")
        ax.set_ylabel("true-positive rate (outliers flagged)")
        ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mnist_cnn:latest", help="stored Keras model (default mnist_cnn:latest)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports", help="report folder (default reports/)")
    args = parser.parse_args(argv)
    quiet_tensorflow()
    set_tensorflow_threads(1, 1)
    import bentoml

    from benchmarks.ood_sets import evaluation_sets
    from sparsity.keras_file import load_keras_safely
    from training.data import load_mnist_5k

    stored = bentoml.models.get(args.model)
    model = load_keras_safely(stored.path_of("model.keras"))
    split = load_mnist_5k(seed=0)
    train = features(model, split.x_train)
    detectors = fit_detectors(train, split.y_train)
    sets = evaluation_sets()
    feats = {name: features(model, s["x"]) for name, s in sets.items()}
    held = sets["unseen digits"]["x"]
    order = np.random.default_rng(0).permutation(len(held))
    calibrate, measure = order[: len(held) // 2], order[len(held) // 2 :]
    report = {"model": str(stored.tag), "sets": {n: {"kind": s["kind"], "size": len(s["x"])} for n, s in sets.items()}}
    rows, all_scores = {}, {}
    for name, detector in detectors.items():
        scores = {set_name: np.asarray(detector(f), dtype=np.float64) for set_name, f in feats.items()}
        all_scores[name] = scores
        digits = scores["unseen digits"]
        threshold = float(np.quantile(digits[calibrate], 0.99, method="higher"))
        inside = digits[measure]
        row = {"threshold": threshold, "false_alarms_unseen_digits": float(np.mean(inside > threshold)), "sets": {}}
        for set_name, s in sets.items():
            if s["kind"] == "id":
                continue
            outside = scores[set_name]
            row["sets"][set_name] = {
                "auroc": auroc(inside, outside),
                "fpr95": fpr_at_95_tpr(inside, outside),
                "flagged": float(np.mean(outside > threshold)),
            }
        one = first_item(feats["unseen digits"])
        started = time.perf_counter()
        for _ in range(20):
            detector(one)
        row["score_ms_1"] = (time.perf_counter() - started) / 20 * 1000
        rows[name] = row
    report["detectors"] = rows
    plot_roc(all_scores, sets, calibrate, measure, args.out / "ood_roc.png")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ood_study.json").write_text(json.dumps(report, indent=2) + "\n")
    near = [n for n, s in sets.items() if s["kind"] == "near"]
    far = [n for n, s in sets.items() if s["kind"] == "far"]
    print(
        f"model {report['model']}; fitted on {len(split.x_train)} training digits; threshold at 1% on "
        f"{len(calibrate)} held-back digits, measured on the other {len(measure)}"
    )
    header = "".join(f" | {n[:14]:>14}" for n in near + far)
    print(f"{'detector (AUROC / FPR95)':32}{header} | digits flagged | score ms")
    for name, row in rows.items():
        cells = "".join(f" | {row['sets'][n]['auroc']:.3f}/{row['sets'][n]['fpr95']:.2f}" for n in near + far)
        print(f"{name:32}{cells} | {row['false_alarms_unseen_digits']:14.1%} | {row['score_ms_1']:.3f}")
    print(f"written to {args.out / 'ood_study.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
