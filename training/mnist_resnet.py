"""``python -m training resnet``: train the residual CNN the depth study chose and register it as
``mnist_resnet``, served next to ``mnist_cnn``; then prune it with tied channels, fine-tune it, and
register the pruned model after its parent, so ``mnist_resnet:latest`` is the pruned one.

The data, split, calibration and card are the default CNN's (:func:`training.mnist.save_mnist`), so the two
models' accuracies compare on the same held-back digits.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

from training import data
from training.mnist import EpochLog, evaluate, save_mnist, training_facts
from training.resnet_fit import DepthPoint, fit_resnet

log = logging.getLogger(__name__)

RESNET_MODEL_NAME = "mnist_resnet"


@dataclass
class ResnetOptions:
    depth: int = 1
    width: float = 1.0
    placement: str = "post"
    method: str = "l1"
    l1: float = 1e-5
    threshold: float = DepthPoint().threshold
    hoyer: float = 0.0
    ramp: float = 0.0
    control: float = 0.0
    epochs: int = 15
    batch_size: int = 32
    augment: bool = True
    dataset: str = "auto"
    seed: int = 0
    limit: int = 0
    verbose: int | None = None

    @property
    def point(self) -> DepthPoint:
        return DepthPoint(self.depth, self.width, self.placement, self.method, self.l1, self.threshold)

    @property
    def layer_spec(self):
        """The point's activations with the every-layer study's additions (Hoyer, ramp, controller)."""
        return dataclasses.replace(self.point.layer_spec(), hoyer=self.hoyer, ramp=self.ramp, control=self.control)


def train_resnet(opts: ResnetOptions, report_dir=None, provenance: dict | None = None) -> dict:
    """Train, evaluate and register ``mnist_resnet``; returns the report saved with it."""
    start = time.perf_counter()
    split = data.load_mnist(opts.dataset, opts.seed)
    log.info(
        "residual CNN %s: %d epochs on %s, %d train / %d test",
        opts.point.key,
        opts.epochs,
        split.name,
        len(split.x_train),
        len(split.x_test),
    )
    callbacks = [] if opts.verbose == 0 else [EpochLog(opts.epochs)]
    if opts.hoyer or opts.ramp or opts.control:
        from training.controller import controlled
        from training.resnet_fit import fit_resnet_spec

        callbacks += controlled(opts.control, split.x_train)
        rspec = opts.point.resnet_spec(opts.augment)
        model = fit_resnet_spec(
            split, rspec, opts.layer_spec, opts.seed, opts.epochs, opts.batch_size, opts.limit, callbacks
        )
    else:
        model = fit_resnet(
            split, opts.point, opts.seed, opts.epochs, opts.batch_size, opts.limit, opts.augment, callbacks=callbacks
        )
    seconds = time.perf_counter() - start
    evaluation = evaluate(model, split.x_test, split.y_test)
    facts = {
        **training_facts(split, opts, evaluation["test_accuracy"]),
        "train_seconds": round(seconds, 2),
        "provenance": provenance or {},
    }
    labels = {"task": "mnist", "arch": "resnet", "dataset": split.name, "design": opts.point.layer_spec().design}
    tag, card = save_mnist(model, split, facts, labels, report_dir, name=RESNET_MODEL_NAME)
    log.info(
        "saved %s: test accuracy %.4f, overall sparsity %.3f (least sparse layer %.3f), %.0f s",
        tag,
        evaluation["test_accuracy"],
        evaluation["activation_sparsity"]["all"]["mean"],
        min(v["mean"] for k, v in evaluation["activation_sparsity"].items() if k != "all"),
        seconds,
    )
    return {"tag": tag, **card.metadata()}
