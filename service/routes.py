"""The prediction routes, declared once: the endpoints take their paths from here and the request
guard its content types and upload fields, so a renamed route cannot silently lose its guard."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    path: str
    content_types: tuple[str, ...]  # what the guard accepts (415 otherwise)
    upload_field: str | None = None  # the multipart field that must be a file upload
    bentoml_api: bool = True  # False: answered by service.fastpath, not by a @bentoml.api endpoint


MNIST_PREDICT = Route("/mnist/predict", ("application/json",))
MNIST_PREDICT_IMAGE = Route("/mnist/predict_image", ("multipart/form-data",), upload_field="image")
MNIST_PREDICT_BATCH = Route("/mnist/predict_batch", ("application/x-npy",), bentoml_api=False)
IRIS_PREDICT = Route("/iris/predict", ("application/json",))
ROUTES: tuple[Route, ...] = (MNIST_PREDICT, MNIST_PREDICT_IMAGE, MNIST_PREDICT_BATCH, IRIS_PREDICT)
MODELS_PATH = "/models"
"""GET: the served models' cards (a Starlette route of the service, documented by service.openapi)."""
