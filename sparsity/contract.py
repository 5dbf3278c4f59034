"""Facts every model kind shares: batch limits and metric label names. Data-set facts live with
training (``training/datasets.py``); a served model's shape, range and names come from its card."""

MAX_BATCH = 1024
"""Largest number of items accepted in one JSON request."""
MAX_NPY_ITEMS = 4096
"""Largest number of items one ``.npy`` batch may hold."""
ALL_LAYERS = "all"
"""Layer label for the overall (size-weighted) figure across all ReLU layers."""
LINEAR_LAYER = "coefficients"
"""Layer label used for a linear classifier's weights in metrics and answers."""
DEFAULT_THRESHOLD = 0.05
"""The thresholded ReLU's threshold unless one is given (the sweep's; the only declaration of it)."""
DEFAULT_DENSITY = 0.1
"""k-WTA's kept share of each sample's activations unless one is given (the only declaration of it)."""
