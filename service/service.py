"""The BentoML service: predictions with per-request activation sparsity from one forward pass.

Endpoints stay thin: validate, call the core through a runtime, record metrics, answer.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio
import bentoml
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

from service import __version__, logs, metrics, openapi, routes, watchdog
from service.config import Settings, SettingsError
from service.fastpath import FastPaths
from service.middleware import RequestGuard
from service.preflight import check_stored_models
from service.preprocess import image_to_mnist
from service.responses import iris_response, mnist_response, mnist_response_json, refusing_invalid_input
from service.runtime import IrisRuntime, MnistRuntime, configure_tensorflow
from service.schemas import Images, IrisResponse, IrisRows, MnistResponse

try:
    settings = Settings.from_env()
except SettingsError as exc:  # one line and exit status 2, in the supervisor, before any worker starts
    print(f"error: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(2) from None
IN_WORKER = bentoml.server_context.worker_index is not None
logs.configure()
# the file audit runs once, in the supervisor (or a test's process); workers load with the same rules
check_stored_models(settings.mnist_tag, settings.iris_tag, audit_files=not IN_WORKER)
INLINE_MAX_IMAGES = 8
"""Batches up to this size run on the event loop; larger ones in a worker thread."""


async def _models(request: Request) -> JSONResponse:
    service = bentoml.get_current_service()
    return JSONResponse(service.describe_models())


models_app = Starlette(
    routes=[
        Route(routes.MODELS_PATH, _models, methods=["GET"]),
        # BentoML serves Swagger UI at / and the OpenAPI document at /docs.json
        Route("/docs", lambda request: RedirectResponse("/"), methods=["GET"]),
    ]
)


@bentoml.asgi_app(models_app, path="/")
@bentoml.service(
    name="sparsity_service",
    workers=settings.workers,
    traffic={"timeout": 60},
    # no OpenTelemetry spans for the batch routes: its middleware wraps every body chunk (3 ms of a
    # 256-image JSON request, measured); no exporter is configured by default anyway
    tracing={"excluded_urls": [routes.MNIST_PREDICT.path, routes.MNIST_PREDICT_BATCH.path]},
    logging={"access": {"enabled": settings.access_log, "skip_paths": ["/metrics", "/livez", "/readyz"]}},
    metrics={
        "enabled": True,
        "namespace": "bentoml_service",
        "duration": {"buckets": metrics.REQUEST_BUCKETS},
    },
)
class SparsityService:
    """Serves the MNIST ReLU CNN and the iris L1 classifier with activation sparsity."""

    mnist_model = bentoml.models.BentoModel(settings.mnist_tag)
    iris_model = bentoml.models.BentoModel(settings.iris_tag)

    def __init__(self) -> None:
        self._ready = False
        if IN_WORKER:
            watchdog.exit_with_parent()
        configure_tensorflow(settings.tf_intra_threads, settings.tf_inter_threads)
        self.mnist = MnistRuntime(self.mnist_model)
        self.iris = IrisRuntime(self.iris_model)
        self.mnist.warm_up()
        self.recorder = metrics.Recorder(self.mnist, self.iris)
        self._ready = True
        logs.log_summary(self.mnist.info, self.iris.info, settings.workers, bentoml.server_context.worker_index)

    def __is_ready__(self) -> bool:
        return self._ready

    def describe_models(self) -> dict:
        return {"models": [self.mnist.info, self.iris.info]}

    @bentoml.api(route=routes.MNIST_PREDICT.path)
    async def mnist_predict(self, images: Images) -> MnistResponse:
        """Classify 1-1024 28x28 images (values in [0, 1]); each answer carries its sparsity."""
        pixels = np.asarray(images, dtype=np.float32)
        if len(pixels) <= INLINE_MAX_IMAGES:
            # well under a millisecond of model time: cheaper than a hand-off to the thread pool
            return self._mnist(pixels)
        return await anyio.to_thread.run_sync(self._mnist, pixels)

    @bentoml.api(route=routes.MNIST_PREDICT_IMAGE.path)
    def mnist_predict_image(self, image: Path) -> MnistResponse:
        """Classify one uploaded PNG or JPEG, converted MNIST-style (grey, white on black, centred).

        The format is read from the file's bytes, not from the part's Content-Type, so an upload
        sent as application/octet-stream works too."""
        with refusing_invalid_input():
            pixels = image_to_mnist(Path(image).read_bytes(), settings.max_image_pixels)
        return self._mnist(pixels[None])

    @bentoml.api(route=routes.IRIS_PREDICT.path)
    async def iris_predict(self, features: IrisRows) -> IrisResponse:
        """Classify 1-1024 iris rows; each answer carries weight and contribution sparsity."""
        # a linear model on at most 1024 x 4 numbers: about a millisecond, run on the event loop
        start = time.perf_counter()
        with refusing_invalid_input():
            result = self.iris.predict(np.asarray(features, dtype=np.float64))
        self.recorder.iris(result, time.perf_counter() - start)
        return iris_response(self.iris.tag, self.iris.class_names, result)

    def _mnist(self, pixels: np.ndarray) -> MnistResponse:
        with refusing_invalid_input():
            result, typicality = self._mnist_run(pixels)
        return mnist_response(self.mnist.tag, result, typicality)

    def mnist_json(self, pixels: np.ndarray) -> bytes:
        """``_mnist`` answered as JSON bytes, for service.fastpath. Raises InvalidInputError."""
        return mnist_response_json(self.mnist.tag, *self._mnist_run(pixels))

    def _mnist_run(self, pixels: np.ndarray):
        start = time.perf_counter()
        result = self.mnist.predict(pixels)
        typicality = self.mnist.typicality(result)
        self.recorder.mnist(result, typicality, time.perf_counter() - start)
        return result, typicality


SparsityService.add_asgi_middleware(
    RequestGuard,
    routes=routes.ROUTES,
    max_body_bytes=settings.max_body_bytes,
    max_drain_bytes=settings.max_drain_bytes,
    body_timeout=settings.body_timeout,
)
SparsityService.add_asgi_middleware(FastPaths)  # inside the guard: 415 and 413 are answered before it reads
SparsityService.add_asgi_middleware(
    openapi.OpenAPIDocument,
    build=lambda: openapi.fix_document(SparsityService.openapi_spec.asdict(), version=__version__),
)
