"""Summaries of a probe run over a data set: the baseline the service compares live traffic to."""

from __future__ import annotations

import numpy as np

from sparsity.contract import ALL_LAYERS
from sparsity.result import ProbeResult


def summarize(result: ProbeResult) -> dict:
    """Mean/std of per-sample sparsity per layer (and ``all``) and the dead-unit ratio per layer
    (units that never fired on any sample of the run)."""
    layers = {
        name: {"mean": float(np.mean(values)), "std": float(np.std(values))}
        for name, values in result.layer_sparsity.items()
    }
    layers[ALL_LAYERS] = {"mean": float(np.mean(result.overall)), "std": float(np.std(result.overall))}
    dead = {name: float(np.mean(~fired.any(axis=0))) for name, fired in result.fired.items()}
    return {"activation_sparsity": layers, "dead_unit_ratio": dead}
