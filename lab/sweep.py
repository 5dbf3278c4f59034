"""``python -m lab sweep``: accuracy against activation sparsity over regularisation,
initialisation and activation design, several seeds a point.

Every run trains the MNIST CNN on the same data and split as ``python -m training mnist`` and
measures, on the held-back split, accuracy, per-layer and overall sparsity and dead units. Rows are
written to ``results.json`` and ``results.csv`` after every run, so an interrupted sweep keeps what
it finished and ``--resume`` skips it.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lab.frontier import SELECTION_RULE, aggregate, pareto_frontier, select_default
from sparsity.contract import DEFAULT_DENSITY, DEFAULT_THRESHOLD
from sparsity.logs import quiet_tensorflow, set_tensorflow_threads
from training.progress import Progress

log = logging.getLogger(__name__)

DEFAULT_L1S = (0.0, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3)
CENTER_L1 = 1e-4
"""The L1 strength around which the default grid varies initialisation and design."""
POINT_FIELDS = ("l1", "init", "design", "threshold", "kwta_density")
RUN_SETTINGS = ("epochs", "limit", "dataset", "batch_size")


@dataclass(frozen=True)
class Point:
    """One configuration of the three method families."""

    l1: float = 0.0
    init: str = "glorot"
    design: str = "relu"
    threshold: float = DEFAULT_THRESHOLD
    kwta_density: float = DEFAULT_DENSITY

    @property
    def key(self) -> str:
        design = self.design
        if design == "fatrelu":
            design = f"fatrelu(t={self.threshold:g})"
        elif design in ("kwta", "kwta-dense"):
            design = f"{design}(d={self.kwta_density:g})"
        return f"{design}/{self.init}/l1={self.l1:g}"


@dataclass
class SweepConfig:
    points: list[Point]
    seeds: int = 3
    epochs: int = 15
    batch_size: int = 32
    limit: int = 0
    dataset: str = "mnist-5k"
    jobs: int = 2
    description: str = ""
    out_dir: Path = field(default_factory=lambda: Path("reports/sweep"))

    def settings(self) -> dict:
        return {"epochs": self.epochs, "limit": self.limit, "dataset": self.dataset, "batch_size": self.batch_size}


def default_points(threshold: float, density: float) -> list[Point]:
    """One family at a time: every L1 strength with Glorot and ReLU; at the centre L1 (and at
    L1 = 0, to show what a design gives on its own) the other initialisations and designs."""
    points = [Point(l1=l1, threshold=threshold, kwta_density=density) for l1 in DEFAULT_L1S]
    points += [Point(l1=CENTER_L1, init=init, threshold=threshold, kwta_density=density) for init in ("he", "normal")]
    for l1 in (0.0, CENTER_L1):
        points += [
            Point(l1=l1, design=design, threshold=threshold, kwta_density=density) for design in ("fatrelu", "kwta")
        ]
    return points


def product_points(
    l1s: list[float], inits: list[str], designs: list[str], threshold: float, density: float
) -> list[Point]:
    return [
        Point(l1=l1, init=init, design=design, threshold=threshold, kwta_density=density)
        for design in designs
        for init in inits
        for l1 in l1s
    ]


def train_one(point: dict, seed: int, settings: dict, threads: int = 0) -> dict:
    """Train and evaluate one (point, seed); runs in a worker process. Returns the run's row."""
    quiet_tensorflow()
    if threads:
        set_tensorflow_threads(threads, threads)  # TF already running in this worker: the first call's holds
    from training import data
    from training.mnist import MnistOptions, evaluate, fit

    p = Point(**point)
    split = data.load_mnist(settings["dataset"], seed)
    opts = MnistOptions(
        dataset=settings["dataset"],
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        activity_l1=p.l1,
        init=p.init,
        design=p.design,
        threshold=p.threshold,
        kwta_density=p.kwta_density,
        seed=seed,
        limit=settings["limit"],
        verbose=0,
    )
    start = time.perf_counter()
    model = fit(split, opts)
    seconds = time.perf_counter() - start
    ev = evaluate(model, split.x_test, split.y_test)
    row = {"point": p.key, **asdict(p), "seed": seed, **settings, "test_accuracy": ev["test_accuracy"]}
    for layer, stats in ev["activation_sparsity"].items():
        row[f"sparsity_{layer}"] = stats["mean"]
    for layer, ratio in ev["dead_unit_ratio"].items():
        row[f"dead_{layer}"] = ratio
    row["train_seconds"] = round(seconds, 2)
    return row


class Results:
    """The sweep's rows on disk, rewritten (atomically) after every run."""

    def __init__(self, out_dir: Path, config: SweepConfig, resume: bool) -> None:
        self.out_dir = out_dir
        self.config = config
        self.json_path = out_dir / "results.json"
        self.csv_path = out_dir / "results.csv"
        self.runs: list[dict] = []
        if resume and self.json_path.exists():
            previous = json.loads(self.json_path.read_text())
            self.runs = previous["runs"]
            grids = previous.get("description", "").split("; then ")
            if config.description not in grids:
                config.description = "; then ".join([*filter(None, grids), config.description])
            else:
                config.description = previous["description"]
            log.info("resuming: %d finished runs read from %s", len(self.runs), self.json_path)
        elif self.json_path.exists():
            log.warning("%s exists and --resume was not given: starting a new sweep over it", self.json_path)

    def add(self, row: dict) -> None:
        self.runs.append(row)
        self.write()

    def summary(self) -> dict:
        points = aggregate(self.runs, (*POINT_FIELDS, *RUN_SETTINGS))
        summary = {
            "description": self.config.description,
            "settings": self.config.settings(),
            "selection_rule": SELECTION_RULE,
            "runs": self.runs,
            "points": points,
            "frontier": [],
            "chosen": None,
            "dense_default": Point().key,
        }
        if points:
            summary["frontier"] = [p["point"] for p in pareto_frontier(points)]
            summary["chosen"] = select_default(points)["point"]
        return summary

    def write(self) -> dict:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        summary = self.summary()
        _atomic_write(self.json_path, json.dumps(summary, indent=2) + "\n")
        _atomic_write(
            self.csv_path,
            _csv([{"kind": "run", **r} for r in self.runs] + [{"kind": "point", **p} for p in summary["points"]]),
        )
        return summary


def _csv(rows: list[dict]) -> str:
    import csv
    import io

    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_sweep(config: SweepConfig, resume: bool = False, progress: Progress | None = None) -> dict:
    """Train every (point, seed) not yet done, writing rows as they finish; then draw the plot."""
    results = Results(config.out_dir, config, resume)
    settings = config.settings()
    todo = pending_runs(config, results, RUN_SETTINGS, "sweep")
    run_all(train_one, todo, settings, results, progress or Progress(total=len(todo)), config.jobs)
    summary = results.write()
    from lab.plots import draw_pareto

    draw_pareto(summary, config.out_dir / "pareto.png")
    return summary


def pending_runs(config, results: Results, keys: tuple[str, ...], what: str) -> list[tuple]:
    """The ``(point, seed)`` pairs of ``config`` that ``results`` has no row for (a row matches on point, seed
    and the ``keys`` settings), logged with the totals."""
    settings = config.settings()
    done = {(r["point"], r["seed"], *(r[k] for k in keys)) for r in results.runs}
    todo = [
        (p, seed)
        for p in config.points
        for seed in range(config.seeds)
        if (p.key, seed, *(settings[k] for k in keys)) not in done
    ]
    total = len(config.points) * config.seeds
    log.info(
        "%s: %d points x %d seeds = %d runs, %d to train (%d already done), %d job(s); writing to %s",
        what,
        len(config.points),
        config.seeds,
        total,
        len(todo),
        total - len(todo),
        config.jobs,
        config.out_dir,
    )
    return todo


def run_all(train, todo: list, settings: dict, results: Results, progress: Progress, jobs: int) -> None:
    """Run ``train(asdict(point), seed, settings, threads)`` for every ``(point, seed)`` of ``todo``, adding
    each row to ``results`` as it finishes. With ``jobs`` > 1, that many at a time, each in its own process
    with one TF thread (two single-threaded trainings beat one two-threaded one on these small models)."""
    if jobs <= 1:
        for p, seed in todo:
            progress.start(f"{p.key} seed {seed}")
            results.add(train(asdict(p), seed, settings))
            progress.advance(f"{p.key} seed {seed}")
    else:
        _run_parallel(train, todo, settings, results, progress, jobs)
    progress.close()


def _run_parallel(train, todo: list, settings: dict, results: Results, progress: Progress, jobs: int) -> None:
    context = multiprocessing.get_context("spawn")
    pending: dict[Future, str] = {}
    queue = list(todo)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        try:
            while queue or pending:
                while queue and len(pending) < jobs:
                    p, seed = queue.pop(0)
                    label = f"{p.key} seed {seed}"
                    pending[pool.submit(train, asdict(p), seed, settings, 1)] = label
                    progress.start(label)
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    label = pending.pop(future)
                    results.add(future.result())
                    progress.advance(label)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
