"""What one probe pass returns: plain NumPy, so code that only reads results (the service's responses
and metrics) needs no TensorFlow."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ProbeResult:
    """What one forward pass produced for a batch of N samples."""

    probabilities: np.ndarray  # (N, classes) float32
    layer_sparsity: dict[str, np.ndarray]  # layer -> (N,) zero fraction
    overall: np.ndarray  # (N,) zeros over activations across all ReLU layers
    fired: dict[str, np.ndarray]  # layer -> (N, units) bool: unit produced a value > 0
    shares: np.ndarray | None = None  # (N, all units) share of each unit's positions that were on, layer by layer
    scores: np.ndarray | None = None  # (N,) typicality scores, when the probe was built with a scorer

    @property
    def labels(self) -> np.ndarray:
        return np.argmax(self.probabilities, axis=1)

    def take(self, rows: np.ndarray) -> ProbeResult:
        """The results of the samples ``rows`` (indices), in that order."""
        return ProbeResult(
            probabilities=self.probabilities[rows],
            layer_sparsity={name: values[rows] for name, values in self.layer_sparsity.items()},
            overall=self.overall[rows],
            fired={name: values[rows] for name, values in self.fired.items()},
            shares=None if self.shares is None else self.shares[rows],
            scores=None if self.scores is None else self.scores[rows],
        )
