"""``python -m lab prune``: remove the units that (almost) never fire, and measure the speed.

A ReLU-family unit that never fires on an input contributes exact zeros to the next layer, so a
model without it gives the same output on that input (up to float summation order). Units are
conv channels and dense neurons; removing one also removes the next layer's weights that read it.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from modelstore.kinds import load_card
from modelstore.kinds.keras_relu import KerasReluCard
from sparsity import SparsityProbe, find_relu_layers
from sparsity.layers import KWinners
from training import models
from training.controller import controlled
from training.datasets import MNIST_MODEL_NAME, MNIST_SHAPE
from training.timing import median_ms_in_turns

log = logging.getLogger(__name__)

CNN_CHAIN = models.CNN_LAYERS
"""The CNN's ReLU-family layers in order; each reads the previous one's units."""


def weight_layer(model: keras.Model, name: str) -> keras.layers.Layer:
    """The Conv2D/Dense holding the weights of the ReLU-family layer ``name``."""
    layer = model.get_layer(name)
    return layer if hasattr(layer, "kernel") else model.get_layer(f"{name}_pre")


def firing_shares(model: keras.Model, x: np.ndarray) -> dict[str, np.ndarray]:
    """Per layer, the share of samples of ``x`` on which each unit produced a value > 0."""
    fired = SparsityProbe(model, value_range=(0.0, 1.0), field="images").run_batched(x).fired
    return {name: f.mean(axis=0) for name, f in fired.items()}


def activation_shares(model: keras.Model, x: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Per layer, the share of each unit's activations (every sample and, for a conv channel, every
    position) that were > 0: how much of the time a unit is on, not just whether it ever was."""
    layers = [layer.name for layer in find_relu_layers(model)]
    probe = keras.Model(model.inputs, [model.get_layer(name).output for name in layers])
    fn = tf.function(lambda batch: probe(batch, training=False))
    sums = {name: 0.0 for name in layers}
    count = {name: 0 for name in layers}
    for start in range(0, len(x), batch_size):
        outs = fn(tf.constant(x[start : start + batch_size]))
        for name, out in zip(layers, outs, strict=True):
            on = tf.reshape(tf.cast(out > 0, tf.float32), (-1, out.shape[-1]))
            sums[name] = sums[name] + tf.reduce_sum(on, axis=0).numpy()
            count[name] += int(on.shape[0])
    return {name: np.asarray(sums[name]) / count[name] for name in layers}


def keep_plan(shares: dict[str, np.ndarray], max_firing: float) -> dict[str, np.ndarray]:
    """Indices of the units to keep: those that fired on more than ``max_firing`` of the samples.

    At ``max_firing = 0`` exactly the units that never fired go. A layer always keeps at least its
    most active unit, so the model stays a model.
    """
    plan = {}
    for name, share in shares.items():
        keep = np.flatnonzero(share > max_firing)
        plan[name] = keep if keep.size else np.array([int(np.argmax(share))])
    return plan


def prune_cnn(model: keras.Model, keep: dict[str, np.ndarray], spec: models.LayerSpec, seed: int = 0) -> keras.Model:
    """The same CNN with only the ``keep`` units of conv1, conv2 and dense, weights copied over."""
    missing = [name for name in CNN_CHAIN if name not in keep]
    if missing or model.name != "mnist_cnn":
        raise ValueError(f"pruning supports the 'cnn' architecture (layers {', '.join(CNN_CHAIN)}) only")
    widths = tuple(len(keep[name]) for name in CNN_CHAIN)
    pruned = models.build_cnn(spec, seed, widths=widths)
    previous = None
    for name in CNN_CHAIN:
        src, dst = weight_layer(model, name), weight_layer(pruned, name)
        kernel, bias = (np.asarray(w) for w in src.get_weights())
        out_keep = keep[name]
        if previous is not None and kernel.ndim == 4:  # conv reading the previous conv's channels
            kernel = kernel[:, :, previous, :]
        elif previous is not None:  # dense reading a flattened (H, W, C) map: keep C's rows
            channels = int(model.get_layer(CNN_CHAIN[CNN_CHAIN.index(name) - 1]).output.shape[-1])
            spatial = kernel.shape[0] // channels
            kernel = kernel.reshape(spatial, channels, -1)[:, previous, :].reshape(spatial * len(previous), -1)
        dst.set_weights([kernel[..., out_keep], bias[out_keep]])
        activation = pruned.get_layer(name)
        if isinstance(activation, KWinners):  # keep k: the same count out of fewer units
            old = model.get_layer(name)
            size_old = int(np.prod(old.output.shape[1:]))
            size_new = int(np.prod(activation.output.shape[1:]))
            activation.density = old.k_for(size_old) / size_new
        previous = out_keep
    head_src, head_dst = model.get_layer("probabilities"), pruned.get_layer("probabilities")
    kernel, bias = (np.asarray(w) for w in head_src.get_weights())
    head_dst.set_weights([kernel[previous, :], bias])
    return pruned


def count_params(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.weights))


@dataclass
class Timing:
    one_ms: float
    batch_ms: float


def forward_times(named: dict[str, keras.Model], batch: int = 256, repeats: int = 30) -> dict[str, Timing]:
    """Median forward-pass time (``model(x, training=False)`` in a ``tf.function`` with a fixed input
    signature, as the service runs it) at 1 and ``batch`` images. The models take turns within
    every repeat, so a noisy neighbour slows them all alike."""
    spec = tf.TensorSpec((None, *MNIST_SHAPE), tf.float32)
    fns = {k: tf.function(lambda x, m=m: m(x, training=False), input_signature=[spec]) for k, m in named.items()}
    rng = np.random.default_rng(0)
    inputs = {n: tf.constant(rng.random((n, *MNIST_SHAPE), dtype=np.float32)) for n in (1, batch)}
    calls = {k: (lambda x, fn=fn: fn(x).numpy()) for k, fn in fns.items()}
    medians = median_ms_in_turns(calls, inputs, inner={1: 20, batch: 2}, repeats=repeats)
    return {k: Timing(v[1], v[batch]) for k, v in medians.items()}


def units(model: keras.Model) -> dict[str, int]:
    """Units per prunable layer (CNN) or channels per tied group (residual CNN)."""
    if model.name.startswith("mnist_resnet"):
        from training.resnet_prune import channels

        return channels(model)
    return {name: int(weight_layer(model, name).get_weights()[1].shape[0]) for name in CNN_CHAIN}


class _Family:
    """How one architecture is pruned: the project's CNN (a chain) or the residual CNN (tied channels)."""

    def __init__(self, parent: keras.Model, card_options: dict) -> None:
        from training.mnist import MnistOptions

        self.resnet = parent.name.startswith("mnist_resnet")
        if self.resnet:
            from training.mnist_resnet import RESNET_MODEL_NAME, ResnetOptions
            from training.resnet_prune import spec_of

            self.opts = self._options(ResnetOptions, card_options)
            self.rspec, _ = spec_of(parent)
            self.name, self.arch, self.design = RESNET_MODEL_NAME, "resnet", self.opts.point.layer_spec().design
        else:
            self.opts = self._options(MnistOptions, card_options)
            self.name, self.arch, self.design = MNIST_MODEL_NAME, "cnn", self.opts.design
        self.parent = parent

    @staticmethod
    def _options(options_class, card_options: dict):
        """The training options stored on the parent's card, silent (the fine-tuning logs nothing per epoch)."""
        known = set(options_class.__dataclass_fields__)
        opts = options_class(**{k: v for k, v in card_options.items() if k in known})
        opts.verbose = 0
        return opts

    def prune(self, shares: dict[str, np.ndarray], level: float) -> keras.Model:
        if self.resnet:
            from training.resnet_prune import prune_resnet, tied_keep_plan

            return prune_resnet(self.parent, tied_keep_plan(shares, self.rspec, level), self.opts.seed)
        # penalties at full strength while fine-tuning: a ramped one is built at 0 and no ramp runs here
        spec = dataclasses.replace(self.opts.layer_spec, ramp=0.0)
        return prune_cnn(self.parent, keep_plan(shares, level), spec, self.opts.seed)


def _row(
    label: str, kind: str, model: keras.Model, accuracy: float | None, timing: Timing | None, dense: Timing | None
) -> dict:
    row = {
        "label": label,
        "kind": kind,
        "units": units(model),
        "params": count_params(model),
        "test_accuracy": accuracy,
    }
    if timing and dense:
        row["forward_ms_1"] = round(timing.one_ms, 4)
        row["forward_ms_256"] = round(timing.batch_ms, 3)
        row["speedup_vs_dense_1"] = round(dense.one_ms / timing.one_ms, 3)
        row["speedup_vs_dense_256"] = round(dense.batch_ms / timing.batch_ms, 3)
    return row


def _sparsity(evaluation: dict) -> dict[str, float]:
    """Mean activation sparsity per layer and overall ('all') on the held-back digits."""
    return {layer: round(stats["mean"], 4) for layer, stats in evaluation["activation_sparsity"].items()}


def run_prune(
    parent_tag: str,
    max_firings: list[float],
    fine_tune_epochs: int = 0,
    by: str = "samples",
    save: bool = True,
    dense_accuracy: float | None = None,
    time_models: bool = True,
    report_dir=None,
) -> dict:
    """Prune ``parent_tag`` at every level of ``max_firings``; evaluate, time (unless ``time_models``
    is false: training's own pruning step skips it) and (optionally) save each."""
    import bentoml

    from training import data
    from training.mnist import evaluate, save_mnist, training_facts

    tf.get_logger().setLevel("ERROR")  # retracing notes from evaluating several models are expected here
    stored = bentoml.models.get(parent_tag)
    parent = keras.models.load_model(stored.path_of("model.keras"), compile=False, safe_mode=True)
    card = load_card(str(stored.tag), stored.info.metadata)
    if not isinstance(card, KerasReluCard):
        raise ValueError(f"{stored.tag} is a {card.kind} model; pruning needs the project's CNN or residual CNN")
    family = _Family(parent, card.options)
    opts = family.opts
    split = data.load_mnist(opts.dataset, opts.seed)
    x_train = split.x_train[: opts.limit] if opts.limit else split.x_train
    shares = firing_shares(parent, x_train) if by == "samples" else activation_shares(parent, x_train)
    parent_eval = evaluate(parent, split.x_test, split.y_test)
    parent_labels = np.argmax(parent.predict(split.x_test, batch_size=512, verbose=0), axis=1)
    parent_train_probs = parent.predict(x_train, batch_size=512, verbose=0)
    log.info(
        "parent %s: accuracy %.4f; firing measured on %d training images",
        stored.tag,
        parent_eval["test_accuracy"],
        len(x_train),
    )
    pruned_models, levels = {}, []
    for level in max_firings:
        model = family.prune(shares, level)
        after = units(model)
        removed = {name: count - after[name] for name, count in units(parent).items()}
        if family.resnet and level > 0:  # the batch norms' inputs lost channels: their statistics are re-estimated
            from training.resnet_prune import reestimate_batch_norm

            shift = max(reestimate_batch_norm(model, x_train).values())
            log.info("level %g: batch-norm statistics re-estimated (largest mean shift %.2f std)", level, shift)
        max_diff = float(np.max(np.abs(model.predict(x_train, batch_size=512, verbose=0) - parent_train_probs)))
        epochs = fine_tune_epochs if level > 0 else 0  # level 0 is exact as it is: nothing to recover
        if epochs:
            keras.utils.set_random_seed(opts.seed)  # the same fine-tuning on every run
            model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
            model.fit(
                x_train,
                split.y_train[: len(x_train)],
                epochs=epochs,
                batch_size=opts.batch_size,
                shuffle=True,
                verbose=0,
                # a model trained with a zero-share controller is fine-tuned with one: removing the units that
                # were (almost) always off leaves layers with fewer zeros, and it pushes them back to the target
                callbacks=controlled(getattr(opts, "control", 0.0), x_train),
            )
        evaluation = evaluate(model, split.x_test, split.y_test)
        labels = np.argmax(model.predict(split.x_test, batch_size=512, verbose=0), axis=1)
        label = f"pruned {'activations' if by == 'activations' else 'max-firing'} {level:g}" + (
            f" +{epochs} ep" if epochs else " (exact)" if level == 0 else ""
        )
        pruned_models[label] = model
        levels.append(
            {
                "label": label,
                "max_firing": level,
                "by": by,
                "fine_tune_epochs": epochs,
                "units_removed": removed,
                "max_abs_probability_change_on_train_before_fine_tune": max_diff,
                "accuracy_change": evaluation["test_accuracy"] - parent_eval["test_accuracy"],
                "changed_predictions": float(np.mean(labels != parent_labels)),
                "evaluation": evaluation,
            }
        )
        log.info(
            "%s: removed %s; accuracy %.4f (%+.4f), %.2f%% of test predictions changed",
            label,
            removed,
            evaluation["test_accuracy"],
            levels[-1]["accuracy_change"],
            100 * levels[-1]["changed_predictions"],
        )
    dense = models.build_cnn(models.LayerSpec(), opts.seed)  # the old default's graph: same work per image
    timings = forward_times({"dense default": dense, "parent": parent, **pruned_models}) if time_models else {}
    base = timings.get("dense default")
    report = {
        "parent_tag": str(stored.tag),
        "dense_reference": _row("dense default", "dense", dense, dense_accuracy, base, base),
        "parent": _row(
            f"parent {stored.tag.version[:6]}",
            "parent",
            parent,
            parent_eval["test_accuracy"],
            timings.get("parent"),
            base,
        ),
        "levels": [],
    }
    report["parent"]["sparsity"] = _sparsity(parent_eval)
    for info, (label, model) in zip(levels, pruned_models.items(), strict=True):
        accuracy = info["evaluation"]["test_accuracy"]
        row = {**_row(label, "pruned", model, accuracy, timings.get(label), base), **info}
        row["sparsity"] = _sparsity(row.pop("evaluation"))
        if save:
            facts = {
                **training_facts(split, opts, accuracy),
                "pruned": {k: v for k, v in row.items() if k not in ("label", "kind")},
                "parent": str(stored.tag),
                "provenance": {"pruned_from": str(stored.tag), **card.provenance},
            }
            tags = {
                "task": "mnist",
                "arch": family.arch,
                "dataset": split.name,
                "design": family.design,
                "pruned": "true",
            }
            row["tag"], _ = save_mnist(model, split, facts, tags, report_dir, name=family.name)
        report["levels"].append(row)
    return report


def prune_after_training(
    trained_tag: str, name: str, max_firing: float, fine_tune_epochs: int, report_dir=None
) -> dict:
    """Training's own pruning step (``python -m training mnist`` and ``resnet``): one level by activation share,
    fine-tuned, saved after its parent (so it is ``name:latest``), not timed. Returns the level's row."""
    report = run_prune(
        trained_tag,
        [max_firing],
        fine_tune_epochs=fine_tune_epochs,
        by="activations",
        time_models=False,
        report_dir=report_dir,
    )
    (level,) = report["levels"]
    log.info(
        "pruned %s -> %s: units %s, accuracy %.4f, overall sparsity %.3f; this is %s:latest "
        "(serve the unpruned parent with SERVED_MODELS=%s)",
        trained_tag,
        level["tag"],
        level["units"],
        level["test_accuracy"],
        level["sparsity"]["all"],
        name,
        trained_tag,
    )
    return level
