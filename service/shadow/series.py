"""The shadows' Prometheus series: every process writes its pair's figures; :func:`totals_of` sums them back."""

from __future__ import annotations

import warnings

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from modelstore.compare import SIDES, Compared, Totals, unit_widths
from service.observability.metrics import RATIO_BUCKETS, observe_many, remove_child
from service.shadow.spec import ShadowSpec
from sparsity.contract import ALL_LAYERS

PAIR = ["model", "primary", "candidate", "shadow_id"]
OUTCOMES = ("mirrored", "dropped", "compared", "failed")
SHADOW_ITEMS = Counter(
    "shadow_items",
    "Inputs of a shadowed model's requests, by outcome: mirrored (queued for the candidate), dropped (the queue "
    "was full), compared, failed (the candidate refused them)",
    [*PAIR, "outcome"],
)
SHADOW_AGREEMENTS = Counter("shadow_label_agreements", "Compared inputs both versions gave the same label", PAIR)
SHADOW_TOTAL_VARIATION = Histogram(
    "shadow_probability_total_variation",
    "Per compared input, the total variation distance between the two versions' probabilities",
    PAIR,
    buckets=RATIO_BUCKETS,
)
SHADOW_SPARSITY = Histogram(
    "shadow_activation_sparsity_ratio",
    "Per compared input, each layer's exact-zero share in the primary and in the candidate (side)",
    [*PAIR, "side", "layer"],
    buckets=RATIO_BUCKETS,
)
SHADOW_ATYPICAL = Counter(
    "shadow_atypical", "Compared inputs flagged atypical by the primary, the candidate, or both (side)", [*PAIR, "side"]
)
SHADOW_UNIT_FIRED = Counter(
    "shadow_candidate_unit_fired", "Compared inputs each candidate unit fired on", [*PAIR, "layer", "unit"]
)
SHADOW_SHARE = Gauge(
    "shadow_share", "The share of a name's requests mirrored to (or answered by) the candidate", [*PAIR, "mode"],
    multiprocess_mode="max",
)  # fmt: skip
CANARY_REQUESTS = Counter("canary_requests", "Requests of a canary split, by the side that answered", [*PAIR, "side"])


class PairMetrics:
    """The label children of one shadow where its comparisons are made (the shadow process)."""

    def __init__(self, spec: ShadowSpec, primary_layers: list[str], candidate) -> None:
        labels = spec.labels
        self.labels = labels
        self.items = {outcome: SHADOW_ITEMS.labels(*labels, outcome) for outcome in ("compared", "failed")}
        self.agreements = SHADOW_AGREEMENTS.labels(*labels)
        self.total_variation = SHADOW_TOTAL_VARIATION.labels(*labels)
        self.primary_layers = list(primary_layers)
        layers = {"primary": _with_all(primary_layers), "candidate": _with_all(getattr(candidate, "layers", []))}
        self.sparsity = {
            side: {layer: SHADOW_SPARSITY.labels(*labels, side, layer) for layer in names}
            for side, names in layers.items()
        }
        self.atypical = {side: SHADOW_ATYPICAL.labels(*labels, side) for side in (*SIDES, "both")}
        self.widths = unit_widths(candidate) or {}
        self.units = {
            layer: [SHADOW_UNIT_FIRED.labels(*labels, layer, str(unit)) for unit in range(width)]
            for layer, width in self.widths.items()
        }

    def write(self, batch: list[Compared]) -> None:
        """A batch of comparisons, written in one go ("compared" last: a reader that sees it sees the rest)."""
        if not batch:
            return
        observe_many(self.total_variation, np.concatenate([c.total_variation for c in batch]))
        for side in SIDES:
            for layer, child in self.sparsity[side].items():
                values = [c.sparsity[side][layer] for c in batch if layer in c.sparsity[side]]
                if values:
                    observe_many(child, np.concatenate(values))
        totals = Totals()
        for compared in batch:
            totals.add(compared.totals())
        for side, count in totals.atypical.items():
            if count:
                self.atypical[side].inc(count)
        for layer, counts in totals.candidate_fired.items():
            children = self.units.get(layer, [])
            for unit in np.flatnonzero(counts).tolist():
                if unit < len(children):
                    children[unit].inc(int(counts[unit]))
        if totals.agreements:
            self.agreements.inc(totals.agreements)
        self.items["compared"].inc(totals.items)

    def forget(self) -> None:
        """Drop this pair's children from this process (the exposition drops every process's series of it)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for metric in (SHADOW_AGREEMENTS, SHADOW_TOTAL_VARIATION):
                remove_child(metric, self.labels)
            for outcome in self.items:
                remove_child(SHADOW_ITEMS, (*self.labels, outcome))
            for side, layers in self.sparsity.items():
                for layer in layers:
                    remove_child(SHADOW_SPARSITY, (*self.labels, side, layer))
            for side in self.atypical:
                remove_child(SHADOW_ATYPICAL, (*self.labels, side))
            for layer, width in self.widths.items():
                for unit in range(width):
                    remove_child(SHADOW_UNIT_FIRED, (*self.labels, layer, str(unit)))


def _with_all(layers) -> list[str]:
    layers = list(layers or [])
    return [*layers, ALL_LAYERS] if layers else []


def totals_of(families, spec: ShadowSpec, widths: dict[str, int]) -> tuple[Totals, dict[str, int]]:
    """One shadow's comparison, summed over every worker's series (the collected metric families): its
    :class:`Totals` (the candidate's units by ``widths``) and its counts by outcome (a canary's: by side)."""
    want = dict(zip(PAIR, spec.labels, strict=True))
    totals, outcomes, fired = Totals(), dict.fromkeys(OUTCOMES, 0.0), {}
    for family in families:
        if not family.name.startswith(("shadow_", "canary_")):
            continue
        for sample in family.samples:
            labels = sample.labels
            if any(labels.get(k) != v for k, v in want.items()):
                continue
            name, value = sample.name, sample.value
            if name == "shadow_items_total":
                outcomes[labels["outcome"]] += value
            elif name == "shadow_label_agreements_total":
                totals.agreements += int(value)
            elif name == "shadow_probability_total_variation_sum":
                totals.total_variation += value
            elif name == "shadow_activation_sparsity_ratio_sum":
                side = totals.sparsity[labels["side"]]
                side[labels["layer"]] = side.get(labels["layer"], 0.0) + value
            elif name == "shadow_atypical_total":
                totals.atypical[labels["side"]] += int(value)
            elif name == "shadow_candidate_unit_fired_total":
                unit = (labels["layer"], int(labels["unit"]))
                fired[unit] = fired.get(unit, 0) + value
            elif name == "canary_requests_total":
                outcomes[labels["side"]] = outcomes.get(labels["side"], 0.0) + value
    totals.items = int(outcomes["compared"])
    totals.candidate_fired = {layer: np.zeros(width, dtype=np.int64) for layer, width in widths.items()}
    for (layer, unit), value in fired.items():
        if layer in totals.candidate_fired and unit < widths[layer]:
            totals.candidate_fired[layer][unit] = int(value)
    return totals, {k: int(v) for k, v in outcomes.items()}
