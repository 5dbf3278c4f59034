"""The sparsity lab: studies of accuracy against sparsity (the sweep, the depth study, pruning), apart from the
product. It trains through :mod:`training` and reads the store through :mod:`modelstore`; nothing in the
product imports it. ``python -m lab sweep|depth|prune``."""
