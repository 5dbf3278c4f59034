"""``python -m training register MODEL.keras|MODEL.onnx --name NAME --calibration CAL.npy [...]``: options and runner.

Every refusal is one line on stderr, ``error: <what> <why>``, and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from training.arguments import finite_float, list_of, non_negative_int

log = logging.getLogger("training")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = (
        "Register a Keras (.keras) or ONNX (.onnx) classifier whose hidden layers are ReLU-family, with a "
        "calibration set of typical inputs: every ReLU-family layer call is found (nested blocks and shared layers "
        "included), the calibration set gives the sparsity baseline, the dead units and the typicality threshold "
        "(1% false alarms, measured on a part it was not fitted on), and the model is saved to the BentoML store "
        "with its card. `make serve` then serves it at /models/NAME/predict."
    )
    parser.add_argument(
        "model",
        type=Path,
        help="the model file: .keras (saved with model.save); .onnx (exported from PyTorch, scikit-learn, ...: "
        "kind onnx-relu, counted inside ONNX Runtime); or .skops (a fitted scikit-learn LogisticRegression, "
        "alone or after a StandardScaler in a Pipeline: kind linear)",
    )
    parser.add_argument("--name", required=True, help="the model's name in the store and in the URL")
    parser.add_argument(
        "--calibration",
        type=Path,
        required=True,
        help="a .npy array (N, *input shape) of typical inputs, already as the model takes them; N >= 30",
    )
    parser.add_argument("--labels", type=Path, help="a .npy array (N,) of class indexes: the accuracy goes on the card")
    parser.add_argument("--class-names", type=list_of(str), help="comma-separated, one per output (default 0,1,...)")
    parser.add_argument(
        "--input-range",
        nargs=2,
        type=finite_float,
        metavar=("LOW", "HIGH"),
        help="the values inputs may take; the service refuses others with 400 (default: the calibration data's "
        "minimum and maximum)",
    )
    parser.add_argument(
        "--preprocessing",
        choices=("resize", "mnist-digit"),
        help="picture models: how an uploaded PNG/JPEG becomes one input (default resize: to the input's height "
        "and width, pixels scaled to the input range; mnist-digit: white on black, 20x20 box, centred by mass)",
    )
    parser.add_argument(
        "--feature-names", type=list_of(str), help=".skops: comma-separated, one per feature (default x0,x1,...)"
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the calibration split (default 0)")
    return parser


def run(args: argparse.Namespace) -> int:
    from training.register import OPENERS, Calibration, RegistrationError, load_array, summary

    try:
        if args.model.suffix not in (*OPENERS, ".skops"):
            raise RegistrationError(f"{args.model}: register a .keras, an .onnx or a .skops file")
        if not args.model.is_file():
            raise RegistrationError(f"{args.model}: no such file")
        x = load_array(args.calibration, "--calibration")
        labels = load_array(args.labels, "--labels") if args.labels else None
        calibration = Calibration(x, labels, source=f"--calibration {args.calibration.name}")
        register = _register_linear if args.model.suffix == ".skops" else _register_relu
        tag, card = register(args, calibration)
    except RegistrationError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    print("\n".join(summary(tag, card)), flush=True)
    return 0


def _options(args: argparse.Namespace) -> dict:
    return {
        "class_names": args.class_names,
        "input_range": tuple(args.input_range) if args.input_range else None,
        "seed": args.seed,
    }


def _register_relu(args: argparse.Namespace, calibration):
    from training.register import register_relu

    return register_relu(args.model, args.name, calibration, preprocessing=args.preprocessing, **_options(args))


def _register_linear(args: argparse.Namespace, calibration):
    import shutil

    from sparsity.card import LinearCard
    from training.register import RegistrationError, check_name, linear_parts, load_skops_safely, register_linear

    check_name(args.name)
    if args.preprocessing is not None:
        raise RegistrationError("--preprocessing: a linear model takes rows of features, not pictures")
    scaler, classifier = linear_parts(load_skops_safely(args.model))
    features = classifier.coef_.shape[1]
    names = args.feature_names or [f"x{i}" for i in range(features)]
    if len(names) != features:
        raise RegistrationError(f"--feature-names: the model has {features} features, {len(names)} names were given")

    def write(directory: Path) -> None:
        shutil.copyfile(args.model, directory / LinearCard.MODEL_FILE)

    return register_linear(
        scaler, classifier, args.name, calibration, write=write, feature_names=names, **_options(args)
    )
