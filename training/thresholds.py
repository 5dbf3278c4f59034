"""Per-layer FATReLU thresholds set at a target zero share, then fine-tuned (the lab's ``threshold`` method).

A layer that falls short of its target gets a FATReLU (``x if x > t else 0``) whose threshold ``t`` is the
target-quantile of the layer's pre-activations over the training images: where that quantile is at or
below 0 the layer already meets its target and stays a plain ReLU. Then the model is fine-tuned with the
thresholds fixed, one epoch at a time, the thresholds set again before each epoch: fine-tuning moves the
pre-activations (calibrated once and fine-tuned for 3 epochs, a dense layer set at 0.886 zeros drifted to
0.83), and each round brings the thresholds back to the target while the weights adapt to them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import numpy as np

from training.models import LayerSpec

QUANTILE_SAMPLE = 1000
"""Training images whose pre-activations set each threshold (a conv layer gives ~800k values from them)."""


def transfer_weights(source: keras.Model, target: keras.Model) -> None:
    """Copy every weight layer of ``source`` into ``target``, which has the same layers, except that a plain
    ReLU's ``conv1`` (weights and activation in one layer) may be ``conv1_pre`` + an activation layer in the
    other model."""
    weighted = {layer.name: layer for layer in source.layers if layer.weights}
    for layer in target.layers:
        if not layer.weights:
            continue
        candidates = (layer.name, f"{layer.name}_pre", layer.name.removesuffix("_pre"))
        match = next((weighted[name] for name in candidates if name in weighted), None)
        if match is None:
            raise ValueError(f"no weights for layer {layer.name!r} in {source.name!r}")
        layer.set_weights(match.get_weights())


def pre_activation_quantiles(
    model: keras.Model, layers: list[str], x: np.ndarray, targets: dict[str, float]
) -> dict[str, float]:
    """Each layer's ``targets[layer]``-quantile of its activation layer's input over ``x``, never below 0."""
    probe = keras.Model(model.inputs[0], [model.get_layer(name).input for name in layers])
    outputs = probe.predict(x, batch_size=256, verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    return {
        name: max(0.0, float(np.quantile(values.reshape(-1), targets[name])))
        for name, values in zip(layers, outputs, strict=True)
    }


def calibrate(
    build: Callable[[LayerSpec], keras.Model],
    trained: keras.Model,
    spec: LayerSpec,
    layers: list[str],
    x: np.ndarray,
    targets: dict[str, float],
) -> tuple[keras.Model, LayerSpec]:
    """``trained``'s weights in a model whose layers short of ``targets`` are FATReLUs at their target quantile,
    and the LayerSpec that builds it (only thresholds above 0 are kept in it)."""
    sample = x[:QUANTILE_SAMPLE]
    open_spec = dataclasses.replace(spec, thresholds=tuple((name, 0.0) for name in layers))
    opened = build(open_spec)
    transfer_weights(trained, opened)
    found = pre_activation_quantiles(opened, layers, sample, targets)
    final_spec = dataclasses.replace(spec, thresholds=tuple((name, t) for name, t in found.items() if t > 0))
    model = build(final_spec)
    transfer_weights(trained, model)
    return model, final_spec


def threshold_and_fine_tune(
    build: Callable[[LayerSpec], keras.Model],
    trained: keras.Model,
    spec: LayerSpec,
    layers: list[str],
    x: np.ndarray,
    y: np.ndarray,
    targets: dict[str, float],
    epochs: int,
    learning_rate: float = 1e-4,
    batch_size: int = 32,
) -> tuple[keras.Model, LayerSpec]:
    """``epochs`` rounds of: calibrate, then one epoch of fine-tuning with the thresholds fixed and the
    penalties at full strength (a ramped penalty is built at 0 and no ramp runs here: it would fine-tune with
    no penalty at all). With 0 epochs, calibrated only."""
    spec = dataclasses.replace(spec, ramp=0.0)
    model, tuned_spec = calibrate(build, trained, spec, layers, x, targets)
    for round_ in range(epochs):
        if round_:
            model, tuned_spec = calibrate(build, model, spec, layers, x, targets)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        model.fit(x, y, epochs=1, batch_size=batch_size, shuffle=True, verbose=0)
    return model, tuned_spec
