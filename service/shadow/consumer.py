"""The shadow process's side: each mirrored request run on its candidate, compared, the figures written."""

from __future__ import annotations

import logging
import pickle
import socket
import time
from collections.abc import Callable

import numpy as np

from modelstore.compare import Compared, compare
from modelstore.runtime import Prediction
from predlog.rows import Entry
from service.logbook.writer import LogWriter
from service.shadow.series import PairMetrics
from service.shadow.spec import FLUSH_SECONDS, QUEUE_BYTES, ShadowSpec
from service.shadow.wire import CONFIG, ITEM, decode_item, item_id, joined, read_messages
from sparsity.errors import InvalidInputError

log = logging.getLogger(__name__)


class ShadowConsumer:
    """Runs each mirrored request on its candidate, compares, and writes the figures every ``flush_seconds`` and
    whenever the queue runs dry. ``load(tag)``: the candidate's runtime (the shadow process loads it from the
    store; in process, the worker's own)."""

    def __init__(
        self, load: Callable[[str], object], flush_seconds: float = FLUSH_SECONDS, logbook: LogWriter | None = None
    ) -> None:
        self.load = load
        self.logbook = logbook  # the prediction log: each candidate answer, role "shadow"
        self.flush_seconds = flush_seconds
        self.pairs: dict[str, tuple[ShadowSpec, object, PairMetrics]] = {}  # shadow id ->
        self._pending: dict[str, list[Compared]] = {}
        self._last_flush = time.monotonic()

    def configure(self, specs: dict[str, tuple[ShadowSpec, list[str]]]) -> None:
        """The shadows now mirrored (by id: the spec and the primary's layers); the others stop. A candidate
        loaded already (the same version, its share changed) is not loaded again."""
        loaded = {spec.candidate_tag: candidate for spec, candidate, _ in self.pairs.values() if candidate is not None}
        for shadow_id in [i for i in self.pairs if i not in specs]:
            self._pending.pop(shadow_id, None)
            self.pairs.pop(shadow_id)[2].forget()
        for shadow_id, (spec, primary_layers) in specs.items():
            if shadow_id in self.pairs:
                continue
            try:
                candidate = loaded.get(spec.candidate_tag) or self.load(spec.candidate_tag)
            except Exception as exc:  # the worker loaded it; a failure here is logged, its inputs counted failed
                log.warning("the shadow process could not load %s: %s", spec.candidate_tag, exc)
                candidate = None
            self.pairs[shadow_id] = (spec, candidate, PairMetrics(spec, primary_layers, candidate))

    def handle(self, shadow_id: str, x: np.ndarray, primary: Prediction) -> None:
        pair = self.pairs.get(shadow_id)
        if pair is None:
            return  # removed or replaced since it was queued
        spec, candidate, metrics = pair
        try:
            start = time.perf_counter()
            answer = candidate.predict(x)
            if self.logbook is not None:
                kept_x, kept = self.logbook.kept(x, answer)
                entry = Entry(time.time(), None, spec.name, spec.candidate, "shadow", "shadow", kept_x, kept,
                              time.perf_counter() - start)  # fmt: skip
                self.logbook.offer(entry)
        except InvalidInputError as exc:
            metrics.items["failed"].inc(len(x))
            log.warning("shadow %s refused a request the primary answered: %s", spec.candidate_tag, exc)
            return
        self._pending.setdefault(shadow_id, []).append(compare(primary, answer))
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        pending, self._pending = self._pending, {}
        for shadow_id, batch in pending.items():
            pair = self.pairs.get(shadow_id)
            if pair is not None:
                pair[2].write(batch)

    def run(self, sock: socket.socket, max_bytes: int = QUEUE_BYTES) -> None:
        """Serve the messages of ``sock`` (each at most ``max_bytes``) until the worker closes its end: the
        requests waiting together run on their candidate as one batch."""
        for batch in read_messages(sock, self.flush, max_bytes):
            waiting: dict[str, list] = {}
            for payload in batch:
                if payload[:1] == CONFIG:
                    self._run_together(waiting)
                    waiting = {}
                    self.flush()
                    self.configure(pickle.loads(payload[1:]))
                    continue
                pair = self.pairs.get(item_id(payload))
                if pair is None:
                    continue  # removed or replaced since it was queued
                spec, candidate, metrics = pair
                if candidate is None:
                    metrics.items["failed"].inc(ITEM.unpack_from(payload)[3])
                    continue
                waiting.setdefault(spec.id, []).append(
                    decode_item(payload, candidate.item_shape, metrics.primary_layers)
                )
            self._run_together(waiting)
        self.flush()

    def _run_together(self, waiting: dict[str, list]) -> None:
        for shadow_id, requests in waiting.items():
            xs = [x for x, _ in requests]
            x = xs[0] if len(xs) == 1 else np.concatenate(xs)
            self.handle(shadow_id, x, joined([primary for _, primary in requests]))
