"""``python -m training resnet``: the deeper model, trained and registered as ``mnist_resnet`` (options and runner)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from modelstore.arguments import (
    DEFAULT_REPORT_DIR,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    share,
)
from training.choices import DATASETS
from training.presets import RESNET_PRESET, RESNET_PROVENANCE, RESNET_PRUNE

log = logging.getLogger("training")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = RESNET_PRESET
    parser.description = (
        "Train the residual CNN that 'python -m lab depth' chose "
        f"({p['placement']}-activation, {p['depth']} block(s) per stage, width {p['width']:g}, {p['method']} "
        f"{p['l1']:g}), register it as mnist_resnet with the held-back digits as its calibration set, then prune "
        "it with tied channels, fine-tune it and register the pruned model after it (mnist_resnet:latest, the one "
        "served)."
    )
    parser.add_argument(
        "--depth", type=positive_int, default=p["depth"], help=f"blocks per stage (default {p['depth']})"
    )
    parser.add_argument(
        "--width", type=positive_float, default=p["width"], help=f"width multiplier (default {p['width']:g})"
    )
    parser.add_argument("--placement", choices=("post", "pre"), default=p["placement"], help="where the ReLU sits")
    parser.add_argument(
        "--method", choices=("relu", "l1", "rising-l1", "fatrelu"), default=p["method"], help="sparsity method"
    )
    parser.add_argument(
        "--l1", type=non_negative_float, default=p["l1"], help=f"L1 activity strength (default {p['l1']:g})"
    )
    parser.add_argument(
        "--hoyer", type=non_negative_float, default=0.0, help="Hoyer-square strength on every ReLU (default 0: none)"
    )
    parser.add_argument(
        "--ramp", type=share, default=0.0, help="share of training over which the penalties rise (default 0: none)"
    )
    parser.add_argument(
        "--control",
        type=share,
        default=0.0,
        help="zero share a per-layer controller raises each layer's penalty toward (default 0: none)",
    )
    parser.add_argument("--epochs", type=positive_int, default=p["epochs"], help=f"epochs (default {p['epochs']})")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="batch size (default 32)")
    parser.add_argument("--dataset", choices=DATASETS, default="auto", help="as for 'mnist' (default auto)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed, and the split's (default 0)")
    parser.add_argument("--limit", type=non_negative_int, default=0, help="train on the first N images; 0 = all")
    parser.add_argument(
        "--prune-max-firing",
        type=share,
        default=RESNET_PRUNE["max_firing"],
        help="remove the channels that no gating ReLU has on more than this share of the time "
        f"(default {RESNET_PRUNE['max_firing']:g})",
    )
    parser.add_argument(
        "--fine-tune-epochs",
        type=non_negative_int,
        default=RESNET_PRUNE["fine_tune_epochs"],
        help=f"epochs of fine-tuning after pruning (default {RESNET_PRUNE['fine_tune_epochs']})",
    )
    parser.add_argument("--no-prune", action="store_true", help="register the trained model only")
    parser.add_argument("--if-missing", action="store_true", help="do nothing if the store has a servable mnist_resnet")
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    parser.add_argument("--report-dir", type=Path, default=DEFAULT_REPORT_DIR, help="JSON reports (default reports/)")
    return parser


def run(args: argparse.Namespace) -> int:
    from modelstore.audit import has_model
    from training.mnist_resnet import RESNET_MODEL_NAME, ResnetOptions, train_resnet

    if args.if_missing and has_model(RESNET_MODEL_NAME):
        log.info("%s is already in the store; not training it", RESNET_MODEL_NAME)
        return 0
    given = ("depth", "width", "placement", "method", "l1", "epochs", "batch_size", "dataset", "seed", "limit")
    given += ("hoyer", "ramp", "control")
    opts = ResnetOptions(**{k: getattr(args, k) for k in given}, verbose=0 if args.quiet else 2)
    overrides = {k: getattr(args, k) for k in RESNET_PRESET if getattr(args, k) != RESNET_PRESET[k]}
    overrides.update({k: getattr(args, k) for k in ("hoyer", "ramp", "control") if getattr(args, k)})
    trained = train_resnet(opts, report_dir=args.report_dir, provenance={**RESNET_PROVENANCE, "overrides": overrides})
    if args.no_prune:
        return 0
    from training.prune import prune_after_training

    prune_after_training(
        trained["tag"], RESNET_MODEL_NAME, args.prune_max_firing, args.fine_tune_epochs, args.report_dir
    )
    return 0
