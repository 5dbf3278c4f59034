"""Named MNIST configurations. ``sparse`` is the default of ``python -m training mnist`` (and so of
``make serve``): the point the sweep's selection rule chose. ``dense`` is the old default, kept one
option away for comparison. Importable without TensorFlow."""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    "sparse": {"activity_l1": 1e-4, "init": "glorot", "design": "relu", "threshold": 0.05, "kwta_density": 0.1},
    "dense": {"activity_l1": 0.0, "init": "glorot", "design": "relu", "threshold": 0.05, "kwta_density": 0.1},
}
DEFAULT_PRESET = "sparse"

PROVENANCE: dict[str, dict] = {
    "sparse": {
        "chosen_by": "python -m training sweep (default grid), selection rule in training/frontier.py",
        "sweep_point": "relu/glorot/l1=0.0001",
    },
    "dense": {"chosen_by": "the project's first default (no regularisation, plain ReLU, Glorot)"},
}
