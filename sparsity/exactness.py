"""Whether a second engine's answers are the reference engine's: the check a Keras model's ONNX twin and the
sparse engine both pass before they serve.

Equal means: the same label for every item, probabilities within a tolerance, and every unit's count of
positions on the same, except at *rounding ties*: a ReLU-family node's input within
:data:`~sparsity.onnx_probe.TIE_TOLERANCE` of zero (relative to the layer's largest input on that item). There
the order of a sum's arithmetic decides whether the activation is an exact zero, and engines add in different
orders (seen on ``mnist_cnn``: one activation of 22 million, whose input is 5.3e-10 computed in float64 from
terms summing to 0.077 in magnitude; TensorFlow gave 1.9e-9, ONNX Runtime 0). A unit may differ by at most its
number of tied positions; anything more refuses the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparsity.result import ProbeResult

PROBABILITY_TOLERANCE = 1e-5
"""The most a second engine's probability may differ from the reference's on any item (the Keras twin's and the
sparse engine's check)."""


@dataclass(frozen=True)
class Agreement:
    items: int
    zero_counts_equal: bool
    unit_counts_equal: bool
    rounding_ties: int
    tie_items: int
    activations: int
    max_probability_difference: float


def agreement(
    reference: ProbeResult,
    candidate: ProbeResult,
    layers: list,
    x: np.ndarray,
    onnx_model,
    onnx_layers: list,
    input_name: str,
    *,
    tolerance: float,
    what: str,
    against: str,
) -> tuple[Agreement | None, str | None]:
    """Compare ``candidate`` with ``reference`` on ``x`` (both from runs on it). ``layers`` give ``name``,
    ``units`` and ``size``; ties are measured on ``onnx_model`` (its ``onnx_layers``, its input ``input_name``; the
    plain model or its counting copy) with ONNX Runtime.
    Returns (the agreement, None), or (None, the first difference in one line: ``what`` differs from ``against``)."""
    from sparsity.onnx_probe import near_zero_counts

    positions = np.repeat([layer.size // layer.units for layer in layers], [layer.units for layer in layers])
    on, other_on = np.rint(reference.shares * positions), np.rint(candidate.shares * positions)
    gap = np.abs(on - other_on)
    rows = np.nonzero(gap.any(axis=1))[0]
    if len(rows):
        rows_x = np.ascontiguousarray(x[rows])
        near = near_zero_counts(onnx_model, onnx_layers, rows_x, input_name=input_name)
        ties = np.concatenate([near[layer.name] for layer in onnx_layers], axis=1)
        beyond = gap[rows] > ties
        if beyond.any():
            unit = int(np.nonzero(beyond.any(axis=0))[0][0])
            bounds = np.cumsum([layer.units for layer in layers])
            layer = layers[int(np.searchsorted(bounds, unit, side="right"))]
            items = int(beyond.any(axis=1).sum())
            return None, (
                f"{what}'s zero counts differ from {against} in layer {layer.name} on {items} of {len(x)} items, "
                "beyond rounding ties"
            )
    labels = int(np.sum(reference.labels != candidate.labels))
    if labels:
        return None, f"{what}'s labels differ from {against} on {labels} of {len(x)} items"
    difference = float(np.abs(reference.probabilities - candidate.probabilities).max())
    if difference > tolerance:
        return None, f"{what}'s probabilities differ from {against} by {difference:.1e} (> {tolerance:g})"
    zeros_equal = all(
        np.array_equal(
            np.rint(reference.layer_sparsity[l.name] * l.size), np.rint(candidate.layer_sparsity[l.name] * l.size)
        )
        for l in layers
    )
    return (
        Agreement(
            items=len(x),
            zero_counts_equal=zeros_equal,
            unit_counts_equal=not len(rows),
            rounding_ties=int(gap.sum()),
            tie_items=len(rows),
            activations=len(x) * sum(layer.size for layer in layers),
            max_probability_difference=difference,
        ),
        None,
    )
