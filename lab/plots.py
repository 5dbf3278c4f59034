"""The sweep's picture: accuracy against overall activation sparsity (and, once models have been
pruned, forward time against accuracy)."""

from __future__ import annotations

from pathlib import Path

from lab.frontier import ACCURACY_TOLERANCE

DESIGN_COLOURS = {
    "relu": "tab:blue",
    "fatrelu": "tab:orange",
    "kwta": "tab:green",
    "kwta-dense": "tab:purple",
    "pruned": "tab:red",
}
INIT_MARKERS = {"glorot": "o", "he": "s", "normal": "^"}
Y_WINDOW = 2.5
"""Accuracy points shown below the best: points further down (collapsed runs) sit on the lower edge."""


def label_accuracy_axes(ax, title: str) -> None:
    """The axes of every accuracy-against-sparsity plot of the lab."""
    ax.set_xlabel("overall activation sparsity (share of exact zeros in ReLU-family layers)")
    ax.set_ylabel("accuracy on the held-back digits (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)


def draw_pareto(summary: dict, path: Path, prune: dict | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    points = summary["points"]
    panels = 2 if prune and prune.get("levels") else 1
    fig, axes = plt.subplots(1, panels, figsize=(7.5 * panels, 5.6), squeeze=False)
    ax = axes[0][0]
    best = max(p["test_accuracy_mean"] for p in points) * 100
    floor = best - Y_WINDOW
    collapsed = 0
    for p in points:
        acc, acc_sd = p["test_accuracy_mean"] * 100, p["test_accuracy_std"] * 100
        colour = DESIGN_COLOURS.get(p["design"], "grey")
        marker = INIT_MARKERS.get(p["init"], "x")
        if acc < floor:  # collapsed: drawn on the lower edge, hollow, with its real accuracy
            ax.scatter(p["sparsity_all_mean"], floor + 0.1, marker="v", s=70, facecolors="none", edgecolors=colour)
            ax.annotate(
                f"{p['point']}: collapsed, {acc:.0f}%",
                (p["sparsity_all_mean"], floor + 0.1),
                textcoords="offset points",
                xytext=(-8, -3 + 11 * collapsed),
                fontsize=7,
                color=colour,
                ha="right",
            )
            collapsed += 1
            continue
        ax.errorbar(
            p["sparsity_all_mean"],
            acc,
            xerr=p["sparsity_all_std"],
            yerr=acc_sd,
            fmt=marker,
            color=colour,
            ecolor=colour,
            elinewidth=0.8,
            capsize=2,
            markersize=7,
            alpha=0.9,
        )
        ax.annotate(
            f"{p['l1']:g}",
            (p["sparsity_all_mean"], acc),
            textcoords="offset points",
            xytext=(5, -10),
            fontsize=6.5,
            color=colour,
        )
    frontier = [p for p in points if p["point"] in summary.get("frontier", [])]
    frontier = [p for p in frontier if p["test_accuracy_mean"] * 100 >= floor]
    if frontier:
        ax.plot(
            [p["sparsity_all_mean"] for p in frontier],
            [p["test_accuracy_mean"] * 100 for p in frontier],
            "--",
            color="black",
            linewidth=1,
            label="Pareto frontier",
        )
    top = max(points, key=lambda p: p["test_accuracy_mean"])
    margin = max(ACCURACY_TOLERANCE, top["test_accuracy_std"]) * 100
    ax.axhspan(best - margin, best, color="gold", alpha=0.2)
    ax.text(
        0.01,
        (best - floor) / (best + 0.6 - floor),
        f" selection band: within {margin:.2f} pt of the best mean",
        transform=ax.transAxes,
        fontsize=7,
        color="darkgoldenrod",
        va="bottom",
    )
    by_key = {p["point"]: p for p in points}
    for key, text, offset in (
        (summary.get("chosen"), "chosen by the rule", (-110, -75)),
        (summary.get("dense_default"), "dense (old default)", (10, -35)),
    ):
        if key in by_key:
            p = by_key[key]
            ax.annotate(
                f"{text}\n{key}",
                (p["sparsity_all_mean"], p["test_accuracy_mean"] * 100),
                textcoords="offset points",
                xytext=offset,
                fontsize=8,
                arrowprops={"arrowstyle": "->", "linewidth": 0.8},
                ha="right" if offset[0] < 0 else "left",
            )
    ax.set_ylim(floor, best + 0.6)
    label_accuracy_axes(ax, "Accuracy against sparsity (mean ± std over seeds)")
    handles = [
        Line2D([], [], color=c, marker="o", linestyle="", label=d)
        for d, c in DESIGN_COLOURS.items()
        if any(p["design"] == d for p in points)
    ]
    handles += [
        Line2D([], [], color="grey", marker=m, linestyle="", label=f"init {i}")
        for i, m in INIT_MARKERS.items()
        if any(p["init"] == i for p in points)
    ]
    handles += [Line2D([], [], color="black", linestyle="--", label="Pareto frontier")]
    handles += [Line2D([], [], color="none", label="numbers: L1 activity strength")]
    ax.legend(handles=handles, fontsize=8, loc="lower left")
    if panels == 2:
        _draw_speed(axes[0][1], prune)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _draw_speed(ax, prune: dict) -> None:
    """Forward time (256 images) against accuracy: the dense default's graph, the parent and each pruned
    model, with the issue's target drawn (1.5 times faster than the dense default, within 0.2 points)."""
    dense = prune["dense_reference"]
    rows = [dense, prune["parent"], *prune["levels"]]
    if dense["test_accuracy"] is not None:
        target_ms = dense["forward_ms_256"] / 1.5
        ax.axvspan(0, target_ms, ymin=0, ymax=1, color="green", alpha=0.06)
        ax.axhline(dense["test_accuracy"] * 100 - 0.2, color="green", linestyle=":", linewidth=1)
        ax.text(
            target_ms,
            dense["test_accuracy"] * 100 - 0.2,
            " target: 1.5x faster than dense,\n within 0.2 pt of it",
            fontsize=7,
            color="green",
            va="bottom",
            ha="right",
        )
    for row in rows:
        if row["test_accuracy"] is None:  # the dense default's accuracy comes from the sweep, if any
            continue
        colour = DESIGN_COLOURS["pruned"] if row["kind"] == "pruned" else "tab:blue"
        label = row["label"].replace("pruned activations ", "pruned ").replace("pruned max-firing ", "pruned ")
        if row["kind"] == "dense":
            label = "dense default (sweep mean)"
        elif row["kind"] == "parent":
            label = "sparse parent (unpruned)"
        ax.scatter(row["forward_ms_256"], row["test_accuracy"] * 100, color=colour, s=50)
        below = row["kind"] == "parent"
        ax.annotate(
            label,
            (row["forward_ms_256"], row["test_accuracy"] * 100),
            textcoords="offset points",
            xytext=(-5, -12) if below else (5, 5),
            fontsize=8,
            ha="right" if below else "left",
        )
    ax.set_xlim(0, max(r["forward_ms_256"] for r in rows) * 1.25)
    ax.set_xlabel("forward pass, 256 images (ms, one TF thread, same process; lower is faster)")
    ax.set_ylabel("accuracy on the held-back digits (%)")
    ax.set_title("Sparsity turned into speed: pruning units that are rarely on")
    ax.grid(alpha=0.3)
