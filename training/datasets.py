"""Facts of the data sets the project trains on: shapes, value ranges, names, and the names of the
models it registers from them. The core knows models and activations, not data sets; the service
knows a model only by its card. What the service documents too (the MNIST shape, the iris feature limit,
the models' names, the picture step) is in :mod:`sparsity.contract`."""

from sparsity.contract import IRIS_FEATURE_LIMIT, IRIS_MODEL_NAME, MNIST_DIGIT, MNIST_MODEL_NAME, MNIST_SHAPE

__all__ = ["IRIS_FEATURE_LIMIT", "IRIS_MODEL_NAME", "MNIST_DIGIT", "MNIST_MODEL_NAME", "MNIST_SHAPE"]

MNIST_PIXEL_MAX = 255.0
"""Raw MNIST pixels are 0..255; models see ``pixel / MNIST_PIXEL_MAX`` in [0, 1]."""
MNIST_RANGE: tuple[float, float] = (0.0, 1.0)
MNIST_CLASS_NAMES: tuple[str, ...] = tuple(str(d) for d in range(10))

IRIS_FEATURES: tuple[str, ...] = ("sepal length", "sepal width", "petal length", "petal width")
IRIS_CLASS_NAMES: tuple[str, ...] = ("setosa", "versicolor", "virginica")
