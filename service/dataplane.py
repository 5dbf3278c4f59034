"""The data plane: what the service does for a request, with no HTTP in it (MLServer's and KServe's
``DataPlane``). The routes are thin adapters on it (:mod:`service.modelroutes` for ``/models`` and the
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
import time
from collections.abc import Callable, Iterable

import numpy as np

from modelstore.audit import Candidate, NothingToServe
from modelstore.card import ModelCardError
from modelstore.kinds import LoadOptions, load, prepare
from modelstore.runtime import Prediction, Runtime
from service import metrics
from service.codecs.json_inputs import inputs_from_json
from service.codecs.npy import decode_npy
from service.codecs.pictures import picture_to_input
from service.codecs.responses import DETAILS, predict_json
from sparsity.errors import InvalidInputError

log = logging.getLogger(__name__)


class DataPlaneError(Exception):
    """A request the data plane refuses: ``status`` (HTTP's), ``field`` and the rule (``message``)."""

    status = 400
    kind = "invalid_input"

    def __init__(self, message: str, field: str) -> None:
        super().__init__(f"{field}: {message}")
        self.message, self.field = message, field


class InvalidInput(DataPlaneError):
    @classmethod
    def of(cls, exc: InvalidInputError) -> InvalidInput:
        return cls(exc.rule, exc.field)


class ModelNotFound(DataPlaneError):
    status = 404
    kind = "model_not_found"

    def __init__(self, name: str, version: str | None = None) -> None:
        which = f"{name!r}" if version is None else f"{name!r} in version {version!r}"
        super().__init__(f"no model named {which} is served (GET /models lists them)", "model")


class NotAPictureModel(DataPlaneError):
    status = 404
    kind = "not_a_picture_model"

    def __init__(self, runtime: Runtime) -> None:
        rule = f"model {runtime.name!r} takes inputs of shape {runtime.item_shape}, not pictures; use predict"
        super().__init__(rule, "model")


CODECS = ("json", "npy")
"""The request bodies :meth:`DataPlane.decode` reads (pictures: :meth:`DataPlane.decode_picture`)."""


class DataPlane:
    """The served models of one worker and what is done with them."""

    def __init__(self, max_image_pixels: int) -> None:
        self.max_image_pixels = max_image_pixels
        self.runtimes: dict[str, Runtime] = {}
        self.refused: list[dict] = []
        self.recorder: metrics.Recorder | None = None

    def start(
        self, candidates: Iterable[Candidate], stored_of: Callable[[str], object], options: LoadOptions
    ) -> list[dict]:
        """Load every accepted candidate (``stored_of(tag)``: its BentoML model) and warm it up; a model that
        fails is refused, not fatal. NothingToServe when none loads. Returns the refusals."""
        candidates = list(candidates)
        self.refused = [{"tag": c.tag, "reason": c.problem} for c in candidates if not c.accepted]
        accepted = [c for c in candidates if c.accepted]
        prepare((c.card.kind for c in accepted), options)
        loaded: list[Runtime] = []
        for candidate in accepted:
            try:
                runtime = load(stored_of(candidate.tag), candidate.card, options)
                runtime.warm_up()
            except ModelCardError as exc:  # the file passed the audit but not Keras' safe mode, or the card lies
                log.warning("not serving %s", exc)
                self.refused.append({"tag": candidate.tag, "reason": str(exc)})
                continue
            loaded.append(runtime)
        if not loaded:
            raise NothingToServe("no model could be loaded: " + "; ".join(r["reason"] for r in self.refused))
        self.use(loaded)
        return self.refused

    def use(self, runtimes: Iterable[Runtime]) -> None:
        """Serve these loaded runtimes (by name), each with its metrics."""
        self.runtimes = {runtime.name: runtime for runtime in runtimes}
        self.recorder = metrics.Recorder(self.runtimes.values())

    # --- what is served

    def models(self) -> dict:
        """Every served model's card (by name), and the refused ones."""
        models = sorted(self.runtimes.values(), key=lambda runtime: runtime.name)
        return {"models": [runtime.info for runtime in models], "refused": self.refused}

    def model(self, name: str, version: str | None = None) -> Runtime:
        runtime = self.runtimes.get(name)
        if runtime is None or (version is not None and runtime.tag.split(":", 1)[1] != version):
            raise ModelNotFound(name, version)
        return runtime

    def card(self, name: str) -> dict:
        return self.model(name).info

    def examples(self, name: str) -> dict:
        card = self.model(name).card
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

    def infer(self, runtime: Runtime, x: np.ndarray) -> Prediction:
        """One forward pass with its sparsity, recorded in the metrics. Raises InvalidInput."""
        start = time.perf_counter()
        try:
            prediction = runtime.predict(x)
        except InvalidInputError as exc:
            raise InvalidInput.of(exc) from None
        self.recorder.record(runtime, prediction, time.perf_counter() - start)
        return prediction

    def infer_json(self, runtime: Runtime, x: np.ndarray, detail: str | None = None) -> bytes:
        """:meth:`infer` answered as the JSON body every prediction route gives."""
        return predict_json(runtime, self.infer(runtime, x), detail)

    @staticmethod
    def check_detail(values: list[str]) -> str | None:
        """The ``detail`` asked for (none, or one of :data:`~service.codecs.responses.DETAILS`)."""
        if not values:
            return None
        if len(values) > 1 or values[0] not in DETAILS:
            raise InvalidInput(f"must be one of: {', '.join(DETAILS)}; got {', '.join(values)!s}", "detail")
        return values[0]
