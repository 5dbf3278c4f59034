"""The activation-sparsity core, shared by the model store, training, the lab and the service.

NumPy, TensorFlow and ONNX: find every ReLU-family layer call of a Keras model or node of an ONNX graph,
build a one-pass probe (Keras: a compiled function; ONNX: a counting copy of the graph in ONNX Runtime) that
returns predictions together with per-layer zero counts and per-unit firing, score typicality, measure the
sparsity of a linear model, and state the data contract (:mod:`sparsity.contract`). It imports nothing of
the project's packages (``modelstore``, ``training``, ``lab``, ``service``).

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
