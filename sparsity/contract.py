"""The data contract shared by training and serving: shapes, value ranges, names."""

MNIST_SHAPE: tuple[int, int] = (28, 28)
"""Height and width of one MNIST image."""

MNIST_PIXEL_MAX = 255.0
"""Raw MNIST pixels are 0..255; models see ``pixel / MNIST_PIXEL_MAX`` in [0, 1]."""

MNIST_CLASS_NAMES: tuple[str, ...] = tuple(str(d) for d in range(10))

IRIS_FEATURES: tuple[str, ...] = ("sepal length", "sepal width", "petal length", "petal width")
IRIS_CLASS_NAMES: tuple[str, ...] = ("setosa", "versicolor", "virginica")
IRIS_FEATURE_LIMIT = 1e6
"""Iris features (cm) must lie within +/- this: larger numbers overflow the scaled linear model."""

MAX_BATCH = 1024
"""Largest number of images or rows accepted in one request."""

MNIST_MODEL_NAME = "mnist_cnn"
IRIS_MODEL_NAME = "iris_l1"
MNIST_MODEL_FILE = "model.keras"
IRIS_MODEL_FILE = "model.skops"
IRIS_LINEAR_LAYER = "coefficients"
"""Layer label used for the L1 classifier's weights in metrics."""
ALL_LAYERS = "all"
"""Layer label for the overall (size-weighted) figure across all ReLU layers."""
