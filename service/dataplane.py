"""The data plane: what the service does for a request, with no HTTP in it (MLServer's and KServe's
``DataPlane``). The routes are thin adapters on it (:mod:`service.rest.modelroutes` for ``/models`` and the
aliases' fast paths, the ``@bentoml.api`` aliases in :mod:`service.service`); the next protocol is one more.

- :meth:`DataPlane.infer` takes a model name (and optionally its version), the inputs as an array and the
  detail asked for, runs the model's one forward pass, records the metrics and returns the prediction;
  :meth:`DataPlane.infer_json` answers it as the JSON body of every route.
- Request bodies become arrays through the codecs (:mod:`service.codecs`): :meth:`decode`.
- Every refusal is a :class:`DataPlaneError` carrying its HTTP status, the field and the rule; an adapter
  turns it into its protocol's error, in one place each.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import numpy as np

from modelstore.audit import Candidate, NothingToServe, audit
from modelstore.card import ModelCardError
from modelstore.kinds import LoadOptions, load, prepare
from modelstore.replay import replay_problem
from modelstore.runtime import Prediction, Runtime
from predlog.rows import Entry
from service.batching import MAX_QUEUE, MAX_SIZE, WAIT_MS, Batcher, answers_alone
from service.codecs.json_inputs import inputs_from_json
from service.codecs.npy import decode_npy
from service.codecs.pictures import picture_to_input
from service.codecs.responses import DETAILS, predict_json
from service.errors import ExamplesHidden, InvalidInput, ModelNotFound, NotAPictureModel
from service.logbook.writer import LogWriter
from service.observability import metrics
from service.shadow.runner import ShadowRunner
from service.shadow.spec import QUEUE_BYTES, ShadowSpec, role_headers
from sparsity.errors import InvalidInputError
from sparsity.result import concatenate

log = logging.getLogger(__name__)


CODECS = ("json", "npy")
"""The request bodies :meth:`DataPlane.decode` reads (pictures: :meth:`DataPlane.decode_picture`)."""


class LoadProblem(Exception):
    """A stored model that could not be loaded, or did not reproduce its card: one line saying why."""


PREDICT_CHUNK = 256
"""Items per forward pass: a larger request runs in chunks of this many, so an engine's working memory (ONNX
Runtime's arena, TensorFlow's buffers) is that of 256 items whatever clients send. Measured, one worker serving
the default CNN on ONNX Runtime, after ten ``.npy`` requests of 1,000 digits: 688 MB resident in one pass, 309 MB
in chunks (167 MB at start; on the sparse engine 171 -> 178 MB either way). At 256 items a call's fixed cost is
under 1% of the call."""


def predict_in_chunks(runtime: Runtime, x: np.ndarray, chunk: int = PREDICT_CHUNK) -> Prediction:
    """``runtime.predict`` over ``x`` in chunks of ``chunk`` items, as one prediction (every item's answer is the
    one it gets alone: no engine mixes the items of a batch)."""
    if len(x) <= chunk:
        return runtime.predict(x)
    return concatenate([runtime.predict(x[i : i + chunk]) for i in range(0, len(x), chunk)])


class DataPlane:
    """The loaded models of one worker, which of them answer, and what is done with them.

    A model is *loaded* (a runtime in memory, checked) before it *serves* (its name's routes and its version's
    routes find it); :meth:`switch` changes what serves in one step, so a request sees the old set or the new
    one, never a half. Of several serving versions of a name, the newest stored answers the unversioned routes,
    unless a shadow pins its primary (:mod:`service.shadow`).
    """

    def __init__(
        self,
        max_image_pixels: int,
        max_unit_series: int = 1024,
        expose_examples: bool = True,
        shadow_queue_bytes: int = QUEUE_BYTES,
        batching: tuple[int, float, int] = (MAX_SIZE, WAIT_MS, MAX_QUEUE),
        logbook: LogWriter | None = None,
    ) -> None:
        self.max_image_pixels = max_image_pixels
        self.expose_examples = expose_examples
        self.loaded: dict[str, Runtime] = {}  # tag -> runtime
        self.serving: dict[str, list[Runtime]] = {}  # name -> its serving versions, newest first
        self.refused: list[dict] = []
        self.recorder = metrics.Recorder(max_unit_series=max_unit_series)
        self._in_flight: dict[str, int] = {}
        self._lock = threading.Lock()
        self.shadow_specs: dict[str, ShadowSpec] = {}  # name -> its shadow or canary, as the served set says
        self.shadows = ShadowRunner(self, shadow_queue_bytes)
        self.batcher = Batcher(self.infer, *batching, refused=self.recorder.refused)
        self.logbook = logbook if logbook is not None else LogWriter(None)
        """The prediction log and the drift windows (:mod:`service.logbook`): every answered request is offered."""

    def load_one(self, candidate: Candidate, stored, options: LoadOptions) -> Runtime:
        """Load an audited candidate from its stored model, warm it up and replay its card's examples
        (:mod:`modelstore.replay`); LoadProblem says why not. Does not serve it."""
        try:
            prepare([candidate.card.kind], options)
            runtime = load(stored, candidate.card, options)
            runtime.warm_up()
            problem = replay_problem(runtime)
        except (ModelCardError, InvalidInputError) as exc:  # the file passed the audit but not the loader
            raise LoadProblem(str(exc)) from None
        if problem is not None:
            raise LoadProblem(problem)
        created = getattr(getattr(stored, "info", None), "creation_time", None)
        runtime.created = created.timestamp() if created is not None else time.time()
        return runtime

    def load_tag(self, tag: str, stored_of: Callable[[str], object], options: LoadOptions) -> Runtime:
        """:meth:`load_one` of a stored tag, audited first (a load while serving)."""
        candidate = audit(tag)
        if not candidate.accepted:
            raise LoadProblem(candidate.problem)
        return self.load_one(candidate, stored_of(tag), options)

    @staticmethod
    def audited(tags: Iterable[str]) -> list[Candidate]:
        """The stored tags, audited (a worker's start: what the other workers serve)."""
        return [audit(tag) for tag in tags]

    def start(
        self,
        candidates: Iterable[Candidate],
        stored_of: Callable[[str], object],
        options: LoadOptions,
        allow_empty: bool = False,
    ) -> list[dict]:
        """Load every accepted candidate (``stored_of(tag)``: its BentoML model) and serve them; a model that
        fails is refused, not fatal. NothingToServe when none loads (unless ``allow_empty``: every model was
        unloaded on purpose). Returns the refusals."""
        candidates = list(candidates)
        self.refused = [{"tag": c.tag, "reason": c.problem} for c in candidates if not c.accepted]
        accepted = [c for c in candidates if c.accepted]
        prepare((c.card.kind for c in accepted), options)
        loaded: list[Runtime] = []
        for candidate in accepted:
            try:
                loaded.append(self.load_one(candidate, stored_of(candidate.tag), options))
            except LoadProblem as exc:
                log.warning("not serving %s", exc)
                self.refused.append({"tag": candidate.tag, "reason": str(exc)})
        if not loaded and not allow_empty:
            raise NothingToServe("no model could be loaded: " + "; ".join(r["reason"] for r in self.refused))
        self.use(loaded)
        return self.refused

    def use(self, runtimes: Iterable[Runtime]) -> None:
        """Serve these loaded runtimes (besides those serving already), each with its metrics."""
        runtimes = list(runtimes)
        for runtime in runtimes:
            self.loaded[runtime.tag] = runtime
            runtime.batchable = answers_alone(runtime)  # (checked once, before it serves)
            self.logbook.monitors.watch(runtime)
            if not runtime.batchable:
                log.info("%s answers a batch's items otherwise than alone (engine %s): its requests are not batched",
                         runtime.tag, runtime.engine)  # fmt: skip
        self.switch([*self.serving_tags(), *(r.tag for r in runtimes)])

    def switch(self, tags: Iterable[str], shadows: dict[str, ShadowSpec] | None = None) -> None:
        """Serve exactly these loaded tags from now on (unknown tags are skipped), with these shadows (None:
        the same as before). A shadow's primary answers its name, whichever version is newer."""
        if shadows is not None:
            self.shadow_specs = dict(shadows)
        serving: dict[str, list[Runtime]] = {}
        for tag in dict.fromkeys(tags):
            runtime = self.loaded.get(tag)
            if runtime is not None:
                self.recorder.add(runtime)
                serving.setdefault(runtime.name, []).append(runtime)
        for name, versions in serving.items():
            spec = self.shadow_specs.get(name)
            pinned = None if spec is None else spec.primary_tag
            versions.sort(key=lambda r: (r.tag == pinned, r.created, r.version), reverse=True)
        self.serving = serving  # one assignment: a request sees the old set or the new one
        self.shadows.configure(self.shadow_specs)

    def serving_tags(self) -> list[str]:
        return [runtime.tag for versions in self.serving.values() for runtime in versions]

    def release(self, tag: str, drain_seconds: float = 30.0) -> None:
        """Forget a loaded version that no longer serves, once its requests in flight have ended (at most
        ``drain_seconds``); its metrics go with it."""
        if tag in self.serving_tags():
            raise ValueError(f"{tag} is serving; switch it out first")
        deadline = time.monotonic() + drain_seconds
        while self._in_flight.get(tag, 0) > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.loaded.pop(tag, None)
        self.recorder.forget(tag)

    # --- what is served

    def models(self) -> dict:
        """Every serving version's card (by name, newest first), and the refused ones."""
        cards = [runtime.info for name in sorted(self.serving) for runtime in self.serving[name]]
        return {"models": cards, "refused": self.refused}

    def model(self, name: str, version: str | None = None) -> Runtime:
        """The serving runtime of ``name``: ``version``, or the newest."""
        versions = self.serving.get(name)
        if versions:
            if version is None:
                return versions[0]
            for runtime in versions:
                if runtime.version == version:
                    return runtime
        raise ModelNotFound(name, version)

    def choose(self, name: str, key: bytes | None = None) -> tuple[Runtime, tuple]:
        """The runtime that answers a request to ``name`` (a canary's candidate for its share of them, sticky by
        ``key``) and the headers that say which, when ``name`` has a shadow or a canary (else none)."""
        primary = self.model(name)
        if name not in self.shadow_specs:
            return primary, ()
        chosen = self.shadows.choose(name, key)
        if chosen is not None and chosen[1] == "candidate":
            candidate = self.loaded.get(chosen[0].candidate_tag)
            if candidate is not None:
                return candidate, role_headers(candidate, "candidate")
        return primary, role_headers(primary, "primary")

    @contextmanager
    def using(self, runtime: Runtime) -> Iterator[Runtime]:
        """Count ``runtime`` in flight while the block runs (a release waits for it)."""
        tag = runtime.tag
        with self._lock:
            self._in_flight[tag] = self._in_flight.get(tag, 0) + 1
        try:
            yield runtime
        finally:
            with self._lock:
                self._in_flight[tag] -= 1

    def versions(self, name: str) -> list[str]:
        """The serving versions of ``name``, newest first."""
        return [runtime.version for runtime in self.serving.get(name, [])]

    def card(self, name: str) -> dict:
        return self.model(name).info

    def examples(self, name: str) -> dict:
        card = self.model(name).card
        if not self.expose_examples:
            raise ExamplesHidden
        return {"inputs": card.examples or [], "labels": card.example_labels}

    # --- bodies to inputs

    def decode(self, runtime: Runtime, body: bytes, codec: str, json_key: str = "inputs") -> np.ndarray:
        """A request body (``codec``: one of :data:`CODECS`) as the model's input batch; InvalidInput names the
        field and the rule."""
        try:
            if codec == "npy":
                return decode_npy(body, runtime.item_shape, runtime.value_range)
            return inputs_from_json(body, runtime.item_shape, runtime.value_range, key=json_key)
        except InvalidInputError as exc:
            raise InvalidInput.of(exc) from None

    def decode_picture(self, runtime: Runtime, data: bytes) -> np.ndarray:
        """One uploaded PNG/JPEG as a batch of one input, by the step the model's card declares."""
        if not runtime.card.image_shaped:
            raise NotAPictureModel(runtime)
        step = getattr(runtime.card, "preprocessing", None)
        try:
            return picture_to_input(data, runtime.item_shape, runtime.value_range, step, self.max_image_pixels)[None]
        except InvalidInputError as exc:
            raise InvalidInput.of(exc) from None

    # --- inference

    def infer(
        self, runtime: Runtime, x: np.ndarray, waits: list[float] | None = None, origin: tuple | None = None
    ) -> Prediction:
        """One forward pass with its sparsity, recorded in the metrics (``waits``: each request's time in the
        queue, for a batching pass), and offered to the runtime's shadow if it has one (a queue append). With
        ``origin`` (a request's route and id, :meth:`keep`), offered to the prediction log. Raises InvalidInput."""
        with self.using(runtime):
            start = time.perf_counter()
            try:
                prediction = predict_in_chunks(runtime, x)
            except InvalidInputError as exc:
                raise InvalidInput.of(exc) from None
            self.recorder.record(runtime, prediction, time.perf_counter() - start, waits)
        if self.shadows.mirrors:
            self.shadows.offer(runtime, x, prediction)
        if origin is not None:
            self.keep(runtime, x, prediction, time.perf_counter() - start, origin)
        return prediction

    async def infer_batched(self, runtime: Runtime, x: np.ndarray, origin: tuple | None = None) -> Prediction:
        """:meth:`infer` on the event loop, its pass shared with the requests queued for the same version
        (:mod:`service.batching`; with batching off, at once). Raises InvalidInput or Overloaded (503)."""
        if not self.batcher.on:
            return self.infer(runtime, x, origin=origin)
        start = time.perf_counter()
        with self.using(runtime):  # counted in flight while it waits, so its version is not released under it
            prediction = await self.batcher.infer(runtime, x)
        if origin is not None:
            self.keep(runtime, x, prediction, time.perf_counter() - start, origin)
        return prediction

    def keep(self, runtime: Runtime, x: np.ndarray, prediction: Prediction, latency: float, origin: tuple) -> None:
        """Offer an answered request to the prediction log: ``origin`` is ``(route family, request id or None)``;
        the role is the canary's candidate when this version is its name's canary, else the primary."""
        spec = self.shadow_specs.get(runtime.name) if self.shadow_specs else None
        role = "canary" if spec is not None and spec.candidate_tag == runtime.tag else "primary"
        book = self.logbook
        x, kept = book.kept(x, prediction)
        book.offer(Entry(time.time(), origin[1], runtime.name, runtime.version, role, origin[0], x, kept, latency))

    def infer_json(
        self, runtime: Runtime, x: np.ndarray, detail: str | None = None, origin: tuple | None = None
    ) -> bytes:
        """:meth:`infer` answered as the JSON body every prediction route gives."""
        return predict_json(runtime, self.infer(runtime, x, origin=origin), detail)

    @staticmethod
    def check_detail(values: list[str]) -> str | None:
        """The ``detail`` asked for (none, or one of :data:`~service.codecs.responses.DETAILS`)."""
        if not values:
            return None
        if len(values) > 1 or values[0] not in DETAILS:
            raise InvalidInput(f"must be one of: {', '.join(DETAILS)}; got {', '.join(values)!s}", "detail")
        return values[0]
