"""A stored model's card, told to a person: the registration summary (one screen) and the start-up log's
line. What is the same for every kind is here; each kind's card adds its own figures (``summary_lines`` and
``log_text``; the two ReLU kinds share :class:`~modelstore.card.ReluCard`'s)."""

from __future__ import annotations

from modelstore.card import ModelCard

FEW_FOR_TYPICALITY = 100
"""Below this many items in the typicality part, the summary warns: a 1% threshold set on fewer is coarse."""


def registration_summary(tag: str, card: ModelCard) -> list[str]:
    """What was registered, on one screen."""
    low, high = card.input_range
    more = " ..." if len(card.class_names) > 10 else ""
    lines = [
        f"registered {tag} (kind {card.kind})",
        f"  input    shape {tuple(card.input_shape)}, values in [{low:g}, {high:g}]",
        f"  classes  {len(card.class_names)}: {', '.join(card.class_names[:10])}{more}",
        *card.summary_lines(),
    ]
    typ = card.typicality
    fitted = f", fitted on {typ.fit_size} items" if typ.fit_size else ""
    lines.append(
        f"  typicality {typ.detector}{fitted}: threshold {typ.threshold:.3f} (target {typ.false_alarm_rate:.0%} "
        f"false alarms); measured {typ.measured_false_alarm_rate:.1%} on {typ.measured_on}"
    )
    if typ.calibration_size < FEW_FOR_TYPICALITY:
        lines.append(
            f"  warning  only {typ.calibration_size} items set the typicality threshold: false-alarm rates near "
            f"{typ.false_alarm_rate:.0%} need a calibration set of {3 * FEW_FOR_TYPICALITY} or more"
        )
    if card.test_accuracy is not None:
        lines.append(f"  accuracy {card.test_accuracy:.4f} on {card.accuracy_on}")
    if card.calibration is not None:
        c = card.calibration
        lines.append(
            f"  calibration {c.size} items (sha256 {c.sha256[:12]}...): {c.baseline_size} baseline, "
            f"{c.typicality_size} typicality, {c.measured_size} measured"
        )
    if "sha256" in card.provenance:
        lines.append(f"  file     {card.provenance.get('file', '')} sha256 {card.provenance['sha256'][:12]}...")
    lines.append(f"  serve it: make serve, then POST /models/{tag.split(':')[0]}/predict")
    return lines


def model_line(tag: str, card: ModelCard) -> str:
    """One served model in the start-up log: tag, kind, accuracy and baselines."""
    accuracy = f", accuracy {card.test_accuracy:.4f}" if card.test_accuracy is not None else ""
    head = f"model {tag} ({card.kind}{', ' + card.dataset if card.dataset else ''}{accuracy}"
    parent = getattr(card, "parent", None)
    head += f"; pruned from {parent})" if parent else ")"
    flag = f"; typicality {card.typicality.detector} above {card.typicality.threshold:.3f}"
    return f"{head}: {card.log_text()}{flag}"
