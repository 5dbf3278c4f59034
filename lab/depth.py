"""``python -m lab depth``: activation sparsity in deeper networks, on the residual CNN family of
:mod:`training.resnet`.

One factor at a time around a centre (post-activation, 1 block per stage, width 1, L1 activity 1e-5): depth,
width, placement and the sparsity method each vary alone, several seeds a point. Every run trains on the same
data and splits as the first sweep (seed ``s`` splits the digits as seed ``s`` did there, so the two studies
compare point for point) and measures, on the held-back digits, accuracy and every ReLU layer's sparsity and
dead channels, in graph order. The machinery is the sweep's (:mod:`lab.sweep`): rows written after every
run, ``--resume``, ``--jobs``, progress with an ETA.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lab.frontier import aggregate, pareto_frontier, select_default
from lab.sweep import RUN_SETTINGS, Results, SweepConfig, pending_runs, run_all
from sparsity.logs import quiet_tensorflow, set_tensorflow_threads
from training.progress import Progress
from training.resnet_fit import DepthPoint, fit_resnet

MORE_L1 = (3e-5, 1e-4)
"""The other constant strengths of the method axis; the rising schedule ends at the last."""
DEPTHS = (1, 2, 3)
WIDTHS = (0.5, 1.0, 2.0)
POINT_FIELDS = ("depth", "width", "placement", "method", "l1", "threshold")
TARGET_OVERALL = 0.90
TARGET_EVERY_LAYER = 0.75
SERVING_RULE = (
    f"the most accurate point (mean over seeds) with at least {TARGET_OVERALL:.0%} zeros overall and at least "
    f"{TARGET_EVERY_LAYER:.0%} in every ReLU layer; if none has both, the sweep's rule (the sparsest point within "
    "0.2 points of the best mean accuracy)"
)


CENTER = DepthPoint()


def default_points() -> list[DepthPoint]:
    """The centre, then each factor varied alone: depth, width, placement, method."""
    points = [CENTER]
    points += [DepthPoint(depth=d) for d in DEPTHS if d != CENTER.depth]
    points += [DepthPoint(width=w) for w in WIDTHS if w != CENTER.width]
    points += [DepthPoint(placement="pre")]
    points += [DepthPoint(method="relu"), *(DepthPoint(l1=l1) for l1 in MORE_L1)]
    points += [DepthPoint(method="rising-l1", l1=MORE_L1[-1]), DepthPoint(method="fatrelu")]
    return points


def quick_points() -> list[DepthPoint]:
    """Two tiny configurations for tests: both placements, two depths, two methods."""
    return [DepthPoint(width=0.25), DepthPoint(depth=2, width=0.25, placement="pre", method="rising-l1")]


@dataclass
class DepthConfig(SweepConfig):
    """The sweep's configuration with the study's defaults and one more setting, augmentation."""

    points: list[DepthPoint]
    epochs: int = 10
    dataset: str = "auto"
    augment: bool = True
    out_dir: Path = field(default_factory=lambda: Path("reports/depth"))

    def settings(self) -> dict:
        return {**super().settings(), "augment": self.augment}


def train_one(point: dict, seed: int, settings: dict, threads: int = 0) -> dict:
    """Train and evaluate one (point, seed); runs in a worker process. Returns the run's row."""
    quiet_tensorflow()
    if threads:
        set_tensorflow_threads(threads, threads)
    from training import data
    from training.mnist import evaluate

    p = DepthPoint(**point)
    split = data.load_mnist(settings["dataset"], seed)
    start = time.perf_counter()
    model = fit_resnet(
        split, p, seed, settings["epochs"], settings["batch_size"], settings["limit"], settings["augment"]
    )
    seconds = time.perf_counter() - start
    ev = evaluate(model, split.x_test, split.y_test)
    layers = p.resnet_spec().relu_names()
    row = {"point": p.key, **asdict(p), "seed": seed, **settings, "dataset_used": split.name}
    row["test_accuracy"] = ev["test_accuracy"]
    row["params"] = int(model.count_params())
    row["layers"] = "|".join(layers)
    for layer in [*layers, "all"]:
        row[f"sparsity_{layer}"] = ev["activation_sparsity"][layer]["mean"]
    for layer in layers:
        row[f"dead_{layer}"] = ev["dead_unit_ratio"][layer]
    row["train_seconds"] = round(seconds, 2)
    return row


def layer_sparsities(point: dict) -> list[float]:
    """A point's mean sparsity per ReLU layer, in graph order."""
    return [point[f"sparsity_{name}_mean"] for name in point["layers"].split("|")]


def meets_targets(point: dict) -> bool:
    return point["sparsity_all_mean"] >= TARGET_OVERALL and min(layer_sparsities(point)) >= TARGET_EVERY_LAYER


def choose(points: list[dict]) -> dict:
    """Apply :data:`SERVING_RULE`."""
    eligible = [p for p in points if meets_targets(p)]
    if eligible:
        return max(eligible, key=lambda p: (p["test_accuracy_mean"], p["sparsity_all_mean"]))
    return select_default(points)


def markdown(summary: dict) -> str:
    """The study's table, one row per point: accuracy, overall sparsity, the least sparse layer, the sparsity of
    the first and last stages' ReLUs, dead channels, parameters and training time (means over seeds)."""
    head = (
        "| point | accuracy % | overall | least sparse layer | first stage | last stage | dead channels | "
        "params | train s |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    rows = []
    for p in summary["points"]:
        names = p["layers"].split("|")
        least = min(names, key=lambda n: p[f"sparsity_{n}_mean"])
        last_stage = max(n[1] for n in names if n.startswith("s") and n[1].isdigit())
        first = [p[f"sparsity_{n}_mean"] for n in names if n.startswith("s0b")]
        last = [p[f"sparsity_{n}_mean"] for n in names if n.startswith(f"s{last_stage}b")]
        dead = sum(p[f"dead_{n}_mean"] for n in names) / len(names)
        mark = "**" if p["point"] == summary.get("chosen") else ""
        rows.append(
            f"| {mark}{p['point']}{mark} | {p['test_accuracy_mean'] * 100:.2f} ± {p['test_accuracy_std'] * 100:.2f} | "
            f"{p['sparsity_all_mean']:.3f} | {least} {p[f'sparsity_{least}_mean']:.2f} | "
            f"{sum(first) / len(first):.2f} | {sum(last) / len(last):.2f} | "
            f"{dead:.3f} | {p['params_mean']:.0f} | {p['train_seconds_mean']:.0f} |"
        )
    return head + "\n".join(rows) + "\n"


class DepthResults(Results):
    def summary(self) -> dict:
        points = aggregate(self.runs, (*POINT_FIELDS, *RUN_SETTINGS, "augment", "layers", "dataset_used"))
        summary = {
            "description": self.config.description,
            "settings": self.config.settings(),
            "selection_rule": SERVING_RULE,
            "targets": {"overall": TARGET_OVERALL, "every_layer": TARGET_EVERY_LAYER},
            "centre": CENTER.key,
            "runs": self.runs,
            "points": points,
            "frontier": [],
            "chosen": None,
        }
        if points:
            summary["frontier"] = [p["point"] for p in pareto_frontier(points)]
            summary["chosen"] = choose(points)["point"]
        return summary


def run_depth(config: DepthConfig, resume: bool = False, first_study: Path | None = None) -> dict:
    """Train every (point, seed) not yet done, writing rows as they finish; then draw the plots."""
    results = DepthResults(config.out_dir, config, resume)
    settings = config.settings()
    todo = pending_runs(config, results, (*RUN_SETTINGS, "augment"), "depth study")
    run_all(train_one, todo, settings, results, Progress(total=len(todo)), config.jobs)
    summary = results.write()
    if summary["points"]:
        (config.out_dir / "results.md").write_text(markdown(summary))
    from lab.depth_plots import draw_all

    draw_all(summary, config.out_dir, first_study)
    return summary
