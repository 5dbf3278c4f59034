"""The check a load makes before a model takes traffic: replay the card's stored examples (calibration items
kept at registration) through the loaded runtime and compare with what registration measured.

- A card with ``example_zeros`` (registered since the live model server): every layer's exact-zero counts on
  the examples must be the registration's, but for :data:`FLIPS_ALLOWED`: another thread count sums a
  pre-activation in another order, and one within a rounding error of zero may then land on the other side.
  A different file, other weights, another engine or TensorFlow's other kernels (oneDNN) move hundreds.
- An older card: each layer's mean zero share over the examples must lie within four standard deviations
  (at least 0.02) of the card's baseline; this catches a wrong model, not a subtle drift.
- Every kind: the probabilities are finite.

:func:`replay_problem` returns the one line that says why a model fails, or None.
"""

from __future__ import annotations

import numpy as np

from modelstore.card import ReluCard
from modelstore.runtime import Runtime
from sparsity.contract import ALL_LAYERS

LOOSE_STDS = 4.0
LOOSE_FLOOR = 0.02
FLIPS_ALLOWED = 2
"""Per layer, over all examples: zeros that may differ from registration's (see the module docstring)."""


def replay_problem(runtime: Runtime) -> str | None:
    """Why ``runtime`` does not reproduce its card on the card's examples, or None when it does."""
    card = runtime.card
    if not card.examples:
        return None  # a card without examples (none stored): nothing to replay
    x = np.asarray(card.examples, dtype=np.float32)
    prediction = runtime.predict(x)
    if not np.isfinite(prediction.probabilities).all():
        return f"model {runtime.tag}: non-finite probabilities on the card's examples"
    if not isinstance(card, ReluCard):
        return None
    sizes = {layer.name: layer.size for layer in card.relu_layers}
    if card.example_zeros:
        for layer, expected in card.example_zeros.items():
            got = np.rint(prediction.layer_sparsity[layer] * sizes[layer]).astype(int)
            if int(np.abs(got - np.asarray(expected)).sum()) > FLIPS_ALLOWED:
                got = got.tolist()
                return (
                    f"model {runtime.tag}: layer {layer} has {got} exact zeros on the card's {len(x)} examples, "
                    f"registration measured {list(expected)}"
                )
        return None
    for layer, baseline in card.activation_sparsity.items():
        if layer == ALL_LAYERS or layer not in prediction.layer_sparsity:
            continue
        mean = float(np.mean(prediction.layer_sparsity[layer]))
        allowed = max(LOOSE_STDS * baseline.std, LOOSE_FLOOR)
        if abs(mean - baseline.mean) > allowed:
            return (
                f"model {runtime.tag}: layer {layer} is {mean:.3f} zeros on the card's examples, "
                f"its baseline {baseline.mean:.3f} (allowed {allowed:.3f})"
            )
    return None
