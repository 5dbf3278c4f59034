"""The data contract, stated once: batch limits, metric label names, the picture steps, and the two project
models' input facts that the service's aliases document and training produces. A registered model's shape,
range and names come from its card."""

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

MNIST_DIGIT = "mnist-digit"
"""The picture step of MNIST-style digits."""
PREPROCESSING = ("resize", MNIST_DIGIT)
"""Declared steps that turn an uploaded picture into one input (``POST /models/{name}/predict_image``):
``resize`` scales the picture to the input's height and width and its pixels to the input range;
``mnist-digit`` does what MNIST did to its digits (white on black, 20x20 box, centred by mass)."""
MNIST_SHAPE: tuple[int, int] = (28, 28)
"""An MNIST digit: 28x28 grey values in [0, 1]."""
IRIS_FEATURE_LIMIT = 1e6
"""iris_l1's input range is +/- this, in cm (larger numbers overflow the scaled linear model); what the
``/iris/predict`` alias documents."""
MNIST_MODEL_NAME = "mnist_cnn"
"""The project's CNN: training registers it under this name; the ``/mnist/*`` aliases answer for it."""
IRIS_MODEL_NAME = "iris_l1"
"""The project's L1 classifier: training registers it under this name; ``/iris/predict`` answers for it."""


def picture_layout(shape) -> tuple[int, int, int | None, bool] | None:
    """``(height, width, channels, channels_first)`` of an input that is a picture, else None: (H, W)
    (channels None), (H, W, C) with 1 or 3 channels, or channels first, (1, H, W) grey or (3, H, W) colour, as
    ONNX exports of NCHW networks (PyTorch's) take them. A shape that reads both ways, (3, H, 3), is channels
    last."""
    shape = tuple(shape)
    if len(shape) == 2:
        return shape[0], shape[1], None, False
    if len(shape) == 3 and shape[2] in (1, 3):
        return shape[0], shape[1], shape[2], False
    if len(shape) == 3 and shape[0] in (1, 3):
        return shape[1], shape[2], shape[0], True
    return None


def image_shaped(shape) -> bool:
    """Inputs that are pictures (see :func:`picture_layout`)."""
    return picture_layout(shape) is not None


def step_makes(step: str, shape) -> bool:
    """Whether the picture step ``step`` (one of :data:`PREPROCESSING`) makes inputs of ``shape``: ``resize``
    any picture, ``mnist-digit`` grey 28x28 ones only."""
    layout = picture_layout(shape)
    return layout is not None and (step != MNIST_DIGIT or (layout[:2] == MNIST_SHAPE and layout[2] in (None, 1)))
