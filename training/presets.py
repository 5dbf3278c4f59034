"""Named MNIST configurations. ``sparse`` is the default of ``python -m training mnist`` (and so of
``make serve``): the point the sweep's selection rule chose (see README, "What we found").
``dense`` is the old default, kept one option away for comparison; ``every-layer`` is the sparsest
point of the selection band whose every layer, the dense one included, is at least 75% zeros.
Importable without TensorFlow."""

from __future__ import annotations

from sparsity.contract import DEFAULT_DENSITY, DEFAULT_THRESHOLD

_BASE = {"init": "glorot", "threshold": DEFAULT_THRESHOLD, "kwta_density": DEFAULT_DENSITY}

PRESETS: dict[str, dict] = {
    "sparse": {**_BASE, "activity_l1": 3e-3, "design": "relu"},
    "dense": {**_BASE, "activity_l1": 0.0, "design": "relu"},
    "every-layer": {**_BASE, "activity_l1": 3e-4, "design": "kwta-dense", "kwta_density": 0.2},
}
DEFAULT_PRESET = "sparse"

PRUNE_AFTER: dict[str, dict] = {
    "sparse": {"by": "activations", "max_firing": 0.02, "fine_tune_epochs": 2},
}
"""Pruning that ``python -m training mnist`` runs after training with a preset (README, "Sparsity turned
into speed"): the conv channels on at most 2% of the time go, then 2 epochs of fine-tuning. The
pruned model is saved after its parent, so it is ``mnist_cnn:latest``, the one the service serves."""

_SWEEP = "python -m training sweep, default grid + extensions, 3 seeds, mnist-5k, 2026-11-28"
PROVENANCE: dict[str, dict] = {
    "sparse": {
        "chosen_by": "selection rule in training/frontier.py (sparsest point within 0.2 pt or one seed std "
        "of the best mean accuracy)",
        "sweep": _SWEEP,
        "sweep_point": "relu/glorot/l1=0.003",
        "sweep_accuracy": "97.90 +/- 0.56 %",
        "sweep_sparsity": "0.969 overall",
    },
    "dense": {"chosen_by": "the project's first default (no regularisation, plain ReLU, Glorot)"},
    "every-layer": {
        "chosen_by": "sparsest point of the selection band with every ReLU-family layer >= 0.75 zeros",
        "sweep": _SWEEP,
        "sweep_point": "kwta-dense(d=0.2)/glorot/l1=0.0003",
        "sweep_accuracy": "97.90 +/- 0.44 %",
        "sweep_sparsity": "0.936 overall, dense 0.797",
    },
}

RESNET_PRESET: dict = {"depth": 1, "width": 2.0, "placement": "post", "method": "l1", "l1": 1e-5, "epochs": 15}
"""The residual CNN ``python -m training resnet`` trains: the depth study's choice (README, "Deeper networks")."""
RESNET_PRUNE: dict = {"max_firing": 0.02, "fine_tune_epochs": 2}
RESNET_PROVENANCE: dict = {
    "chosen_by": "the depth study's rule in training/depth.py (SERVING_RULE)",
    "study": "python -m training depth, 10 points x 3 seeds, mnist-5k, 2026-11-29",
}
