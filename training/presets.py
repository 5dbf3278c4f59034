"""Named MNIST configurations. ``controlled`` is the default of ``python -m training mnist`` (and so of
``make serve``): L1 3e-4 and a Hoyer-square penalty on every layer, ramped in, with a per-layer controller
raising a layer's penalty while it has fewer than 87% zeros: the point of the every-layer study that met
its targets (README, "Every layer sparse"). ``sparse`` is the default before it (the first sweep's choice,
whose dense layer stays near 50% zeros), ``dense`` the first default, kept one option away for comparison;
``every-layer`` is the first sweep's sparsest point whose every layer is at least 75% zeros.
Importable without TensorFlow."""

from __future__ import annotations

from sparsity.contract import DEFAULT_DENSITY, DEFAULT_THRESHOLD

_BASE = {"init": "glorot", "threshold": DEFAULT_THRESHOLD, "kwta_density": DEFAULT_DENSITY}

PRESETS: dict[str, dict] = {
    "sparse": {**_BASE, "activity_l1": 3e-3, "design": "relu"},
    "dense": {**_BASE, "activity_l1": 0.0, "design": "relu"},
    "every-layer": {**_BASE, "activity_l1": 3e-4, "design": "kwta-dense", "kwta_density": 0.2},
    "controlled": {**_BASE, "activity_l1": 3e-4, "design": "relu", "hoyer": 1.0, "ramp": 0.3, "control": 0.87},
}
DEFAULT_PRESET = "controlled"

PRUNE_AFTER: dict[str, dict] = {
    "sparse": {"by": "activations", "max_firing": 0.02, "fine_tune_epochs": 2},
}
"""Pruning that ``python -m training mnist`` runs after training with a preset (README, "Sparsity turned
into speed"): the conv channels on at most 2% of the time go, then 2 epochs of fine-tuning. The
pruned model is saved after its parent, so it is ``mnist_cnn:latest``, the one the service serves.
The default, ``controlled``, is not pruned: removing the units that are (almost) always off leaves every
layer with fewer zeros than its target (README, "Every layer sparse")."""

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
    "controlled": {
        "chosen_by": "the every-layer study's most accurate CNN point with every ReLU layer >= 0.85 zeros and "
        ">= 0.95 overall (issue 30's targets)",
        "study": "python -m lab every-layer, 3 seeds, mnist-5k, measured on 5,000 extra digits, 2026-12-05",
        "study_point": "cnn/controlled/l1=0.0003+hoyer=1+ramp0.3+control@0.87",
        "study_accuracy": "97.57 +/- 0.20 % (extra digits), 98.07 % (held-back split)",
        "study_sparsity": "0.957 overall; conv1 0.964, conv2 0.946, dense 0.888",
    },
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
