"""Every ReLU-family output of a Keras model, wherever it is in the graph.

``model.layers`` lists only the top level: a nested Functional or Sequential block is one layer whose
inner outputs live in its own graph, and a layer called at two places has no single ``.output``. So
instead of asking layers for their outputs, :func:`run_graph` executes the model's graph itself (Keras'
own ``Functional._run_through_graph``, the pinned Keras 3 API that ``Functional.call`` uses), descending
into nested Functional and Sequential blocks, and hands every layer call's output to a visitor. The
probe and the discovery at registration both run through it, so they see the same calls in the same
order:

- top-level layers, and layers of nested blocks named ``outer/inner``;
- a layer called at several places is counted at each call, named ``name@1``, ``name@2``, ...;
- ReLU-family: a ``relu`` or ``relu6`` activation fused into a layer or in an ``Activation`` layer, a
  ``ReLU`` layer with no negative slope (a ``max_value`` cap keeps its exact zeros), and the core's
  thresholded ReLU and k-WTA;
- activations with no exact zeros (GELU, swish, tanh, LeakyReLU, ...) are listed, not probed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from sparsity.layers import SPARSE_ACTIVATIONS

RELU_ACTIVATIONS = frozenset({"relu", "relu6"})
"""Activation functions (by ``__name__``) that are max(x, 0), possibly capped: exact zeros where off."""
OUTPUT_ACTIVATIONS = frozenset({"linear", "softmax", "log_softmax"})
"""Activations that are no hidden non-linearity (identity, or the classifier's normalisation)."""
OTHER_ACTIVATION_LAYERS = {
    keras.layers.LeakyReLU: "leaky_relu",
    keras.layers.PReLU: "prelu",
    keras.layers.ELU: "elu",
}


class UnsupportedModelError(ValueError):
    """A model whose graph the probe cannot walk (a subclassed model, several inputs or outputs)."""


@dataclass(frozen=True)
class ReluLayer:
    """One call of a ReLU-family layer: its output is never negative and exactly zero where it is off.

    ``units`` counts the last axis (conv channels, channels-last, or dense neurons): what can be
    "dead"; ``size`` counts the activations one sample produces there (H*W*C for a conv layer).
    """

    name: str
    units: int
    size: int


@dataclass(frozen=True)
class NotProbed:
    """A hidden activation the probe does not count, because it has no exact zeros."""

    name: str
    activation: str


def activation_name(layer: keras.layers.Layer) -> str | None:
    """The name of the non-linearity ``layer`` applies, or None for a layer that applies none."""
    if isinstance(layer, SPARSE_ACTIVATIONS):
        return type(layer).__name__
    if isinstance(layer, keras.layers.ReLU):
        return "relu" if float(layer.negative_slope) == 0.0 else "leaky_relu"
    for kind, name in OTHER_ACTIVATION_LAYERS.items():
        if isinstance(layer, kind):
            return name
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    return getattr(activation, "__name__", type(activation).__name__)


def is_relu_family(layer: keras.layers.Layer) -> bool:
    """True for layers whose output is max(x, 0) or sparser, possibly capped (see the module doc)."""
    if isinstance(layer, SPARSE_ACTIVATIONS):
        return True
    if isinstance(layer, keras.layers.ReLU):
        return float(layer.negative_slope) == 0.0 and float(layer.threshold) >= 0.0
    return activation_name(layer) in RELU_ACTIVATIONS


def _graph_of(model) -> keras.Model | None:
    """The Functional graph that runs ``model`` (a Sequential's own), or None for a subclassed model."""
    if isinstance(model, keras.Sequential):
        return model._functional
    if isinstance(model, keras.Model) and hasattr(model, "_run_through_graph") and hasattr(model, "_nodes_by_depth"):
        return model
    return None


Visitor = Callable[[str, keras.layers.Layer, object], None]


def run_graph(model: keras.Model, x, visit: Visitor, prefix: str = ""):
    """Run ``model`` on ``x`` for inference, calling ``visit(path, layer, output)`` after each layer call
    (nested blocks: each inner call, with ``path`` ``outer/inner``; the block itself is not visited).
    Returns the model's output, as ``model(x, training=False)`` would."""
    graph = _graph_of(model)
    if graph is None:
        raise UnsupportedModelError(
            f"{prefix}{model.name}: a subclassed model has no graph to walk; save a Functional or Sequential model"
        )

    def operation(op):
        def call(*args, **kwargs):
            if isinstance(op, keras.Model):
                inner = args[0] if len(args) == 1 else list(args)
                return run_graph(op, inner, visit, f"{prefix}{op.name}/")
            if "training" in getattr(op, "_call_context_args", ()):
                kwargs["training"] = False
            out = op(*args, **kwargs)
            visit(f"{prefix}{op.name}", op, out)
            return out

        return call

    outputs = graph._run_through_graph(x if isinstance(x, list | tuple) else [x], operation_fn=operation)
    return outputs[0] if isinstance(outputs, list | tuple) and len(outputs) == 1 else outputs


def call_names(paths: list[str]) -> list[str]:
    """Unique names for layer calls: a path called once keeps it, one called k times gets ``@1``..``@k``."""
    totals = Counter(paths)
    seen: Counter = Counter()
    names = []
    for path in paths:
        seen[path] += 1
        names.append(f"{path}@{seen[path]}" if totals[path] > 1 else path)
    return names


@dataclass(frozen=True)
class GraphSurvey:
    relu_layers: list[ReluLayer]
    not_probed: list[NotProbed]
    output_activation: str | None
    output_shape: tuple[int, ...]


def survey(model: keras.Model, sample: np.ndarray) -> GraphSurvey:
    """Run ``model`` once on ``sample`` (a small batch) and list its ReLU-family calls, the hidden
    activations it cannot probe, and what its output layer applies."""
    calls: list[tuple[str, keras.layers.Layer, tuple[int, ...]]] = []

    def visit(path, layer, out) -> None:
        calls.append((path, layer, tuple(int(d) for d in out.shape[1:])))

    output = run_graph(model, keras.ops.convert_to_tensor(np.asarray(sample, dtype=np.float32)), visit)
    names = call_names([path for path, _, _ in calls])
    relu, other = [], []
    for name, (_, layer, shape), index in zip(names, calls, range(len(calls)), strict=True):
        if is_relu_family(layer):
            relu.append(ReluLayer(name=name, units=int(shape[-1]) if shape else 1, size=int(np.prod(shape or (1,)))))
            continue
        activation = activation_name(layer)
        is_last = index == len(calls) - 1
        if activation is not None and activation not in OUTPUT_ACTIVATIONS and not (is_last and activation):
            other.append(NotProbed(name=name, activation=activation))
    last = calls[-1][1] if calls else None
    return GraphSurvey(
        relu_layers=relu,
        not_probed=other,
        output_activation=activation_name(last) if last is not None else None,
        output_shape=tuple(int(d) for d in output.shape[1:]),
    )


def weight_sparsity(model: keras.Model) -> dict[str, float]:
    """Fraction of exactly-zero weights (kernel and bias) of every layer that has weights, nested blocks'
    layers named ``outer/inner``."""
    result = {}

    def walk(layers, prefix: str) -> None:
        for layer in layers:
            if isinstance(layer, keras.Model):
                walk(layer.layers, f"{prefix}{layer.name}/")
                continue
            weights = [np.asarray(w) for w in layer.get_weights()]
            total = sum(w.size for w in weights)
            if total:
                result[f"{prefix}{layer.name}"] = sum(int(np.count_nonzero(w == 0)) for w in weights) / total

    walk(model.layers, "")
    return result
