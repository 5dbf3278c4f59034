"""The every-layer study's pictures: each method's zeros layer by layer (one panel per family), and the scale
experiment (the last hidden layer's mean activation and the classifier's weight norm as L1 rises)."""

from __future__ import annotations

from pathlib import Path

METHOD_COLOURS = {
    "l1": "tab:blue",
    "l1-capped": "tab:cyan",
    "hoyer": "tab:green",
    "hoyer-capped": "tab:olive",
    "hoyer-nogamma": "tab:olive",
    "kwta-short": "tab:purple",
    "threshold": "tab:orange",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _prefix(summary: dict) -> str:
    return "extra_" if summary["measured_on"].startswith("the 5,000") else ""


def draw_layers(summary: dict, path: Path) -> Path:
    """Zero share per ReLU layer in graph order, one line per point, the family's target dashed."""
    plt = _plt()
    prefix = _prefix(summary)
    families = [f for f in ("cnn", "resnet") if any(p["family"] == f for p in summary["points"])]
    fig, axes = plt.subplots(1, len(families), figsize=(7.5 * len(families), 5.6), squeeze=False)
    for ax, family in zip(axes[0], families, strict=True):
        points = [p for p in summary["points"] if p["family"] == family]
        # the L1 series is the scale plot's; a collapsed point (at chance) has only a dead network's zeros
        shown = [
            p
            for p in points
            if (p["method"] != "l1" or p["l1"] in (0.0, 3e-3, 1e-5))
            and not p.get("collapsed")
            and p["method"] != "l1-capped"
        ]
        names = points[0]["layers"].split("|")
        if not shown:
            ax.text(0.5, 0.5, "every point collapsed (at chance)", transform=ax.transAxes, ha="center")
        for i, p in enumerate(shown):
            means = [p[f"{prefix}sparsity_{n}_mean"] for n in names]
            stds = [p[f"{prefix}sparsity_{n}_std"] for n in names]
            accuracy = p.get(f"{prefix}accuracy_mean", p["accuracy_mean"]) * 100
            ax.errorbar(
                [x + (i - len(shown) / 2) * 0.02 for x in range(len(names))],
                means,
                yerr=stds,
                marker="o",
                capsize=2,
                color=METHOD_COLOURS.get(p["method"], "grey"),
                alpha=0.5 + 0.5 * (i % 2),
                label=f"{p['point'].split('/', 1)[1]}  ({accuracy:.2f}%)",
            )
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        target = summary["targets"][family]["every_layer"]
        ax.axhline(target, color="black", linestyle="--", linewidth=0.8)
        ax.annotate(f"target: every layer >= {target:.2f}", (0, target), xytext=(0, 4), textcoords="offset points")
        ax.set_ylim(0, 1.02)
        ax.set_ylabel(f"share of exact zeros ({summary['measured_on']})")
        ax.set_title(f"{family}: zeros per layer, mean ± std over seeds (accuracy in the legend)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_scale(summary: dict, path: Path) -> Path | None:
    """The CNN's L1 points with and without the unit-norm cap: the dense layer's zeros, its mean activation
    and the classifier's weight norm against the L1 strength."""
    plt = _plt()
    prefix = _prefix(summary)
    series = {
        method: sorted(
            (p for p in summary["points"] if p["family"] == "cnn" and p["method"] == method and not p.get("collapsed")),
            key=lambda p: p["l1"],
        )
        for method in ("l1", "l1-capped")
    }
    if not any(p["family"] == "cnn" and p["method"] == "l1" for p in summary["points"]):
        return None
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.8))
    panels = (
        (f"{prefix}sparsity_dense", "dense layer: share of exact zeros"),
        ("last_mean_activation", "dense layer: mean activation"),
        ("last_mean_fired", "dense layer: mean of the units that fired"),
        ("next_kernel_norm", "classifier kernel: Frobenius norm"),
    )
    floor = min((p["l1"] for p in summary["points"] if p["l1"] > 0), default=1e-3) / 3
    for ax, (field, title) in zip(axes, panels, strict=True):
        for method, points in series.items():
            if not points:
                continue
            xs = [max(p["l1"], floor) for p in points]
            ax.errorbar(
                xs,
                [p[f"{field}_mean"] for p in points],
                yerr=[p[f"{field}_std"] for p in points],
                marker="o",
                capsize=2,
                color=METHOD_COLOURS[method],
                label="L1" if method == "l1" else "L1, next kernels capped at unit norm",
            )
        ax.set_xscale("log")
        ax.set_xlabel(f"L1 activity strength (0 drawn at {floor:.1g})")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if any(series.values()):
            ax.legend(fontsize=8)
    left_out = [
        p["point"].split("/", 1)[1]
        for p in summary["points"]
        if p["family"] == "cnn" and p["method"] in series and p.get("collapsed")
    ]
    fig.suptitle(
        "The scale argument: as L1 rises, does the dense layer shrink instead of going to zero?"
        + (f" (left out, at chance: {', '.join(left_out)})" if left_out else "")
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_all(summary: dict, out_dir: Path) -> list[Path]:
    drawn = [draw_layers(summary, out_dir / "layers.png"), draw_scale(summary, out_dir / "scale.png")]
    return [p for p in drawn if p is not None]
