"""The BentoML service: every registered model, each prediction answered with the activation sparsity
of its own forward pass.

Which models: :mod:`service.registry` (the latest of every stored model, or ``SERVED_MODELS``),
audited here at import, in the supervisor and again in each worker. Each accepted model becomes a
``BentoModel`` class attribute (so ``bentoml build`` bundles it) and, in the workers, a runtime of its
kind (:mod:`service.runtime`). The routes of every model are answered by :mod:`service.modelroutes`;
the ``@bentoml.api`` endpoints below are the project's first routes, kept as aliases. Endpoints stay
thin: validate, call the runtime, record metrics, answer.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import anyio
import bentoml
import numpy as np
from starlette.applications import Starlette
from starlette.responses import RedirectResponse
from starlette.routing import Route

from service import __version__, logs, metrics, openapi, routes, watchdog
from service.config import Settings, SettingsError
from service.middleware import RequestGuard
from service.modelroutes import ModelRoutes
from service.pages import Pages
from service.registry import NothingToServe, candidates
from service.responses import predict_json, predict_response, refusing_invalid_input
from service.runtime import Prediction, Runtime
from service.schemas import Images, IrisRows, PredictResponse
from sparsity.card import ModelCardError
from sparsity.logs import set_tensorflow_threads

log = logging.getLogger(__name__)
IN_WORKER = bentoml.server_context.worker_index is not None
logs.configure()
try:
    settings = Settings.from_env()
    CANDIDATES = candidates(settings.served_models)
except (SettingsError, NothingToServe) as exc:  # one line and exit status 2, before any worker starts
    print(f"error: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(2) from None
if not IN_WORKER:
    for refused in (c for c in CANDIDATES if not c.accepted):
        log.warning("not serving %s", refused.problem)
INLINE_MAX_ITEMS = 8
"""Batches up to this size run on the event loop; larger ones in a worker thread."""


class SparsityService:
    """Serves every registered ReLU-family model (and linear classifier) with activation sparsity."""

    def __init__(self) -> None:
        self._ready = False
        if IN_WORKER:
            watchdog.exit_with_parent()
        self.settings = settings
        self.runtimes: dict[str, Runtime] = {}
        self.refused = [{"tag": c.tag, "reason": c.problem} for c in CANDIDATES if not c.accepted]
        if any(c.accepted and c.card.kind == "keras-relu" for c in CANDIDATES):
            set_tensorflow_threads(settings.tf_intra_threads, settings.tf_inter_threads)
        from service.runtime import OnnxReluRuntime, load

        OnnxReluRuntime.threads = settings.onnx_intra_threads

        for candidate in (c for c in CANDIDATES if c.accepted):
            try:
                runtime = load(getattr(self, MODEL_ATTRIBUTES[candidate.tag]), candidate.card)
                runtime.warm_up()
            except ModelCardError as exc:  # the file passed the audit but not Keras' safe mode, or the card lies
                log.warning("not serving %s", exc)
                self.refused.append({"tag": candidate.tag, "reason": str(exc)})
                continue
            self.runtimes[runtime.name] = runtime
        if not self.runtimes:
            raise NothingToServe("no model could be loaded: " + "; ".join(r["reason"] for r in self.refused))
        self.recorder = metrics.Recorder(self.runtimes.values())
        self._ready = True
        logs.log_summary(
            [r.info for r in self.runtimes.values()],
            self.refused,
            settings.workers,
            bentoml.server_context.worker_index,
        )

    def __is_ready__(self) -> bool:
        return self._ready

    def describe_models(self) -> dict:
        models = sorted(self.runtimes.values(), key=lambda runtime: runtime.name)
        return {"models": [runtime.info for runtime in models], "refused": self.refused}

    def predict(self, runtime: Runtime, x: np.ndarray) -> Prediction:
        """One forward pass with its sparsity, recorded in the metrics. Raises InvalidInputError."""
        start = time.perf_counter()
        prediction = runtime.predict(x)
        self.recorder.record(runtime, prediction, time.perf_counter() - start)
        return prediction

    def predict_json(self, runtime: Runtime, x: np.ndarray, detail: str | None = None) -> bytes:
        """:meth:`predict` answered as JSON bytes (for service.modelroutes)."""
        return predict_json(runtime, self.predict(runtime, x), detail)

    def _alias(self, route: routes.RouteSpec) -> Runtime:
        runtime = self.runtimes.get(route.model)
        if runtime is None:  # service.modelroutes answers 404 before an alias endpoint is reached
            raise bentoml.exceptions.NotFound(f"no model named {route.model!r} is served")
        return runtime

    def _answer(self, runtime: Runtime, x: np.ndarray) -> PredictResponse:
        with refusing_invalid_input():
            return predict_response(runtime, self.predict(runtime, x))

    @bentoml.api(route=routes.MNIST_PREDICT.path)
    async def mnist_predict(self, images: Images) -> PredictResponse:
        """Classify 1-1024 28x28 images (values in [0, 1]) with mnist_cnn; each answer carries its sparsity.
        The same as POST /models/mnist_cnn/predict with {"inputs": images}."""
        runtime = self._alias(routes.MNIST_PREDICT)
        pixels = np.asarray(images, dtype=np.float32)
        if len(pixels) <= INLINE_MAX_ITEMS:
            # well under a millisecond of model time: cheaper than a hand-off to the thread pool
            return self._answer(runtime, pixels)
        return await anyio.to_thread.run_sync(self._answer, runtime, pixels)

    @bentoml.api(route=routes.MNIST_PREDICT_IMAGE.path)
    def mnist_predict_image(self, image: Path) -> PredictResponse:
        """Classify one uploaded PNG or JPEG with mnist_cnn, converted as its card declares (mnist-digit:
        grey, white on black, centred). The same as POST /models/mnist_cnn/predict_image.

        The format is read from the file's bytes, not from the part's Content-Type, so an upload
        sent as application/octet-stream works too."""
        runtime = self._alias(routes.MNIST_PREDICT_IMAGE)
        with refusing_invalid_input():
            batch = runtime.picture(Path(image).read_bytes(), settings.max_image_pixels)
        return self._answer(runtime, batch)

    @bentoml.api(route=routes.IRIS_PREDICT.path)
    async def iris_predict(self, features: IrisRows) -> PredictResponse:
        """Classify 1-1024 iris rows with iris_l1; each answer carries weight and contribution sparsity.
        The same as POST /models/iris_l1/predict with {"inputs": features}."""
        # a linear model on at most 1024 x 4 numbers: well under a millisecond, run on the event loop
        return self._answer(self._alias(routes.IRIS_PREDICT), np.asarray(features, dtype=np.float64))


MODEL_ATTRIBUTES: dict[str, str] = {}
"""Each served tag's class attribute: only class attributes are bundled by ``bentoml build``."""
for _index, _candidate in enumerate(c for c in CANDIDATES if c.accepted):
    MODEL_ATTRIBUTES[_candidate.tag] = f"stored_model_{_index}"
    setattr(SparsityService, MODEL_ATTRIBUTES[_candidate.tag], bentoml.models.BentoModel(_candidate.tag))

app = Starlette(routes=[Route("/docs", lambda request: RedirectResponse("/"), methods=["GET"])])
"""BentoML serves Swagger UI at / and the OpenAPI document at /docs.json; /docs points there."""
SparsityService = bentoml.asgi_app(app, path="/")(
    bentoml.service(
        name="sparsity_service",
        workers=settings.workers,
        traffic={"timeout": 60},
        # no OpenTelemetry spans for the prediction routes: its middleware wraps every body chunk (3 ms of a
        # 256-image JSON request, measured) and costs about 8% of a one-image request; no exporter is
        # configured by default anyway
        tracing={"excluded_urls": ["/mnist/", "/iris/", routes.MODELS_PATH]},  # regexes, searched in the URL
        logging={"access": {"enabled": settings.access_log, "skip_paths": ["/metrics", "/livez", "/readyz"]}},
        metrics={
            "enabled": True,
            "namespace": "bentoml_service",
            "duration": {"buckets": metrics.REQUEST_BUCKETS},
        },
    )(SparsityService)
)
SparsityService.add_asgi_middleware(
    RequestGuard,
    max_body_bytes=settings.max_body_bytes,
    max_drain_bytes=settings.max_drain_bytes,
    body_timeout=settings.body_timeout,
)
SparsityService.add_asgi_middleware(ModelRoutes)  # inside the guard: 415 and 413 are answered before it reads
SparsityService.add_asgi_middleware(Pages)  # / without BentoML's tracker, and the introspection page /ui
SparsityService.add_asgi_middleware(
    openapi.OpenAPIDocument,
    build=lambda: openapi.fix_document(SparsityService.openapi_spec.asdict(), version=__version__),
)
