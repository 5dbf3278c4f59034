"""One-pass activation probe for Keras ReLU models.

The probe is a multi-output Keras model (predictions + every ReLU layer's output) wrapped once in a
``tf.function`` with a fixed input signature. Zero counting and per-unit firing happen inside that
same compiled call, so a prediction and its sparsity always come from the same forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from sparsity.layers import SPARSE_ACTIVATIONS
from sparsity.result import ProbeResult
from sparsity.validation import check_batch


@dataclass(frozen=True)
class ReluLayer:
    """A layer whose output is a ReLU-family activation: never negative, exact zeros where it is off.

    ``units`` counts conv channels or dense neurons (what can be "dead"); ``size`` counts the
    activations one sample produces in that layer (H*W*C for a conv layer).
    """

    name: str
    units: int
    size: int


def is_relu_family(layer: keras.layers.Layer) -> bool:
    """True for layers whose output is max(x, 0) or sparser: a ReLU activation, a ``keras.layers.ReLU``
    with no negative slope, a threshold >= 0 and no cap, and the core's thresholded ReLU and k-WTA."""
    if isinstance(layer, SPARSE_ACTIVATIONS):
        return True
    if isinstance(layer, keras.layers.ReLU):
        return float(layer.negative_slope) == 0.0 and float(layer.threshold) >= 0.0 and layer.max_value is None
    activation = getattr(layer, "activation", None)
    return activation is not None and getattr(activation, "__name__", "") == "relu"


def find_relu_layers(model: keras.Model) -> list[ReluLayer]:
    """Return the model's ReLU-family layers (see :func:`is_relu_family`), in model order."""
    found = []
    for layer in model.layers:
        if not is_relu_family(layer):
            continue
        shape = tuple(layer.output.shape[1:])
        found.append(ReluLayer(name=layer.name, units=int(shape[-1]), size=int(np.prod(shape))))
    return found


def weight_sparsity(model: keras.Model) -> dict[str, float]:
    """Fraction of exactly-zero weights (kernel and bias) of every layer that has weights."""
    result = {}
    for layer in model.layers:
        weights = [np.asarray(w) for w in layer.get_weights()]
        total = sum(w.size for w in weights)
        if total:
            zeros = sum(int(np.count_nonzero(w == 0)) for w in weights)
            result[layer.name] = zeros / total
    return result


class SparsityProbe:
    """Predictions and ReLU-layer sparsity of a Keras model from a single compiled forward pass.

    Build once per model (tracing happens on the first call); ``run`` is then cheap. Input is
    checked first: wrong shape, NaN/Infinity or values outside ``value_range`` raise
    :class:`sparsity.InvalidInputError` and are never counted.
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        value_range: tuple[float, float] | None = None,
        field: str = "inputs",
    ) -> None:
        self.model = model
        self.layers = find_relu_layers(model)
        if not self.layers:
            raise ValueError(f"model {model.name!r} has no ReLU layer to probe")
        self.value_range = value_range
        self.field = field
        self.item_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
        outputs = [model.outputs[0]] + [model.get_layer(l.name).output for l in self.layers]
        self._multi = keras.Model(inputs=model.inputs, outputs=outputs)
        self._sizes = np.array([l.size for l in self.layers], dtype=np.int64)
        self._unit_offsets = np.cumsum([l.units for l in self.layers])[:-1]
        spec = tf.TensorSpec((None, *self.item_shape), tf.float32)
        self._compiled = tf.function(self._forward, input_signature=[spec], reduce_retracing=True)

    def _forward(self, x: tf.Tensor):
        outs = self._multi([x], training=False)
        probs, relu_outs = outs[0], outs[1:]
        nonzero, fired = [], []
        for out in relu_outs:
            # ReLU-family outputs are never negative, so sign() is 1 where a unit is on and 0 where it is
            # off: one pass gives, per sample and unit, the positions where it is on (a float sum of at
            # most a few thousand ones: exact). Its total is the non-zero count, and > 0 means "fired".
            # Measured: 1.4 times cheaper at 256 images than counting zeros and firing separately.
            flat = tf.reshape(out, tf.stack([tf.shape(out)[0], -1, out.shape[-1]]))
            on = tf.reduce_sum(tf.sign(flat), axis=1)
            nonzero.append(tf.cast(tf.reduce_sum(on, axis=1), tf.int32))
            fired.append(on > 0.0)
        # one tensor each: fewer device-to-host copies per call
        return probs, tf.stack(nonzero, axis=1), tf.concat(fired, axis=1)

    def run(self, x: np.ndarray) -> ProbeResult:
        """Check ``x`` (N, *item_shape) and return predictions and sparsity for each sample."""
        low, high = self.value_range if self.value_range else (None, None)
        arr = check_batch(x, field=self.field, item_shape=self.item_shape, low=low, high=high)
        # a tf.function may be called from several threads at once; each call has its own outputs
        probs, nonzero, fired = self._compiled(tf.convert_to_tensor(arr))
        zero_counts = self._sizes[None, :] - nonzero.numpy().astype(np.int64)  # (N, layers)
        fired_units = np.split(fired.numpy(), self._unit_offsets, axis=1)  # (N, units) per layer
        layer_sparsity = {layer.name: zero_counts[:, i] / layer.size for i, layer in enumerate(self.layers)}
        overall = zero_counts.sum(axis=1) / self._sizes.sum()
        return ProbeResult(
            probabilities=probs.numpy(),
            layer_sparsity=layer_sparsity,
            overall=overall,
            fired={layer.name: f for layer, f in zip(self.layers, fired_units, strict=True)},
        )

    def run_batched(self, x: np.ndarray, batch_size: int = 512) -> ProbeResult:
        """``run`` over a large array in chunks (for evaluating a whole test set)."""
        parts = [self.run(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return ProbeResult(
            probabilities=np.concatenate([p.probabilities for p in parts]),
            layer_sparsity={
                name: np.concatenate([p.layer_sparsity[name] for p in parts]) for name in parts[0].layer_sparsity
            },
            overall=np.concatenate([p.overall for p in parts]),
            fired={name: np.concatenate([p.fired[name] for p in parts]) for name in parts[0].fired},
        )
