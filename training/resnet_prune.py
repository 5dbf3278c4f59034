"""Pruning the residual CNN: channels tied through an ``Add`` are kept or removed together.

A residual stage's stream is one set of channels that every block of the stage adds into: channel ``c`` of
the stem (or the stage's projection) and of every block's second convolution is the same channel ``c``
after the ``Add``. It can only go from all of them at once, and only when no ReLU that gates it ever fires
on it:

- post-activation (``Add`` then ReLU): the stream *is* ReLU output (``stem`` and each block's ``_out``), so
  the gates are those ReLUs. A channel at zero in all of them gives every reader a zero;
- pre-activation (nothing after the ``Add``): the stream is never rectified, but it is only ever read
  through BN + ReLU (the next blocks' ``relu1``, the next stage's first ``relu1``, ``final_relu``). A
  channel none of those readers lets through changes nothing downstream, whatever its value.

Inside a block, the channels between the two convolutions are gated by one ReLU (``relu1`` post, ``relu2``
pre) and go alone, as the CNN's do (:mod:`training.prune`). Removing a channel removes its output weights,
its batch-norm entries and the next layers' weights that read it, so on inputs where the removed channels
stay silent the pruned model computes the same function (up to float summation order); with nothing removed
it is the same model, bit for bit.
"""

from __future__ import annotations

import re

import keras
import numpy as np

from sparsity.layers import KWinners, RisingL1, ThresholdedReLU
from training.models import LayerSpec
from training.resnet import ResNetSpec, build_resnet

_NAME = re.compile(r"^mnist_resnet_(post|pre)_d(\d+)_w([0-9.e+-]+)$")


def spec_of(model: keras.Model) -> tuple[ResNetSpec, LayerSpec]:
    """The family knobs and activation design of a model :func:`training.resnet.build_resnet` made."""
    match = _NAME.match(model.name)
    if not match:
        raise ValueError(f"tied-channel pruning needs a residual CNN of training.resnet; {model.name!r} is not one")
    placement, depth, width = match.group(1), int(match.group(2)), float(match.group(3))
    names = {layer.name for layer in model.layers}
    stages = 0
    while f"s{stages}b0_add" in names:
        stages += 1
    activations = [layer for layer in model.layers if isinstance(layer, (KWinners, ThresholdedReLU))]
    if any(isinstance(layer, KWinners) for layer in activations):
        raise ValueError("tied-channel pruning does not support k-WTA: its k depends on the whole layer")
    regularizer = model.get_layer("stem").activity_regularizer
    l1 = float(getattr(regularizer, "l1", 0.0) or 0.0)
    hoyer = float(getattr(regularizer, "hoyer", 0.0) or 0.0)
    schedule = "rising" if isinstance(regularizer, RisingL1) else "constant"
    thresholds = tuple((layer.name, float(layer.threshold)) for layer in activations)
    constraint = model.get_layer("probabilities").kernel_constraint
    max_norm = float(constraint.max_value) if isinstance(constraint, keras.constraints.MaxNorm) else 0.0
    # each stage's channels at width 1, as near as a pruned model allows; pruning overrides every count anyway
    stage_channels = tuple(
        max(1, round(int(model.get_layer(f"s{s}b0_add").output.shape[-1]) / width)) for s in range(stages)
    )
    rspec = ResNetSpec(
        depth,
        width,
        placement,
        stages=stage_channels,
        augment="augment_rotate" in names,
        l1_schedule=schedule,
        bn_scale=bool(model.get_layer("stem_bn").scale),
    )
    spec = LayerSpec(activity_l1=l1, hoyer=hoyer, max_norm=max_norm, thresholds=thresholds)
    uniform = {t for _, t in thresholds}
    if len(thresholds) == len(rspec.relu_names()) and len(uniform) == 1:  # FATReLU everywhere, one threshold
        spec = LayerSpec(activity_l1=l1, hoyer=hoyer, max_norm=max_norm, design="fatrelu", threshold=uniform.pop())
    return rspec, spec


def gates(rspec: ResNetSpec) -> dict[str, list[str]]:
    """Every channel group (``s{stage}`` streams, ``{block}_mid``) and the ReLU layers that gate it."""
    stages = len(rspec.stages)
    groups: dict[str, list[str]] = {}
    for s in range(stages):
        if rspec.placement == "post":
            groups[f"s{s}"] = (["stem"] if s == 0 else []) + [f"s{s}b{b}_out" for b in range(rspec.depth)]
        else:
            readers = [f"s{s}b{b}_relu1" for b in range(0 if s == 0 else 1, rspec.depth)]
            groups[f"s{s}"] = readers + ([f"s{s + 1}b0_relu1"] if s + 1 < stages else ["final_relu"])
    for _, _, prefix in rspec.blocks():
        groups[f"{prefix}_mid"] = [f"{prefix}_relu1" if rspec.placement == "post" else f"{prefix}_relu2"]
    return groups


def wiring(rspec: ResNetSpec) -> dict[str, tuple[str | None, str | None]]:
    """Every layer with weights: the channel group it reads and the one it writes (``None``: not pruned).
    A batch norm reads and writes the same group."""
    last = f"s{len(rspec.stages) - 1}"
    layers = {"stem_conv": (None, "s0"), "stem_bn": ("s0", "s0"), "probabilities": (last, None)}
    for stage, block, prefix in rspec.blocks():
        source = f"s{stage - 1}" if stage > 0 and block == 0 else f"s{stage}"
        mid, out = f"{prefix}_mid", f"s{stage}"
        layers[f"{prefix}_conv1"] = (source, mid)
        layers[f"{prefix}_conv2"] = (mid, out)
        if stage > 0 and block == 0:
            layers[f"{prefix}_project"] = (source, out)
        if rspec.placement == "post":
            layers.update({f"{prefix}_bn1": (mid, mid), f"{prefix}_bn2": (out, out)})
            if stage > 0 and block == 0:
                layers[f"{prefix}_project_bn"] = (out, out)
        else:
            layers.update({f"{prefix}_bn1": (source, source), f"{prefix}_bn2": (mid, mid)})
    if rspec.placement == "pre":
        layers["final_bn"] = (last, last)
    return layers


def tied_keep_plan(shares: dict[str, np.ndarray], rspec: ResNetSpec, max_firing: float) -> dict[str, np.ndarray]:
    """Per channel group, the channels to keep: those that some gating ReLU has on more than ``max_firing``
    of the time (``shares``: per ReLU layer, per channel). Every group keeps at least its busiest channel."""
    plan = {}
    for group, relus in gates(rspec).items():
        busiest = np.max(np.stack([np.asarray(shares[name]) for name in relus]), axis=0)
        keep = np.flatnonzero(busiest > max_firing)
        plan[group] = keep if keep.size else np.array([int(np.argmax(busiest))])
    return plan


def _select(weights: list[np.ndarray], layer: keras.layers.Layer, read, write) -> list[np.ndarray]:
    if isinstance(layer, keras.layers.BatchNormalization):  # gamma, beta, moving mean and variance
        return [w[read] for w in weights]  # (no gamma when built with scale=False)
    if isinstance(layer, keras.layers.Conv2D):
        (kernel,) = weights
        kernel = kernel if read is None else kernel[:, :, read, :]
        return [kernel if write is None else kernel[..., write]]
    kernel, bias = weights  # the classifier
    return [kernel if read is None else kernel[read, :], bias]


def prune_resnet(model: keras.Model, keep: dict[str, np.ndarray], seed: int = 0) -> keras.Model:
    """The same residual CNN with only the ``keep`` channels of each group, weights copied over."""
    rspec, spec = spec_of(model)
    groups = gates(rspec)
    missing = sorted(set(groups) - set(keep))
    if missing:
        raise ValueError(f"the keep plan has no entry for the channel groups {', '.join(missing)}")
    wired = wiring(rspec)
    unwired = [layer.name for layer in model.layers if layer.weights and layer.name not in wired]
    if unwired:
        raise ValueError(f"layers with weights the pruning does not know how to wire: {', '.join(unwired)}")
    pruned = build_resnet(rspec, spec, seed, channels={group: len(idx) for group, idx in keep.items()})
    for name, (read, write) in wired.items():
        src = model.get_layer(name)
        weights = [np.asarray(w) for w in src.get_weights()]
        pruned.get_layer(name).set_weights(
            _select(weights, src, None if read is None else keep[read], None if write is None else keep[write])
        )
    return pruned


def channels(model: keras.Model) -> dict[str, int]:
    """Channels of every group of a residual CNN (for reports)."""
    rspec, _ = spec_of(model)
    wired = wiring(rspec)
    counts = {}
    for name, (_, write) in wired.items():
        if write is not None and write not in counts:
            counts[write] = int(model.get_layer(name).output.shape[-1])
    return counts


def reestimate_batch_norm(model: keras.Model, x: np.ndarray, batch_size: int = 256) -> dict[str, float]:
    """Set every batch norm's moving mean and variance to its input's statistics over ``x``, in graph order and
    in inference mode (no augmentation, no dropout), each layer seeing the layers before it already re-estimated.

    Pruning removes channels that fed the next convolutions, so the statistics a batch norm learnt in training
    no longer describe its input; re-estimating them is the cheap repair (no weight changes). Returns, per batch
    norm, the largest change of a channel's mean in units of its old standard deviation."""
    changes = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        reader = keras.Model(model.inputs[0], layer.input)
        sums = sq = None
        count = 0
        for start in range(0, len(x), batch_size):
            values = np.asarray(reader(x[start : start + batch_size], training=False), dtype=np.float64)
            flat = values.reshape(-1, values.shape[-1])
            sums = flat.sum(axis=0) if sums is None else sums + flat.sum(axis=0)
            sq = (flat**2).sum(axis=0) if sq is None else sq + (flat**2).sum(axis=0)
            count += len(flat)
        mean = sums / count
        variance = np.maximum(sq / count - mean**2, 0.0)
        old_mean, old_variance = (np.asarray(v) for v in (layer.moving_mean, layer.moving_variance))
        changes[layer.name] = float(np.max(np.abs(mean - old_mean) / np.sqrt(old_variance + layer.epsilon)))
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(variance.astype(np.float32))
    return changes
