"""Option choices, importable without loading TensorFlow or scikit-learn (the CLI answers fast)."""

DATASETS = ("auto", "mnist", "mnist-5k")
ARCHS = ("cnn", "seed")
