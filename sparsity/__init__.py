"""Activation-sparsity core shared by training and serving.

Pure NumPy/TensorFlow: find the ReLU layers of a Keras model, build a one-pass probe that returns
predictions together with per-layer zero fractions, and measure the sparsity of
an L1 linear model. Neither ``training`` nor ``service`` code is imported here.

Names are imported lazily, so ``sparsity.contract`` can be used without loading TensorFlow
(a CLI's ``--help`` answers at once).
"""

from importlib import import_module

_EXPORTS = {
    "InvalidInputError": "sparsity.errors",
    "KWinners": "sparsity.layers",
    "LinearSparsity": "sparsity.linear",
    "UnsupportedModelError": "sparsity.graph",
    "linear_sparsity": "sparsity.linear",
    "ProbeResult": "sparsity.result",
    "ReluLayer": "sparsity.graph",
    "SparsityProbe": "sparsity.probe",
    "ThresholdedReLU": "sparsity.layers",
    "find_relu_layers": "sparsity.probe",
    "is_relu_family": "sparsity.graph",
    "weight_sparsity": "sparsity.graph",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sparsity' has no attribute {name!r}")
