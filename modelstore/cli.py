"""``python -m modelstore register MODEL --name NAME --calibration CAL.npy [...]``: options and runner
(``python -m training register`` is the same command under its first name); ``python -m modelstore compare
NAME:V1 NAME:V2 --inputs X.npy``: two stored versions on a data set, compared as a shadow compares them.

Every refusal is one line on stderr, ``error: <what> <why>``, and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from modelstore.arguments import finite_float, list_of, non_negative_int
from sparsity.contract import PREPROCESSING

log = logging.getLogger("modelstore")


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
        choices=PREPROCESSING,
        help="picture models: how an uploaded PNG/JPEG becomes one input (default resize: to the input's height "
        "and width, pixels scaled to the input range; mnist-digit: white on black, 20x20 box, centred by mass)",
    )
    parser.add_argument(
        "--feature-names", type=list_of(str), help=".skops: comma-separated, one per feature (default x0,x1,...)"
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the calibration split (default 0)")
    return parser


def run(args: argparse.Namespace) -> int:
    from modelstore.kinds import kind_for_file
    from modelstore.register import Calibration, RegistrationError, load_array
    from modelstore.summary import registration_summary

    try:
        add_plugin_kinds()
        kind = kind_for_file(args.model)  # before the calibration set is read
        x = load_array(args.calibration, "--calibration")
        labels = load_array(args.labels, "--labels") if args.labels else None
        calibration = Calibration(x, labels, source=f"--calibration {args.calibration.name}")
        tag, card = kind.register_file(
            args.model,
            args.name,
            calibration,
            class_names=args.class_names,
            input_range=tuple(args.input_range) if args.input_range else None,
            seed=args.seed,
            preprocessing=args.preprocessing,
            feature_names=args.feature_names,
        )
    except RegistrationError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    print("\n".join(registration_summary(tag, card)), flush=True)
    return 0


def add_compare_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = (
        "Run two stored versions on the same inputs and compare them as a shadow does on live traffic: label "
        "agreement, the mean total variation distance between their probabilities, each layer's mean exact-zero "
        "share in both, both versions' typicality flags and the candidate's dead units. Prints the figures and "
        "writes them as JSON (the shape of GET /models/NAME/shadow's comparison)."
    )
    parser.add_argument("primary", help="the version serving now, NAME:VERSION (or NAME:latest)")
    parser.add_argument("candidate", help="the version to check, NAME:VERSION")
    parser.add_argument("--inputs", type=Path, required=True, help="a .npy array (N, *input shape), as the model takes")
    parser.add_argument("--out", type=Path, help="where to write the JSON (default compare-NAME-V1-V2.json)")
    return parser


def run_compare(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from modelstore.audit import audit
    from modelstore.compare import IncomparableVersions, compare_on, summary_lines
    from modelstore.kinds import from_store
    from modelstore.register import RegistrationError, load_array
    from sparsity.errors import InvalidInputError

    try:
        add_plugin_kinds()
        runtimes = []
        for tag in (args.primary, args.candidate):
            candidate = audit(tag if ":" in tag else f"{tag}:latest")
            if not candidate.accepted:
                raise RegistrationError(candidate.problem)
            runtimes.append(from_store(candidate.tag))
        x = load_array(args.inputs, "--inputs")
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise RegistrationError(f"--inputs {args.inputs}: must hold real numbers, not {x.dtype}")
        figures = compare_on(*runtimes, x.astype(np.float32, copy=False))
    except (RegistrationError, IncomparableVersions) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except InvalidInputError as exc:
        print(f"error: --inputs {args.inputs}: {exc}", file=sys.stderr, flush=True)
        return 2
    primary, candidate = runtimes
    out = args.out or Path(f"compare-{primary.name}-{primary.version}-{candidate.version}.json")
    record = {"primary": primary.tag, "candidate": candidate.tag, "inputs_file": str(args.inputs), **figures}
    out.write_text(json.dumps(record, indent=2) + "\n")
    print("\n".join([*summary_lines(primary.tag, candidate.tag, figures), f"written to {out}"]), flush=True)
    return 0


def add_dataset_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("name", help="the model whose logged items to export (its classes come from NAME:latest)")
    parser.add_argument(
        "--reviewed",
        action="store_true",
        required=True,
        help="the items a reviewer labelled on the page (PUT /models/NAME/log/ID/review) and whose input the log kept",
    )
    parser.add_argument("--version", help="only the items this version answered (default: every version)")
    parser.add_argument(
        "--log",
        help="the prediction log: a postgresql:// URL or a SQLite file (default: $PREDICTION_LOG_URL, else "
        "prediction-log.sqlite3 in the model store)",
    )
    parser.add_argument("--out", type=Path, required=True, help="the .npz to write: x (inputs), y (class indices), ids")
    return parser


def run_dataset(args: argparse.Namespace) -> int:
    import numpy as np

    from modelstore.audit import audit
    from predlog.dataset import reviewed_dataset
    from predlog.store import StoreError, default_location, describe, open_store

    where = args.log or default_location()
    candidate = audit(args.name if ":" in args.name else f"{args.name}:latest")
    if not candidate.accepted:
        print(f"error: {candidate.problem}", file=sys.stderr, flush=True)
        return 2
    try:
        store = open_store(where)
        found = reviewed_dataset(store, candidate.name, list(candidate.card.class_names), args.version)
    except (StoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    if len(found.y) == 0:
        print(f"error: {describe(where)} holds no reviewed item of {candidate.name} with its input "
              f"({found.invalid} labelled invalid)", file=sys.stderr, flush=True)  # fmt: skip
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, x=found.x, y=found.y, ids=found.ids)
    classes, numbers = np.unique(found.y, return_counts=True)
    counts = ", ".join(f"{candidate.card.class_names[c]} {n}" for c, n in zip(classes, numbers, strict=True))
    print(f"wrote {len(found.y)} reviewed items of {candidate.name} to {args.out} ({counts}; "
          f"{found.invalid} labelled invalid left out)", flush=True)  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    from sparsity import logs

    parser = argparse.ArgumentParser(
        prog="python -m modelstore",
        description="The model store (location: $BENTOML_HOME, default ~/bentoml).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register = commands.add_parser("register", help="register your own model with a calibration set")
    add_arguments(register).set_defaults(run=run)
    compare = commands.add_parser("compare", help="compare two stored versions on a data set")
    add_compare_arguments(compare).set_defaults(run=run_compare)
    dataset = commands.add_parser("dataset", help="write the prediction log's reviewed items as a training set")
    add_dataset_arguments(dataset).set_defaults(run=run_dataset)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logs.configure(logging.INFO)
    return args.run(args)


def add_plugin_kinds() -> None:
    """The kinds named in ``MODEL_KINDS`` (``module.path,...``, read as the service reads it), added to the table."""
    import os

    from modelstore.kinds import PLUGIN_SETTING, add_kinds_from, plugin_modules
    from modelstore.register import RegistrationError

    raw = os.environ.get(PLUGIN_SETTING, "")
    try:
        add_kinds_from(plugin_modules(raw) if raw.strip() else ())
    except ValueError as exc:
        raise RegistrationError(f"{PLUGIN_SETTING}={raw}: {exc}") from None
