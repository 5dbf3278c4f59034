"""Facts of the data sets the project trains on: shapes, value ranges, names, and the names of the
models it registers from them. The core knows models and activations, not data sets; the service
knows a model only by its card."""

MNIST_SHAPE: tuple[int, int] = (28, 28)
"""Height and width of one MNIST image."""
MNIST_PIXEL_MAX = 255.0
"""Raw MNIST pixels are 0..255; models see ``pixel / MNIST_PIXEL_MAX`` in [0, 1]."""
MNIST_RANGE: tuple[float, float] = (0.0, 1.0)
MNIST_CLASS_NAMES: tuple[str, ...] = tuple(str(d) for d in range(10))
MNIST_PREPROCESSING = "mnist-digit"
"""The declared step that turns an uploaded picture into an MNIST-style digit (see sparsity.card)."""

IRIS_FEATURES: tuple[str, ...] = ("sepal length", "sepal width", "petal length", "petal width")
IRIS_CLASS_NAMES: tuple[str, ...] = ("setosa", "versicolor", "virginica")
IRIS_FEATURE_LIMIT = 1e6
"""Iris features (cm) must lie within +/- this: larger numbers overflow the scaled linear model."""

MNIST_MODEL_NAME = "mnist_cnn"
IRIS_MODEL_NAME = "iris_l1"
