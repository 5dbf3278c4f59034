"""A per-layer controller of the activity penalty: it raises a layer's penalty while the layer has fewer zeros
than its target, and lowers it again (never below its base strength) while it has more.

Every ``every`` training steps it measures each penalised ReLU-family layer's share of exact zeros on a fixed
batch of training images (inference mode: no dropout, no augmentation) and multiplies that layer's
:class:`~sparsity.layers.ActivityPenalty` ``gain`` by ``exp(rate * (target - zeros))``, kept within
``[GAIN_MIN, GAIN_MAX]``. With the scale-invariant Hoyer term this is a push toward zeros that the network
cannot dodge by rescaling, as strong as each layer needs and no stronger.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from sparsity.layers import ActivityPenalty

CONTROL_SAMPLE = 256
"""Training images on which the controller measures each layer's zeros."""
GAIN_MIN, GAIN_MAX = 1.0, 100.0
"""A layer's penalty never falls below its base strength: a layer above target keeps what got it there."""


class ZeroShareController(keras.callbacks.Callback):
    def __init__(self, x: np.ndarray, target: float, every: int = 20, rate: float = 1.0) -> None:
        super().__init__()
        if not 0.0 < target < 1.0:
            raise ValueError(f"target must be a zero share in (0, 1), got {target}")
        self.x, self.target, self.every, self.rate = x, float(target), int(every), float(rate)
        self.layers: list[tuple[str, ActivityPenalty]] = []
        self.probe: keras.Model | None = None
        self.history: list[dict[str, tuple[float, float]]] = []
        self.step = 0

    def on_train_begin(self, logs=None) -> None:
        self.layers = [
            (layer.name, layer.activity_regularizer)
            for layer in self.model.layers
            if isinstance(layer.activity_regularizer, ActivityPenalty)
        ]
        if not self.layers:
            raise ValueError("the model has no ActivityPenalty to control (give it an L1 or Hoyer strength)")
        outputs = [self.model.get_layer(name).output for name, _ in self.layers]
        self.probe = keras.Model(self.model.inputs[0], outputs)
        self.step = 0

    def zero_shares(self) -> dict[str, float]:
        outputs = self.probe(self.x, training=False)
        outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
        return {name: float(np.mean(np.asarray(out) == 0)) for (name, _), out in zip(self.layers, outputs, strict=True)}

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        self.step += 1
        if self.step % self.every:
            return
        shares = self.zero_shares()
        record = {}
        for name, penalty in self.layers:
            gain = float(penalty.gain.numpy()) * math.exp(self.rate * (self.target - shares[name]))
            gain = min(GAIN_MAX, max(GAIN_MIN, gain))
            penalty.gain.assign(gain)
            record[name] = (shares[name], gain)
        self.history.append(record)


def controlled(control: float, x: np.ndarray) -> list[keras.callbacks.Callback]:
    """The callbacks a fit needs for a zero-share target ``control``: a controller on the first
    :data:`CONTROL_SAMPLE` images of ``x``, or none when ``control`` is 0."""
    return [ZeroShareController(x[:CONTROL_SAMPLE], control)] if control else []
