"""Typicality detectors side by side, as the OOD literature scores them (OpenOOD's AUROC and FPR at 95% TPR).

``make bench-typicality`` (``python -m benchmarks.ood_study [--model mnist_cnn:latest]``) fits every
detector post hoc on the model's own training digits (in-distribution only, never on outliers), sets
each one's threshold at 1% false alarms on half of the held-back digits, and scores the other half
against the near and far sets of :mod:`benchmarks.ood_sets`. It applies :data:`RULE`, which chose the
detector the service serves, then measures the served detector as the service runs it (the registered
state and threshold, through ``Runtime.predict``) against the issue's targets, with its cost over the
forward pass. Writes ``reports/typicality.json``, ``reports/typicality.md`` (the README's tables) and
``reports/typicality_roc.png``; prints the tables.

Detectors (higher score = less typical):

- ``layer sparsity`` (served before this study): Mahalanobis distance of the per-layer zero fractions.
- ``unit firing, class Mahalanobis`` (served now, :class:`sparsity.detectors.UnitFiring`): per layer, each
  unit's share of positions on; class-conditional Mahalanobis with a shared covariance (Lee et al. 2018)
  per layer, standardised and summed.
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

from sparsity.detectors import ClassMahalanobis, UnitFiring, shrunk_precision
from sparsity.logs import quiet_tensorflow, set_tensorflow_threads

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


def mahalanobis(train: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    mean = train.mean(0)
    precision = shrunk_precision(train - mean)
    return lambda x: np.einsum("ij,jk,ik->i", x - mean, precision, x - mean)


def class_mahalanobis(train: np.ndarray, labels: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Smallest squared distance to a class mean, one covariance shared by the classes (the core's)."""
    return ClassMahalanobis.fit(train, labels).scores


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
    units = UnitFiring.fit(np.concatenate(train["shares"], axis=1), [s.shape[1] for s in train["shares"]], labels)
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
        "layer sparsity (served before)": lambda f: zeros(f["zeros"]),
        "unit firing, class Mahalanobis": lambda f: units.scores(np.concatenate(f["shares"], axis=1)),
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


PLOTTED = ("layer sparsity (served before)", "unit firing, class Mahalanobis", "MSP", "Mahalanobis, penultimate")


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


RULE = (
    "the best mean AUROC over the near sets, among detectors that flag at most 2% of unseen digits and at "
    "least 99% of every far set, at the threshold that flags 1% of held-back digits"
)
RULE_NAMES = {"unit firing, class Mahalanobis": "unit-firing", "layer sparsity (served before)": "profile-mahalanobis"}
"""The study's rows that are detectors the service can serve, by the name the card gives them."""


def choose(rows: dict, near: list[str], far: list[str]) -> str | None:
    """The detector :data:`RULE` picks from the study's ``rows``; None when none qualifies."""
    eligible = {
        name: float(np.mean([row["sets"][n]["auroc"] for n in near]))
        for name, row in rows.items()
        if row["false_alarms_unseen_digits"] <= 0.02 and all(row["sets"][n]["flagged"] >= 0.99 for n in far)
    }
    return max(eligible, key=eligible.get) if eligible else None


def predict_all(runtime, x: np.ndarray, batch: int = 256):
    """The runtime's answers for ``x`` in batches the service accepts: scores, flags, probabilities."""
    parts = [runtime.predict(x[i : i + batch]) for i in range(0, len(x), batch)]
    return (
        np.concatenate([p.scores for p in parts]),
        np.concatenate([p.atypical for p in parts]),
        np.concatenate([p.probabilities for p in parts]),
    )


def measured_part(runtime, digits: np.ndarray) -> tuple[np.ndarray, str]:
    """Rows of ``digits`` the served detector neither fitted on nor set its threshold on: the third part of
    its calibration set when ``digits`` is that set (same hash), else every row."""
    import hashlib

    from modelstore.register import split as calibration_split

    facts = runtime.card.calibration
    if facts is not None and facts.sha256 == hashlib.sha256(np.ascontiguousarray(digits).tobytes()).hexdigest():
        return calibration_split(
            facts.size, facts.seed
        ).measured, f"the {facts.measured_size} calibration digits used for nothing else"
    return np.arange(len(digits)), f"all {len(digits)} unseen digits"


def served_row(runtime, sets: dict) -> dict:
    """The served detector as the service runs it (``Runtime.predict``, the card's threshold), with MSP on
    the same in-distribution rows beside it."""
    answers = {name: predict_all(runtime, s["x"]) for name, s in sets.items()}
    rows, on = measured_part(runtime, sets["unseen digits"]["x"])
    scores, flags, probs = (a[rows] for a in answers["unseen digits"])
    row = {
        "detector": runtime.card.typicality.detector,
        "threshold": runtime.card.typicality.threshold,
        "false_alarms_unseen_digits": float(flags.mean()),
        "unseen_digits": on,
        "sets": {},
    }
    for name, s in sets.items():
        if s["kind"] == "id":
            continue
        out_scores, out_flags, out_probs = answers[name]
        row["sets"][name] = {
            "auroc": auroc(scores, out_scores),
            "fpr95": fpr_at_95_tpr(scores, out_scores),
            "flagged": float(out_flags.mean()),
            "msp_auroc": auroc(-probs.max(axis=1), -out_probs.max(axis=1)),
        }
    return row


def cost(runtime, digits: np.ndarray, repeats: int) -> dict:
    """What the served score adds to the forward pass, in one process and one run: the served probe (which
    computes the score inside its compiled call) against the same model's probe without it, called in
    alternation, at 1 and 256 images (medians). Reported against the probe's ``run`` (the served forward
    pass: checks, the compiled call, results to NumPy) and against the compiled call alone."""
    import tensorflow as tf

    from sparsity.probe import SparsityProbe

    plain = SparsityProbe(runtime.probe.model, value_range=runtime.value_range)
    probes = {"without": plain, "with": runtime.probe}
    out = {}
    for n in (1, 256):
        batch = digits[:n]
        tensor = tf.convert_to_tensor(batch)
        times = {(k, part): [] for k in probes for part in ("run", "call")}
        for i in range(repeats if n == 1 else max(20, repeats // 10)):
            for key in list(probes)[:: 1 if i % 2 else -1]:  # alternate who goes first
                started = time.perf_counter()
                probes[key].run(batch)
                middle = time.perf_counter()
                probes[key]._compiled(tensor)
                times[(key, "run")].append(middle - started)
                times[(key, "call")].append(time.perf_counter() - middle)
        ms = {k: float(np.median(v)) * 1000 for k, v in times.items()}
        out[str(n)] = {
            "run_ms": ms[("without", "run")],
            "run_with_score_ms": ms[("with", "run")],
            "call_ms": ms[("without", "call")],
            "call_with_score_ms": ms[("with", "call")],
            "score_share": ms[("with", "run")] / ms[("without", "run")] - 1.0,
            "score_share_of_call": ms[("with", "call")] / ms[("without", "call")] - 1.0,
        }
    return out


def targets(served: dict, near: list[str], far: list[str], costs: dict) -> list[dict]:
    """The issue's targets for the served detector, each with what was measured and whether it is met."""
    letters = next(n for n in near if n.startswith("letters"))
    rows = [
        ("letters: AUROC >= 0.95", served["sets"][letters]["auroc"], served["sets"][letters]["auroc"] >= 0.95),
        ("letters: FPR95 <= 25%", served["sets"][letters]["fpr95"], served["sets"][letters]["fpr95"] <= 0.25),
    ]
    for n in near:
        cell = served["sets"][n]
        rows.append(
            (f"{n}: AUROC >= MSP's ({cell['msp_auroc']:.3f})", cell["auroc"], cell["auroc"] >= cell["msp_auroc"])
        )
    for n in far:
        rows.append((f"{n}: 100% flagged", served["sets"][n]["flagged"], served["sets"][n]["flagged"] == 1.0))
    rows.append(
        (
            "unseen digits: <= 2% flagged",
            served["false_alarms_unseen_digits"],
            served["false_alarms_unseen_digits"] <= 0.02,
        )
    )
    for n, c in costs.items():
        rows.append((f"cost at {n} image(s): < 5% of the forward pass", c["score_share"], c["score_share"] < 0.05))
    return [{"target": t, "measured": float(m), "met": bool(ok)} for t, m, ok in rows]


def markdown(report: dict) -> str:
    """The README's two tables: every detector (AUROC / FPR95, unseen digits flagged), and the served
    detector against the targets."""
    near = [n for n, s in report["sets"].items() if s["kind"] == "near"]
    far = [n for n, s in report["sets"].items() if s["kind"] == "far"]
    names = [n.split(" (")[0] for n in near + far]
    lines = [
        "| detector | " + " | ".join(names) + " | digits flagged |",
        "| --- |" + " --- |" * (len(names) + 1),
    ]
    best = {n: max(row["sets"][n]["auroc"] for row in report["detectors"].values()) for n in near}
    for name, row in report["detectors"].items():
        cells = []
        for n in near + far:
            cell = f"{row['sets'][n]['auroc']:.3f} / {row['sets'][n]['fpr95']:.2f}"
            cells.append(f"**{cell}**" if n in best and row["sets"][n]["auroc"] == best[n] else cell)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {row['false_alarms_unseen_digits']:.1%} |")
    served = report["served"]
    lines += ["", "| target | measured | met |", "| --- | --- | --- |"]
    for t in report["targets"]:
        value = t["measured"]
        shown = f"{value:.1%}" if ("flagged" in t["target"] or "%" in t["target"]) else f"{value:.3f}"
        lines.append(f"| {t['target']} | {shown} | {'yes' if t['met'] else '**no**'} |")
    flagged = ", ".join(f"{n.split(' (')[0]} {served['sets'][n]['flagged']:.0%}" for n in near + far)
    lines += ["", f"Flagged at the served threshold ({served['threshold']:.2f}): {flagged}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mnist_cnn:latest", help="stored Keras model (default mnist_cnn:latest)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports", help="report folder (default reports/)")
    parser.add_argument(
        "--repeats", type=int, default=1000, help="timed calls per probe for the one-image cost (default 1000)"
    )
    args = parser.parse_args(argv)
    quiet_tensorflow()
    set_tensorflow_threads(1, 1)

    from benchmarks.ood_sets import evaluation_sets
    from modelstore.kinds import LoadOptions, from_store
    from training.data import load_mnist_5k

    runtime = from_store(args.model, LoadOptions(engine="tensorflow"))  # the study reads the Keras model
    runtime.warm_up()
    model = runtime.probe.model
    split = load_mnist_5k(seed=0)
    print(
        f"study of {runtime.tag}: building the evaluation sets and fitting {len(PLOTTED) + 5} detectors ...", flush=True
    )
    train = features(model, split.x_train)
    detectors = fit_detectors(train, split.y_train)
    sets = evaluation_sets()
    feats = {name: features(model, s["x"]) for name, s in sets.items()}
    held = sets["unseen digits"]["x"]
    order = np.random.default_rng(0).permutation(len(held))
    calibrate, measure = order[: len(held) // 2], order[len(held) // 2 :]
    near = [n for n, s in sets.items() if s["kind"] == "near"]
    far = [n for n, s in sets.items() if s["kind"] == "far"]
    report = {"model": runtime.tag, "sets": {n: {"kind": s["kind"], "size": len(s["x"])} for n, s in sets.items()}}
    rows, all_scores = {}, {}
    for name, detector in detectors.items():
        scores = {set_name: np.asarray(detector(f), dtype=np.float64) for set_name, f in feats.items()}
        all_scores[name] = scores
        digits = scores["unseen digits"]
        threshold = float(np.quantile(digits[calibrate], 0.99, method="higher"))
        inside = digits[measure]
        row = {"threshold": threshold, "false_alarms_unseen_digits": float(np.mean(inside > threshold)), "sets": {}}
        for set_name in near + far:
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
    chosen = choose(rows, near, far)
    report["rule"] = {"rule": RULE, "chosen": chosen, "served": runtime.card.typicality.detector}
    print("measuring the served detector through the runtime ...", flush=True)
    served = served_row(runtime, sets)
    costs = cost(runtime, held, args.repeats)
    served["cost"] = costs
    report["served"] = served
    report["targets"] = targets(served, near, far, costs)
    args.out.mkdir(parents=True, exist_ok=True)
    plot_roc(all_scores, sets, calibrate, measure, args.out / "typicality_roc.png")
    (args.out / "typicality.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "typicality.md").write_text(markdown(report))
    print(
        f"model {report['model']}; study detectors fitted on {len(split.x_train)} training digits, thresholds at 1% "
        f"on {len(calibrate)} held-back digits, measured on the other {len(measure)}"
    )
    header = "".join(f" | {n[:14]:>14}" for n in near + far)
    print(f"{'detector (AUROC / FPR95)':32}{header} | digits flagged | score ms")
    for name, row in rows.items():
        cells = "".join(f" | {row['sets'][n]['auroc']:.3f}/{row['sets'][n]['fpr95']:.2f}" for n in near + far)
        print(f"{name:32}{cells} | {row['false_alarms_unseen_digits']:14.1%} | {row['score_ms_1']:.3f}")
    cells = "".join(f" | {served['sets'][n]['auroc']:.3f}/{served['sets'][n]['fpr95']:.2f}" for n in near + far)
    print(f"{'served: ' + served['detector']:32}{cells} | {served['false_alarms_unseen_digits']:14.1%} |")
    flagged = ", ".join(f"{n.split(' (')[0]} {served['sets'][n]['flagged']:.0%}" for n in near + far)
    print(f"served threshold {served['threshold']:.3f}: flagged {flagged}; unseen digits: {served['unseen_digits']}")
    print(f"rule: {RULE}\n  -> {chosen}; served: {served['detector']}")
    for n, c in costs.items():
        print(
            f"cost at {n:>3} image(s): forward pass {c['run_ms']:.3f} ms, with the score {c['run_with_score_ms']:.3f} "
            f"ms ({c['score_share']:+.1%}); compiled call alone {c['call_ms']:.3f} -> {c['call_with_score_ms']:.3f} "
            f"ms ({c['score_share_of_call']:+.1%})"
        )
    for t in report["targets"]:
        print(f"  {'met    ' if t['met'] else 'NOT MET'}  {t['target']}: {t['measured']:.3f}")
    print(f"written to {args.out}: typicality.json, typicality.md (the README's tables), typicality_roc.png")
    if chosen is not None and RULE_NAMES.get(chosen) != served["detector"]:
        print(f"WARNING: the rule picks {chosen!r}, the model serves {served['detector']!r}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
