"""A worker's side: which requests are mirrored, which name has a canary, and the shadow process that reads them."""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import random
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelstore.compare import SIDES, IncomparableVersions, check_pair
from service.observability.metrics import remove_child
from service.shadow.consumer import ShadowConsumer
from service.shadow.series import CANARY_REQUESTS, SHADOW_ITEMS, SHADOW_SHARE
from service.shadow.spec import ACTIVE, QUEUE_BYTES, ShadowSpec, answers_candidate
from service.shadow.wire import CONFIG, ShadowQueue, encode_item, socket_pair

log = logging.getLogger(__name__)


@dataclass
class _Mirror:
    spec: ShadowSpec
    layers: list[str]  # the primary's, in the order its frames carry them
    mirrored: object  # the worker's counters of this shadow
    dropped: object


class ShadowRunner:
    """One worker's shadows: which primary's requests are mirrored (:meth:`offer`, on the request's path: one
    frame of the inputs and the answer, :mod:`service.shadow.wire`, to a socket), which name has a canary
    (:meth:`choose`), and the shadow process that reads it.

    The comparisons run in a process of their own at the lowest CPU priority (``SCHED_IDLE``): a thread would share
    the worker's GIL, and a low-priority thread holding it stalls the requests (measured: -40% throughput at 16
    connections). ``in_process``: a thread instead, on the worker's own runtimes (the unit tests)."""

    def __init__(self, plane, queue_bytes: int = QUEUE_BYTES, in_process: bool = False) -> None:
        self.plane = plane
        self.queue_bytes = queue_bytes
        self.in_process = in_process
        self.options = None  # LoadOptions for the shadow process (set by the service)
        self.mirrors: dict[str, _Mirror] = {}  # primary tag -> its mirror (replaced whole, read without a lock)
        self.canaries: dict[str, ShadowSpec] = {}  # name -> canary spec
        self.queue: ShadowQueue | None = None
        self.process: subprocess.Popen | None = None
        self.consumer: ShadowConsumer | None = None

    def configure(self, specs: dict[str, ShadowSpec]) -> None:
        """Follow these specs (by name): inactive ones, and ones whose versions are not loaded here, are skipped; a
        removed shadow stops at once (no request is mirrored after this returns; its queued inputs are skipped)."""
        mirrors, canaries, layers = {}, {}, {}
        for spec in specs.values():
            primary = self.plane.loaded.get(spec.primary_tag)
            candidate = self.plane.loaded.get(spec.candidate_tag)
            if spec.state != ACTIVE or primary is None or candidate is None:
                continue
            try:
                check_pair(primary, candidate)
            except IncomparableVersions as exc:
                log.warning("shadow of %s not applied: %s", spec.name, exc)
                continue
            if spec.mode == "canary":
                canaries[spec.name] = spec
                for side in SIDES:
                    CANARY_REQUESTS.labels(*spec.labels, side)
            else:
                old = self.mirrors.get(spec.primary_tag)
                if old is not None and old.spec == spec:
                    mirrors[spec.primary_tag] = old
                else:
                    counters = [SHADOW_ITEMS.labels(*spec.labels, outcome) for outcome in ("mirrored", "dropped")]
                    mirrors[spec.primary_tag] = _Mirror(spec, list(primary.layers), *counters)
                layers[spec.id] = (spec, list(primary.layers))
            SHADOW_SHARE.labels(*spec.labels, spec.mode).set(spec.share)
        before = {m.spec.id for m in self.mirrors.values()}
        if self.process is not None and self.process.poll() is not None:
            log.warning("shadow process %s exited (%s): starting another", self.process.pid, self.process.returncode)
            self.stop()
            before = set()
        if layers and self.queue is None:
            self._start()
        if self.queue is not None and set(layers) != before:  # before any request is mirrored to a new shadow
            try:
                self.queue.send(CONFIG + pickle.dumps(layers, protocol=pickle.HIGHEST_PROTOCOL))
            except OSError as exc:
                log.warning("the shadows could not be changed in the shadow process: %s", exc)
        kept = {m.spec.id for m in mirrors.values()} | {c.id for c in canaries.values()}
        gone = [
            spec for spec in [*(m.spec for m in self.mirrors.values()), *self.canaries.values()] if spec.id not in kept
        ]
        self.mirrors, self.canaries = mirrors, canaries
        for spec in gone:
            for outcome in ("mirrored", "dropped", *SIDES):
                remove_child(SHADOW_ITEMS, (*spec.labels, outcome))
                remove_child(CANARY_REQUESTS, (*spec.labels, outcome))
            remove_child(SHADOW_SHARE, (*spec.labels, spec.mode))

    def _start(self) -> None:
        ours, theirs = socket_pair(self.queue_bytes)
        self.queue = ShadowQueue(ours)
        if self.in_process:
            self.consumer = ShadowConsumer(lambda tag: self.plane.loaded[tag])
            threading.Thread(target=self._consume, args=(theirs,), name="shadow", daemon=True).start()
            return
        options = pickle.dumps(self.options, protocol=pickle.HIGHEST_PROTOCOL).hex() if self.options else ""
        root = str(Path(__file__).resolve().parents[1])  # where ``service`` is, wherever the worker runs from
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "SHADOW_LOAD_OPTIONS": options, "SHADOW_MESSAGE_BYTES": str(self.queue.capacity)}
        env["PYTHONPATH"] = path
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.shadow.process"], stdin=theirs.fileno(), env=env, close_fds=True
        )
        theirs.close()
        log.info("shadow process %s started", self.process.pid)

    def _consume(self, sock: socket.socket) -> None:
        with sock:
            self.consumer.run(sock, self.queue.capacity)

    def offer(self, runtime, x: np.ndarray, prediction) -> None:
        """Queue a primary's request for its candidate (``share`` of them), or count it dropped: a few
        microseconds and one message to a socket, on the request's path."""
        mirror = self.mirrors.get(runtime.tag)
        if mirror is None:
            return
        spec = mirror.spec
        if spec.share < 1.0 and random.random() >= spec.share:
            return
        queued = self.queue is not None and self.queue.offer(encode_item(spec.id, x, prediction, mirror.layers))
        (mirror.mirrored if queued else mirror.dropped).inc(len(x))

    def choose(self, name: str, key: bytes | None):
        """The canary of ``name`` and which side answers this request, or None without a canary."""
        spec = self.canaries.get(name)
        if spec is None:
            return None
        side = "candidate" if answers_candidate(spec, key) else "primary"
        CANARY_REQUESTS.labels(*spec.labels, side).inc()
        return spec, side

    def stop(self) -> None:
        """Close the socket: the shadow process writes what it has and exits."""
        if self.queue is not None:
            self.queue.close()
            self.queue = None
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
            self.process = None
