"""What both example scripts share: a seeded stratified split and writing the files to register."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def stratified_parts(labels: np.ndarray, shares: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Indices split into parts of the given shares, each class spread evenly, the same for the same seed."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in shares]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        bounds = np.round(np.cumsum((0.0, *shares)) * len(members)).astype(int)
        for i in range(len(shares)):
            parts[i].extend(members[bounds[i] : bounds[i + 1]].tolist())
    return [np.asarray(rng.permutation(part), dtype=np.int64) for part in parts]


def write_outputs(out: Path, path: Path, save, arrays: dict[str, np.ndarray], facts: dict) -> Path:
    """The model (``save(path)``) plus one ``NAME_<part>.npy`` per array, and ``NAME.json`` with the run's
    figures, NAME being ``path``'s stem."""
    out.mkdir(parents=True, exist_ok=True)
    save(path)
    for part, array in arrays.items():
        np.save(out / f"{path.stem}_{part}.npy", array)
    (out / f"{path.stem}.json").write_text(json.dumps(facts, indent=2) + "\n")
    return path


def parser(doc: str, epochs: int) -> argparse.ArgumentParser:
    """The options both scripts take."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("examples/out"), help="output folder (default examples/out)")
    parser.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default {epochs})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return parser


def finish(name: str, model, x: np.ndarray, y: np.ndarray, calibration, unseen, args, what: str) -> int:
    """A Keras model's files: see :func:`finish_with`."""
    return finish_with(
        args.out / f"{name}.keras",
        lambda v: model.predict(v, verbose=0),
        model.save,
        x,
        y,
        calibration,
        unseen,
        args,
        what,
    )


def finish_with(path: Path, predict, save, x: np.ndarray, y: np.ndarray, calibration, unseen, args, what: str) -> int:
    """Measure the accuracy on the unseen part (``predict(x)`` gives class scores), then write the model
    (``save(path)``), the calibration set with its labels and the unseen part (typical inputs neither
    training nor registration saw)."""
    accuracy = float(np.mean(np.argmax(predict(x[unseen]), axis=1) == y[unseen]))
    print(f"{path.stem}: accuracy {accuracy:.4f} on {len(unseen)} unseen {what}")
    arrays = {"calibration": x[calibration], "labels": y[calibration], "unseen": x[unseen], "unseen_labels": y[unseen]}
    write_outputs(args.out, path, save, arrays, {"unseen_accuracy": accuracy, "epochs": args.epochs})
    print(f"saved {path}; register it with: python -m modelstore register {path} --name {path.stem} ...")
    return 0
