"""Option choices, importable without loading TensorFlow or scikit-learn (the CLI answers fast)."""

DATASETS = ("auto", "mnist", "mnist-10k", "mnist-5k")
ARCHS = ("cnn", "seed")
INITS = ("glorot", "he", "normal")
"""Kernel initialisers of the ReLU layers: Glorot/Xavier uniform, He normal, plain N(0, 0.01)."""
DESIGNS = ("relu", "fatrelu", "kwta", "kwta-dense")
"""Activation designs: plain ReLU, thresholded ReLU (FATReLU), k-winners-take-all in every layer, and
ReLU in the conv layers with k-winners-take-all in the dense layer only."""
