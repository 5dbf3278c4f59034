"""Which engine computes a ReLU model's answers: each engine checked against the reference and timed at
registration, the fastest that passed chosen at load.

Engines: ``tensorflow`` (a Keras model's own probe), ``onnxruntime`` (an ONNX file, or a Keras model's checked
ONNX twin, counted inside ONNX Runtime), ``sparse`` (the same ONNX graph compiled for the sparse engine,
:mod:`sparsity.sparse`: work that grows with the nonzero activations). Registration runs the sparse program
over the whole calibration set against the reference (the engine the calibration ran on) and keeps it only when
:func:`sparsity.exactness.agreement` holds; then times every engine that passed at 1 and 256 images, one
thread, in turns. The card keeps each engine's check and times (``engines``) and what the sparse program
removed (``sparse``).

The ``ENGINE`` setting (:data:`SETTINGS`): ``auto`` serves the sparse engine where it passed and was faster at
both 1 and 256 images than the engine the model would otherwise run on (so no model gets slower), else that
engine; ``sparse``, ``onnxruntime`` or ``tensorflow`` forces one where the model has it, else ``auto``'s choice
with one line saying why.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from pydantic import BaseModel, Field

from sparsity.exactness import PROBABILITY_TOLERANCE
from sparsity.onnx_probe import TIE_TOLERANCE

log = logging.getLogger(__name__)

SETTINGS = ("auto", "sparse", "onnxruntime", "tensorflow")
SIZES = (1, 256)
"""Batch sizes timed at registration."""
TIME_BUDGET = 1.5
"""Seconds of timing per engine and size at most (at least 3 runs each)."""


class EngineCheck(BaseModel):
    """One engine of a model, as registration found it."""

    engine: str
    passed: bool = Field(description="whether its answers are the reference's on the whole calibration set")
    reason: str | None = Field(default=None, description="why it did not pass, in one line")
    ms_1: float | None = Field(default=None, description="median milliseconds for one image, one thread")
    ms_256: float | None = Field(default=None, description="median milliseconds for 256 images, one thread")


class AgreementCheck(BaseModel):
    """How a second engine was checked against the reference at registration
    (:func:`sparsity.exactness.agreement`)."""

    items: int = Field(description="calibration items both ran on")
    zero_counts_equal: bool = Field(description="each item's exact-zero count in each layer, the same in both")
    unit_counts_equal: bool = Field(description="each item's count of positions on per unit, the same in both")
    rounding_ties: int = Field(
        default=0,
        description="activations zero in one and on in the other, each at a rounding tie: its input within "
        "tie_tolerance of zero (relative to the layer's largest on that item); any other difference refuses it",
    )
    tie_items: int = Field(default=0, description="calibration items with a rounding tie")
    tie_tolerance: float = TIE_TOLERANCE
    activations: int = Field(default=0, description="activations compared (items x ReLU outputs per item)")
    max_probability_difference: float
    probability_tolerance: float = PROBABILITY_TOLERANCE


class SparseCheck(AgreementCheck):
    labels_equal: bool = True


class SparseCard(BaseModel):
    """The sparse program of a model: what compaction removed and how it was checked."""

    removed: dict[str, list[int]] = Field(
        description="per layer, the units left out of the program: provably 0 on every input in the input range "
        "(interval bounds), so reported as not firing with no answer changed"
    )
    never_fired: dict[str, int] = Field(
        default={},
        description="per layer, how many units never fired on the calibration set (kept unless provably dead: "
        "such a unit can fire on other inputs)",
    )
    multiply_adds: int = Field(description="multiply-adds per input of the program with no zero skipped")
    check: SparseCheck


def timed(run, x: np.ndarray) -> float:
    """Median milliseconds of ``run(x)`` over at least 3 runs and :data:`TIME_BUDGET` seconds (after one warm-up)."""
    run(x)
    times, spent = [], 0.0
    while len(times) < 3 or (spent < TIME_BUDGET and len(times) < 200):
        start = time.perf_counter()
        run(x)
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        spent += elapsed
    return float(np.median(times) * 1000)


def batches(x: np.ndarray) -> dict[int, np.ndarray]:
    """The timed batches: the first item, and 256 items (the calibration set repeated when it is smaller)."""
    repeats = -(-256 // len(x))
    return {size: np.ascontiguousarray(np.tile(x, (repeats,) + (1,) * (x.ndim - 1))[:size]) for size in SIZES}


def check_engines(
    reference_engine: str,
    reference_probe,
    reference_result,
    onnx_model,
    onnx_layers: list,
    output: str,
    x: np.ndarray,
    value_range: tuple[float, float],
    *,
    onnx_probe=None,
) -> dict:
    """The card's ``engines`` and ``sparse`` fields for a model whose calibration ran on ``reference_probe``
    (engine ``reference_engine``) with ``reference_result``. ``onnx_model`` (None: no ONNX graph, the sparse
    engine cannot run) with its probed ``onnx_layers`` and ``output`` kind is compiled for the sparse engine;
    ``value_range`` is the card's input range (compaction proves units dead from it); ``onnx_probe``, when the
    reference is not ONNX Runtime, is the model on ONNX Runtime (a checked twin)."""
    from sparsity.exactness import agreement
    from sparsity.sparse.engine import SparseProbe, SparseUnsupported
    from sparsity.sparse.kernels import KernelsUnavailable

    runners = {reference_engine: reference_probe}
    if onnx_probe is not None:
        runners["onnxruntime"] = onnx_probe
    checks = {name: EngineCheck(engine=name, passed=True) for name in runners}
    sparse_card = None
    if onnx_model is None:
        checks["sparse"] = EngineCheck(engine="sparse", passed=False, reason="no checked ONNX graph to compile")
    else:
        never = {name: int((~fired.any(axis=0)).sum()) for name, fired in reference_result.fired.items()}
        try:
            sparse = SparseProbe(onnx_model, layers=onnx_layers, output=output, value_range=value_range)
            candidate = sparse.run_batched(x)
        except (SparseUnsupported, KernelsUnavailable, OSError) as exc:
            reason = str(exc)
            log.warning("the sparse engine cannot run this model: %s", reason)
            checks["sparse"] = EngineCheck(engine="sparse", passed=False, reason=reason)
        else:
            found, problem = agreement(
                reference_result, candidate, onnx_layers, x.astype(np.float32), onnx_model, onnx_layers,
                sparse.input_name, tolerance=PROBABILITY_TOLERANCE, what="the sparse engine",
                against=f"{reference_engine}'s",
            )  # fmt: skip
            if problem is not None:
                log.warning("the sparse engine is not used: %s", problem)
                checks["sparse"] = EngineCheck(engine="sparse", passed=False, reason=problem)
            else:
                runners["sparse"] = sparse
                checks["sparse"] = EngineCheck(engine="sparse", passed=True)
                removed = {name: units for name, units in sparse.dead.items() if name in sparse.removed_layers}
                sparse_card = SparseCard(
                    removed=removed,
                    never_fired={name: count for name, count in never.items() if count},
                    multiply_adds=sparse.program.multiply_adds,
                    check=SparseCheck(**vars(found)),
                )
    for size, batch in batches(x).items():
        for name, probe in runners.items():
            setattr(checks[name], f"ms_{size}", round(timed(probe.run, batch), 4))
    fields = {"engines": [check.model_dump() for check in checks.values()]}
    if sparse_card is not None:
        fields["sparse"] = sparse_card.model_dump()
    return fields


def choose(card, default: str, setting: str, available: tuple[str, ...]) -> tuple[str, str | None]:
    """The engine to serve ``card`` on: (engine, a line saying why the setting could not be followed, or None).
    ``default`` is the engine the model runs on without the sparse engine; ``available`` what this kind can
    run."""
    checks = {check.engine: check for check in card.engines}
    usable = [name for name in available if name == default or (name in checks and checks[name].passed)]
    if setting in usable:
        return setting, None
    sparse, base = checks.get("sparse"), checks.get(default)
    faster = (
        sparse is not None
        and sparse.passed
        and base is not None
        and all(getattr(sparse, f) is not None and getattr(base, f) is not None for f in ("ms_1", "ms_256"))
        and sparse.ms_1 < base.ms_1
        and sparse.ms_256 < base.ms_256
    )
    chosen = "sparse" if faster and "sparse" in available else default
    if setting == "auto":
        return chosen, None
    why = checks[setting].reason if setting in checks and checks[setting].reason else "not checked at registration"
    return chosen, f"ENGINE={setting} is not available for this model ({why}); it runs on {chosen}"
