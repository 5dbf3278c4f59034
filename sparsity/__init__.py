"""Activation-sparsity core shared by training and serving.

Pure NumPy/TensorFlow: find the ReLU layers of a Keras model, build a one-pass probe that returns
predictions together with per-layer zero fractions, track dead units, and measure the sparsity of
an L1 linear model. Neither ``training`` nor ``service`` code is imported here.
"""

from sparsity.contract import IRIS_CLASS_NAMES, MNIST_CLASS_NAMES, MNIST_SHAPE
from sparsity.dead_units import DeadUnitTracker
from sparsity.errors import InvalidInputError
from sparsity.linear import LinearSparsity, linear_sparsity
from sparsity.probe import ProbeResult, ReluLayer, SparsityProbe, find_relu_layers, weight_sparsity

__all__ = [
    "IRIS_CLASS_NAMES",
    "MNIST_CLASS_NAMES",
    "MNIST_SHAPE",
    "DeadUnitTracker",
    "InvalidInputError",
    "LinearSparsity",
    "ProbeResult",
    "ReluLayer",
    "SparsityProbe",
    "find_relu_layers",
    "linear_sparsity",
    "weight_sparsity",
]
