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
