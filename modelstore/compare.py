"""Two versions of a model on the same inputs, compared: what a shadow accumulates over live traffic
(:mod:`service.shadow`) and ``python -m modelstore compare`` over a data set, through the same functions, so
the two give the same figures.

Per input: whether the labels agree, how far the probabilities moved (total variation distance, half the L1
distance: 0 for the same answer, 1 for disjoint ones), each layer's exact-zero share in both versions, both
versions' typicality flags, and which of the candidate's units fired. Accumulated: :class:`Totals` (plain
counts and sums, so they add up over requests, workers and replicas), read out by :func:`summary`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from modelstore.runtime import Prediction, Runtime
from sparsity.contract import ALL_LAYERS

SIDES = ("primary", "candidate")


class IncomparableVersions(ValueError):
    """Two versions that cannot answer the same inputs (one line saying why)."""


def check_pair(primary: Runtime, candidate: Runtime) -> None:
    """IncomparableVersions unless both take the same inputs and answer the same classes."""
    if primary.item_shape != candidate.item_shape:
        raise IncomparableVersions(
            f"{candidate.tag} takes inputs of shape {candidate.item_shape}, {primary.tag} {primary.item_shape}"
        )
    if [str(c) for c in primary.class_names] != [str(c) for c in candidate.class_names]:
        raise IncomparableVersions(f"{candidate.tag} answers other classes than {primary.tag}")


def sparsity_by_layer(prediction: Prediction) -> dict[str, np.ndarray]:
    """Each layer's per-input exact-zero share, and ``all`` (none for a linear model)."""
    if not prediction.layer_sparsity:
        return {}
    return {**prediction.layer_sparsity, ALL_LAYERS: prediction.overall}


def total_variation(primary: Prediction, candidate: Prediction) -> np.ndarray:
    """Per input, half the L1 distance between the two probability vectors (float64)."""
    p = np.asarray(primary.probabilities, dtype=np.float64)
    q = np.asarray(candidate.probabilities, dtype=np.float64)
    return 0.5 * np.abs(p - q).sum(axis=1)


@dataclass
class Totals:
    """What a comparison has seen, as counts and sums (they add up)."""

    items: int = 0
    agreements: int = 0
    total_variation: float = 0.0
    sparsity: dict[str, dict[str, float]] = field(default_factory=lambda: {side: {} for side in SIDES})
    atypical: dict[str, int] = field(default_factory=lambda: {"primary": 0, "candidate": 0, "both": 0})
    candidate_fired: dict[str, np.ndarray] = field(default_factory=dict)  # layer -> inputs each unit fired on

    def add(self, other: Totals) -> Totals:
        self.items += other.items
        self.agreements += other.agreements
        self.total_variation += other.total_variation
        for side in SIDES:
            for layer, value in other.sparsity[side].items():
                self.sparsity[side][layer] = self.sparsity[side].get(layer, 0.0) + value
        for key, value in other.atypical.items():
            self.atypical[key] += value
        for layer, counts in other.candidate_fired.items():
            before = self.candidate_fired.get(layer)
            self.candidate_fired[layer] = counts.copy() if before is None else before + counts
        return self


@dataclass
class Compared:
    """One request's comparison: per-input arrays (what the metrics observe) and their :class:`Totals`."""

    agree: np.ndarray  # (N,) bool
    total_variation: np.ndarray  # (N,)
    sparsity: dict[str, dict[str, np.ndarray]]  # side -> layer -> (N,)
    atypical: dict[str, np.ndarray]  # primary, candidate, both -> (N,) bool
    fired: dict[str, np.ndarray]  # layer -> (units,) inputs each candidate unit fired on

    def totals(self) -> Totals:
        return Totals(
            items=int(self.agree.size),
            agreements=int(np.count_nonzero(self.agree)),
            total_variation=float(self.total_variation.sum()),
            sparsity={
                side: {layer: float(np.sum(v, dtype=np.float64)) for layer, v in layers.items()}
                for side, layers in self.sparsity.items()
            },
            atypical={key: int(np.count_nonzero(flags)) for key, flags in self.atypical.items()},
            candidate_fired={layer: counts.copy() for layer, counts in self.fired.items()},
        )


def compare(primary: Prediction, candidate: Prediction) -> Compared:
    """The two versions' answers for the same inputs, compared input by input."""
    p_atypical = np.asarray(primary.atypical, dtype=bool)
    c_atypical = np.asarray(candidate.atypical, dtype=bool)
    return Compared(
        agree=primary.labels == candidate.labels,
        total_variation=total_variation(primary, candidate),
        sparsity={"primary": sparsity_by_layer(primary), "candidate": sparsity_by_layer(candidate)},
        atypical={"primary": p_atypical, "candidate": c_atypical, "both": p_atypical & c_atypical},
        fired={layer: np.count_nonzero(rows, axis=0).astype(np.int64) for layer, rows in candidate.fired.items()},
    )


def _share(count: int, items: int) -> float | None:
    return count / items if items else None


def summary(totals: Totals, candidate_units: dict[str, int] | None = None) -> dict:
    """The figures a user reads (the shadow's ``GET`` and ``compare``'s output): counts, and means over inputs.

    ``layers``: per layer of either version, both versions' mean exact-zero share and the candidate's minus the
    primary's (None where a version has no such layer). ``candidate_dead_units``: per layer, the candidate's units
    that fired on none of the inputs (None when per-unit counts were not kept)."""
    n = totals.items
    names = list(dict.fromkeys([*totals.sparsity["primary"], *totals.sparsity["candidate"]]))
    if ALL_LAYERS in names:  # the overall share last
        names = [*(name for name in names if name != ALL_LAYERS), ALL_LAYERS]
    layers = {}
    for layer in names:
        sums = {side: totals.sparsity[side].get(layer) for side in SIDES}
        means = {side: value / n if n and value is not None else None for side, value in sums.items()}
        both = None not in means.values()
        layers[layer] = {**means, "difference": means["candidate"] - means["primary"] if both else None}
    dead = None
    if candidate_units and n:
        dead = {}
        for layer, width in candidate_units.items():
            counts = totals.candidate_fired.get(layer, np.zeros(width, dtype=np.int64))
            dead[layer] = int(np.count_nonzero(counts == 0))
    return {
        "inputs": n,
        "label_agreement": {"count": totals.agreements, "share": _share(totals.agreements, n)},
        "mean_total_variation": totals.total_variation / n if n else None,
        "layers": layers,
        "atypical": {key: {"count": count, "share": _share(count, n)} for key, count in totals.atypical.items()},
        "candidate_dead_units": dead,
    }


def unit_widths(runtime: Runtime) -> dict[str, int] | None:
    """Each ReLU layer's unit count (None for a model without ReLU layers)."""
    layers = getattr(runtime.card, "relu_layers", None)
    return {layer.name: layer.units for layer in layers} if layers else None


def compare_on(primary: Runtime, candidate: Runtime, x: np.ndarray, batch: int = 256) -> dict:
    """Both versions on every input of ``x`` (in batches), compared: :func:`summary` of the whole set."""
    check_pair(primary, candidate)
    totals = Totals()
    for start in range(0, len(x), batch):
        chunk = x[start : start + batch]
        totals.add(compare(primary.predict(chunk), candidate.predict(chunk)).totals())
    return summary(totals, unit_widths(candidate))


def summary_lines(primary: str, candidate: str, figures: dict) -> list[str]:
    """:func:`summary` as a few lines of text (the ``compare`` command's output)."""

    def share(value) -> str:
        return "-" if value is None else f"{value:.4f}"

    n = figures["inputs"]
    agreement = figures["label_agreement"]
    lines = [
        f"{candidate} against {primary} on {n} inputs",
        f"  labels agree     {agreement['count']} of {n} ({share(agreement['share'])})",
        f"  mean total variation of the probabilities {share(figures['mean_total_variation'])}",
        f"  atypical         primary {figures['atypical']['primary']['count']}, candidate "
        f"{figures['atypical']['candidate']['count']}, both {figures['atypical']['both']['count']}",
    ]
    if figures["layers"]:
        lines.append(f"  {'layer':<16} {'primary':>8} {'candidate':>10} {'difference':>11}")
        for layer, row in figures["layers"].items():
            difference = "-" if row["difference"] is None else f"{row['difference']:+.4f}"
            lines.append(f"  {layer:<16} {share(row['primary']):>8} {share(row['candidate']):>10} {difference:>11}")
    dead = figures["candidate_dead_units"]
    if dead is not None:
        lines.append("  candidate's dead units: " + ", ".join(f"{layer} {count}" for layer, count in dead.items()))
    return lines
