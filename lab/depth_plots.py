"""The depth study's pictures: sparsity layer by layer through the network, sparsity and accuracy against
depth and width, and the first study's Pareto plot with the residual points added."""

from __future__ import annotations

import csv
from pathlib import Path

from lab.frontier import pareto_frontier
from lab.plots import label_accuracy_axes

FIRST_STUDY = Path("docs/sparsity-lab/results.csv")
METHOD_COLOURS = {"relu": "tab:grey", "l1": "tab:blue", "rising-l1": "tab:green", "fatrelu": "tab:orange"}
PLACEMENT_MARKERS = {"post": "o", "pre": "D"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _layers(point: dict) -> tuple[list[str], list[float], list[float]]:
    names = point["layers"].split("|")
    return (
        names,
        [point[f"sparsity_{n}_mean"] for n in names],
        [point[f"sparsity_{n}_std"] for n in names],
    )


def _is_architecture(point: dict, centre: dict) -> bool:
    """Points that differ from the centre in depth, width or placement (or are the centre)."""
    return point["method"] == centre["method"] and point["l1"] == centre["l1"]


def draw_layers(summary: dict, path: Path) -> Path:
    """Per-layer sparsity against the layer's position, one line per configuration; two panels, the
    architectures (centre method) and the methods (centre architecture)."""
    plt = _plt()
    points = summary["points"]
    centre = next((p for p in points if p["point"] == summary.get("centre")), points[0])
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), sharey=True)
    panels = (
        (
            "depth, width and placement (L1 at the centre's strength)",
            [p for p in points if _is_architecture(p, centre)],
        ),
        (
            "sparsity method (post, 1 block per stage, width 1)",
            [
                p
                for p in points
                if (p["depth"], p["width"], p["placement"]) == (centre["depth"], centre["width"], centre["placement"])
            ],
        ),
    )
    for ax, (title, group) in zip(axes, panels, strict=True):
        same = len({p["layers"] for p in group}) == 1  # else positions relative to the network's depth
        for p in sorted(group, key=lambda q: q["point"]):
            names, means, stds = _layers(p)
            xs = list(range(len(names))) if same else [i / max(1, len(names) - 1) for i in range(len(names))]
            marker = PLACEMENT_MARKERS.get(p["placement"], "o")
            ax.errorbar(xs, means, yerr=stds, marker=marker, markersize=4, capsize=2, linewidth=1.2, label=p["point"])
            if same:
                ax.set_xticks(xs, names, rotation=60, ha="right", fontsize=7)
        ax.set_xlabel(
            "ReLU layer, in graph order" if same else "position of the ReLU layer in the network (0 = stem, 1 = last)"
        )
        ax.axhline(0.5, color="black", linestyle=":", linewidth=0.8)
        ax.text(
            0.02, 0.505, "50%: a batch-normed pre-activation's sign", fontsize=7, transform=ax.get_yaxis_transform()
        )
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("share of exact zeros, held-back digits (mean ± std)")
    axes[0].set_ylim(0, 1.02)
    fig.tight_layout()
    return _save(fig, path, plt)


def draw_scaling(summary: dict, path: Path) -> Path:
    """Overall sparsity and accuracy against depth (width 1) and against width (1 block per stage), at the
    centre's method and placement."""
    plt = _plt()
    points = summary["points"]
    centre = next((p for p in points if p["point"] == summary.get("centre")), points[0])
    same = [p for p in points if _is_architecture(p, centre) and p["placement"] == centre["placement"]]
    by_depth = sorted((p for p in same if p["width"] == centre["width"]), key=lambda p: p["depth"])
    by_width = sorted((p for p in same if p["depth"] == centre["depth"]), key=lambda p: p["width"])
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex="col")
    for col, (axis, group) in enumerate((("depth", by_depth), ("width", by_width))):
        xs = [p[axis] for p in group]
        for row, (field, label, scale) in enumerate(
            (("sparsity_all", "overall sparsity", 1.0), ("test_accuracy", "accuracy (%)", 100.0))
        ):
            ax = axes[row][col]
            ax.errorbar(
                xs,
                [p[f"{field}_mean"] * scale for p in group],
                yerr=[p[f"{field}_std"] * scale for p in group],
                marker="o",
                capsize=3,
            )
            if field == "sparsity_all":
                least = [min(_layers(p)[1]) for p in group]
                ax.plot(xs, least, "--", marker=".", color="tab:red", label="least sparse layer")
                ax.legend(fontsize=8)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[1][col].set_xlabel("blocks per stage" if axis == "depth" else "width multiplier")
        axes[1][col].set_xticks(xs)
        if axis == "width":
            axes[1][col].set_xscale("log", base=2)
            axes[1][col].set_xticks(xs, [f"{x:g}" for x in xs])
    fig.suptitle(
        f"Residual CNN at {centre['point'].split('/')[-1]}, {centre['placement']}-activation (mean ± std over seeds)"
    )
    fig.tight_layout()
    return _save(fig, path, plt)


def read_first_study(path: Path = FIRST_STUDY) -> list[dict]:
    """The first sweep's per-point rows (the CSV's ``kind=point`` rows), numbers as floats."""
    if not path.exists():
        return []
    with path.open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("kind") == "point"]
    for row in rows:
        for key in ("test_accuracy_mean", "test_accuracy_std", "sparsity_all_mean", "sparsity_all_std"):
            row[key] = float(row[key])
    return rows


def draw_pareto(summary: dict, path: Path, first: list[dict]) -> Path:
    """Accuracy against overall sparsity: the first study's 3-layer CNN points and the residual points,
    with the Pareto frontier over both."""
    plt = _plt()
    points = summary["points"]
    fig, ax = plt.subplots(figsize=(8.5, 5.8))
    every = [*first, *points]
    best = max(p["test_accuracy_mean"] for p in every) * 100
    floor = best - 3.0
    shown = [p for p in every if p["test_accuracy_mean"] * 100 >= floor]
    for p in first:
        if p["test_accuracy_mean"] * 100 >= floor:
            ax.errorbar(
                p["sparsity_all_mean"],
                p["test_accuracy_mean"] * 100,
                yerr=p["test_accuracy_std"] * 100,
                fmt="s",
                color="lightgrey",
                ecolor="lightgrey",
                markersize=5,
                capsize=1.5,
            )
    keys: list[str] = []  # residual points are numbered on the plot and named in a list: they crowd together
    for p in sorted(points, key=lambda q: (q["sparsity_all_mean"], q["test_accuracy_mean"])):
        if p["test_accuracy_mean"] * 100 < floor:
            continue
        keys.append(p["point"])
        colour = METHOD_COLOURS.get(p["method"], "black")
        ax.errorbar(
            p["sparsity_all_mean"],
            p["test_accuracy_mean"] * 100,
            xerr=p["sparsity_all_std"],
            yerr=p["test_accuracy_std"] * 100,
            fmt=PLACEMENT_MARKERS.get(p["placement"], "o"),
            color=colour,
            markersize=7,
            capsize=2,
        )
        ax.annotate(
            str(len(keys)),
            (p["sparsity_all_mean"], p["test_accuracy_mean"] * 100),
            textcoords="offset points",
            xytext=(5, 3),
            fontsize=7,
            fontweight="bold",
            color=colour,
        )
    ax.text(
        0.99,
        0.02,
        "\n".join(f"{n}  {key}" for n, key in enumerate(keys, start=1)),
        transform=ax.transAxes,
        fontsize=7,
        family="monospace",
        ha="right",
        multialignment="left",
        va="bottom",
        bbox={"facecolor": "white", "edgecolor": "lightgrey", "alpha": 0.9},
    )
    frontier = pareto_frontier(shown)
    ax.plot(
        [p["sparsity_all_mean"] for p in frontier],
        [p["test_accuracy_mean"] * 100 for p in frontier],
        "--",
        color="black",
        linewidth=1,
        label="Pareto frontier (both studies)",
    )
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="lightgrey", marker="s", linestyle="", label="3-layer CNN (first study)")]
    handles += [
        Line2D([], [], color=c, marker="o", linestyle="", label=f"residual, {m}")
        for m, c in METHOD_COLOURS.items()
        if any(p["method"] == m for p in points)
    ]
    handles += [
        Line2D([], [], color="black", marker=m, linestyle="", label=f"{pl}-activation")
        for pl, m in PLACEMENT_MARKERS.items()
        if any(p["placement"] == pl for p in points)
    ]
    handles += [Line2D([], [], color="black", linestyle="--", label="Pareto frontier (both studies)")]
    ax.legend(handles=handles, fontsize=8, loc="lower left")
    ax.set_ylim(floor, best + 0.5)
    label_accuracy_axes(
        ax, "Accuracy against sparsity: the residual family beside the first study (mean ± std over seeds)"
    )
    fig.tight_layout()
    return _save(fig, path, plt)


def _save(fig, path: Path, plt) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_all(summary: dict, out_dir: Path, first_study: Path | None = None) -> list[Path]:
    if not summary["points"]:
        return []
    return [
        draw_layers(summary, out_dir / "layers.png"),
        draw_scaling(summary, out_dir / "scaling.png"),
        draw_pareto(summary, out_dir / "pareto.png", read_first_study(first_study or FIRST_STUDY)),
    ]
