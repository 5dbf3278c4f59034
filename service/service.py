"""The BentoML service: every registered model, each prediction answered with the activation sparsity
of its own forward pass.

What is served and how it is built: :mod:`service.app` (settings, the audited models, the data plane, the
middlewares). Importing this module runs that construction once, because ``bentoml serve`` and ``bentoml
build`` need the service class with its models declared at import; a bad setting or an empty store stops it
there with one line and exit status 2. In each worker the service loads the models into the data plane
(:mod:`service.dataplane`). The ``@bentoml.api`` endpoints below are the project's first routes, kept as
aliases: thin adapters that decode through BentoML's validation and answer through the data plane.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import bentoml
import numpy as np

from service import app, routes
from service.codecs.responses import predict_response
from service.errors import DataPlaneError
from service.observability import logs, watchdog
from service.repository.manager import Poller
from service.repository.state import WorkerSync
from service.schemas import Images, IrisRows, PredictResponse, input_error

IN_WORKER = bentoml.server_context.worker_index is not None
CONFIGURATION = app.configure_or_exit(IN_WORKER)
STATE = app.shared_state(CONFIGURATION, IN_WORKER)
"""The served set every worker follows (:mod:`service.repository`)."""
PLANE = app.plane_for(CONFIGURATION)
"""This process's data plane: the model routes (a middleware) and the endpoints below both answer through it."""
MANAGER = app.manager_for(CONFIGURATION, STATE)
"""Loads and unloads versions in every worker (the repository routes)."""
INLINE_MAX_ITEMS = 8
"""Batches up to this size run on the event loop; larger ones in a worker thread."""


@contextmanager
def refusing() -> Iterator[None]:
    """Turn the data plane's refusal into the aliases' error: a 400 as a pydantic-shaped ValidationError (what
    BentoML's own validation of these endpoints gives), a 404 as BentoML's NotFound."""
    try:
        yield
    except DataPlaneError as exc:
        if exc.status == 404:
            raise bentoml.exceptions.NotFound(exc.message) from None
        raise input_error((exc.field,), exc.message) from None


class SparsityService:
    """Serves every registered ReLU-family model (and linear classifier) with activation sparsity."""

    def __init__(self) -> None:
        self._ready = False
        if IN_WORKER:
            watchdog.exit_with_parent()
            self._blas = app.limit_numpy_threads(CONFIGURATION.settings.numpy_threads)
        self.plane = PLANE
        worker = bentoml.server_context.worker_index or 1
        desired = STATE.read()  # what the other workers serve: the audited models, or what loads changed since
        candidates = [c for c in CONFIGURATION.candidates if not c.accepted] + PLANE.audited(desired.ready())
        refused = PLANE.start(candidates, self._stored, CONFIGURATION.load_options, allow_empty=desired.generation > 1)
        self.sync = WorkerSync(STATE, PLANE, worker, self._load)
        self.sync.apply()  # acknowledges this worker's start (and loads a version another worker is loading)
        self.sync.start()
        if IN_WORKER:
            PLANE.logbook.start()
        if CONFIGURATION.settings.poll_seconds and worker == 1:
            Poller(MANAGER, CONFIGURATION.settings.poll_seconds).start()
        self._ready = True
        logs.log_summary(
            [r for versions in PLANE.serving.values() for r in versions],
            refused,
            CONFIGURATION.settings.workers,
            bentoml.server_context.worker_index,
        )

    def _stored(self, tag: str):
        """The stored model of ``tag``: a declared class attribute (bundled by ``bentoml build``), else the store's."""
        attribute = MODEL_ATTRIBUTES.get(tag)
        return getattr(self, attribute) if attribute else bentoml.models.get(tag)

    def _load(self, tag: str):
        """A version a load asks for, audited, loaded and checked (not serving yet)."""
        return PLANE.load_tag(tag, self._stored, CONFIGURATION.load_options)

    def __is_ready__(self) -> bool:
        return self._ready

    def _answer(self, route: routes.RouteSpec, x: np.ndarray) -> PredictResponse:
        with refusing():  # service.rest.modelroutes answers an unknown model's 404 before an alias endpoint
            runtime, _ = self.plane.choose(route.model)  # a canary's split at random: no header reaches here
            return predict_response(runtime, self.plane.infer(runtime, x, origin=(route.path, None)))

    @bentoml.api(route=routes.MNIST_PREDICT.path)
    async def mnist_predict(self, images: Images) -> PredictResponse:
        """Classify 1-1024 28x28 images (values in [0, 1]) with mnist_cnn; each answer carries its sparsity.
        The same as POST /models/mnist_cnn/predict with {"inputs": images}."""
        pixels = np.asarray(images, dtype=np.float32)
        if len(pixels) <= INLINE_MAX_ITEMS:
            # well under a millisecond of model time: cheaper than a hand-off to the thread pool
            return self._answer(routes.MNIST_PREDICT, pixels)
        return await anyio.to_thread.run_sync(self._answer, routes.MNIST_PREDICT, pixels)

    @bentoml.api(route=routes.MNIST_PREDICT_IMAGE.path)
    def mnist_predict_image(self, image: Path) -> PredictResponse:
        """Classify one uploaded PNG or JPEG with mnist_cnn, converted as its card declares (mnist-digit:
        grey, white on black, centred). The same as POST /models/mnist_cnn/predict_image.

        The format is read from the file's bytes, not from the part's Content-Type, so an upload
        sent as application/octet-stream works too."""
        with refusing():
            runtime = self.plane.model(routes.MNIST_PREDICT_IMAGE.model)
            batch = self.plane.decode_picture(runtime, Path(image).read_bytes())
        return self._answer(routes.MNIST_PREDICT_IMAGE, batch)

    @bentoml.api(route=routes.IRIS_PREDICT.path)
    async def iris_predict(self, features: IrisRows) -> PredictResponse:
        """Classify 1-1024 iris rows with iris_l1; each answer carries weight and contribution sparsity.
        The same as POST /models/iris_l1/predict with {"inputs": features}."""
        # a linear model on at most 1024 x 4 numbers: well under a millisecond, run on the event loop
        return self._answer(routes.IRIS_PREDICT, np.asarray(features, dtype=np.float64))


MODEL_ATTRIBUTES = app.declare_models(SparsityService, CONFIGURATION)
"""Each served tag's class attribute: only class attributes are bundled by ``bentoml build``."""
SparsityService = app.serve(SparsityService, CONFIGURATION, PLANE, MANAGER)
