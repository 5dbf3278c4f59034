"""Shadows and canaries: a candidate version beside the version that answers a name (the *primary*).

- **mirror** (a shadow): ``share`` of the requests the primary answers also run on the candidate, off the
  request's path. Each worker has one shadow process (:mod:`service.shadow_process`) that runs only on CPU time
  nothing else wants (``SCHED_IDLE``), fed through a socket whose send buffer is the bounded queue
  (``SHADOW_QUEUE_BYTES``): a request only sends its inputs and the primary's answer as one message
  (microseconds), and when there is no room they are dropped and counted, never the primary's work. The two
  answers are compared (:mod:`modelstore.compare`) and the figures go to Prometheus series per pair, which every
  process writes and the ``GET`` reads back summed over all of them, so the answer, ``/metrics`` and an offline
  ``compare`` agree.
- **canary**: ``share`` of the requests to the name are answered by the candidate instead. A request with the
  header ``X-Canary-Key`` always lands on the same side for the same key (a hash of the key, the name and the
  candidate version), in every worker and replica; without one, each request is drawn at random. The answer
  says which version answered and as what (``X-Model-Version``, ``X-Model-Role``).

The spec of each name's shadow lives in the shared served set (:mod:`service.repository`), so every worker
follows it within ``SYNC_SECONDS``; setting one never changes the primary (it is pinned while the shadow lasts).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import pickle
import random
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from modelstore.compare import SIDES, Compared, IncomparableVersions, Totals, check_pair, compare, unit_widths
from modelstore.runtime import Prediction
from service.metrics import RATIO_BUCKETS, observe_many, remove_child
from sparsity.contract import ALL_LAYERS
from sparsity.errors import InvalidInputError

log = logging.getLogger(__name__)

MODES = ("mirror", "canary")
LOADING, ACTIVE = "loading", "active"
CANARY_HEADER = b"x-canary-key"
QUEUE_BYTES = 1 << 20
"""A worker's shadow queue (the send buffer of the socket to its shadow process): about 300 one-image requests."""
FLUSH_SECONDS = 1.0
SHADOW_NICE = 19
"""The shadow thread's niceness: under load the kernel gives it what the request threads leave."""

PAIR = ["model", "primary", "candidate", "shadow_id"]
OUTCOMES = ("mirrored", "dropped", "compared", "failed")
SHADOW_ITEMS = Counter(
    "shadow_items",
    "Inputs of a shadowed model's requests, by outcome: mirrored (queued for the candidate), dropped (the queue "
    "was full), compared, failed (the candidate refused them)",
    [*PAIR, "outcome"],
)
SHADOW_AGREEMENTS = Counter("shadow_label_agreements", "Compared inputs both versions gave the same label", PAIR)
SHADOW_TOTAL_VARIATION = Histogram(
    "shadow_probability_total_variation",
    "Per compared input, the total variation distance between the two versions' probabilities",
    PAIR,
    buckets=RATIO_BUCKETS,
)
SHADOW_SPARSITY = Histogram(
    "shadow_activation_sparsity_ratio",
    "Per compared input, each layer's exact-zero share in the primary and in the candidate (side)",
    [*PAIR, "side", "layer"],
    buckets=RATIO_BUCKETS,
)
SHADOW_ATYPICAL = Counter(
    "shadow_atypical", "Compared inputs flagged atypical by the primary, the candidate, or both (side)", [*PAIR, "side"]
)
SHADOW_UNIT_FIRED = Counter(
    "shadow_candidate_unit_fired", "Compared inputs each candidate unit fired on", [*PAIR, "layer", "unit"]
)
SHADOW_SHARE = Gauge(
    "shadow_share", "The share of a name's requests mirrored to (or answered by) the candidate", [*PAIR, "mode"],
    multiprocess_mode="max",
)  # fmt: skip
CANARY_REQUESTS = Counter("canary_requests", "Requests of a canary split, by the side that answered", [*PAIR, "side"])


class ShadowError(ValueError):
    """A shadow request that cannot be done: ``status`` (HTTP's), ``field`` and one line saying why."""

    def __init__(self, message: str, field: str = "body", status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.message, self.field, self.status = message, field, status


@dataclass(frozen=True)
class ShadowSpec:
    """One name's shadow or canary, as the shared served set holds it."""

    name: str
    primary: str  # version
    candidate: str  # version
    share: float
    mode: str = "mirror"
    id: str = ""
    since: float = 0.0
    state: str = ACTIVE  # loading: the candidate is being loaded everywhere (the primary is pinned already)
    loaded: bool = False  # the shadow loaded its candidate: removing the shadow unloads it

    @property
    def primary_tag(self) -> str:
        return f"{self.name}:{self.primary}"

    @property
    def candidate_tag(self) -> str:
        return f"{self.name}:{self.candidate}"

    @property
    def labels(self) -> tuple[str, str, str, str]:
        return self.name, self.primary, self.candidate, self.id

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "name"}

    @classmethod
    def from_json(cls, name: str, data: dict) -> ShadowSpec:
        return cls(name=name, **data)

    def activated(self) -> ShadowSpec:
        return replace(self, state=ACTIVE)


def check_share(value, field: str = "share") -> float:
    """A share: a number from 0 to 1 (ShadowError otherwise)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not 0 <= value <= 1:
        raise ShadowError(f"must be a number from 0 to 1; got {value!r}", field)
    return float(value)


def check_mode(value, field: str = "mode") -> str:
    if value not in MODES:
        raise ShadowError(f"must be one of {', '.join(MODES)}; got {value!r}", field)
    return value


def sticky_draw(key: bytes, name: str, candidate: str) -> float:
    """A number in [0, 1) fixed by the key, the name and the candidate version (a canary's sticky split)."""
    digest = hashlib.blake2b(b"\0".join((name.encode(), candidate.encode(), key)), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def canary_key(headers) -> bytes | None:
    """The ``X-Canary-Key`` of an ASGI request's headers, or None."""
    for header, value in headers:
        if header == CANARY_HEADER:
            return value
    return None


def answers_candidate(spec: ShadowSpec, key: bytes | None) -> bool:
    """Whether a canary's request is answered by the candidate: sticky by key, else at random."""
    draw = sticky_draw(key, spec.name, spec.candidate) if key else random.random()
    return draw < spec.share


def role_headers(runtime, role: str) -> tuple[tuple[bytes, bytes], ...]:
    return (b"x-model-version", runtime.version.encode()), (b"x-model-role", role.encode())


class PairMetrics:
    """The label children of one shadow where its comparisons are made (the shadow process)."""

    def __init__(self, spec: ShadowSpec, primary_layers: list[str], candidate) -> None:
        labels = spec.labels
        self.labels = labels
        self.items = {outcome: SHADOW_ITEMS.labels(*labels, outcome) for outcome in ("compared", "failed")}
        self.agreements = SHADOW_AGREEMENTS.labels(*labels)
        self.total_variation = SHADOW_TOTAL_VARIATION.labels(*labels)
        self.primary_layers = list(primary_layers)
        layers = {"primary": _with_all(primary_layers), "candidate": _with_all(getattr(candidate, "layers", []))}
        self.sparsity = {
            side: {layer: SHADOW_SPARSITY.labels(*labels, side, layer) for layer in names}
            for side, names in layers.items()
        }
        self.atypical = {side: SHADOW_ATYPICAL.labels(*labels, side) for side in (*SIDES, "both")}
        self.widths = unit_widths(candidate) or {}
        self.units = {
            layer: [SHADOW_UNIT_FIRED.labels(*labels, layer, str(unit)) for unit in range(width)]
            for layer, width in self.widths.items()
        }

    def write(self, batch: list[Compared]) -> None:
        """A batch of comparisons, written in one go ("compared" last: a reader that sees it sees the rest)."""
        if not batch:
            return
        observe_many(self.total_variation, np.concatenate([c.total_variation for c in batch]))
        for side in SIDES:
            for layer, child in self.sparsity[side].items():
                values = [c.sparsity[side][layer] for c in batch if layer in c.sparsity[side]]
                if values:
                    observe_many(child, np.concatenate(values))
        totals = Totals()
        for compared in batch:
            totals.add(compared.totals())
        for side, count in totals.atypical.items():
            if count:
                self.atypical[side].inc(count)
        for layer, counts in totals.candidate_fired.items():
            children = self.units.get(layer, [])
            for unit in np.flatnonzero(counts).tolist():
                if unit < len(children):
                    children[unit].inc(int(counts[unit]))
        if totals.agreements:
            self.agreements.inc(totals.agreements)
        self.items["compared"].inc(totals.items)

    def forget(self) -> None:
        """Drop this pair's children from this process (the exposition drops every process's series of it)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for metric in (SHADOW_AGREEMENTS, SHADOW_TOTAL_VARIATION):
                remove_child(metric, self.labels)
            for outcome in self.items:
                remove_child(SHADOW_ITEMS, (*self.labels, outcome))
            for side, layers in self.sparsity.items():
                for layer in layers:
                    remove_child(SHADOW_SPARSITY, (*self.labels, side, layer))
            for side in self.atypical:
                remove_child(SHADOW_ATYPICAL, (*self.labels, side))
            for layer, width in self.widths.items():
                for unit in range(width):
                    remove_child(SHADOW_UNIT_FIRED, (*self.labels, layer, str(unit)))


def _with_all(layers) -> list[str]:
    layers = list(layers or [])
    return [*layers, ALL_LAYERS] if layers else []


# --- the queue: a socket pair from the worker to its shadow process

SO_SNDBUFFORCE = 32  # Linux: set the send buffer past net.core.wmem_max (needs CAP_NET_ADMIN)


def socket_pair(size: int) -> tuple[socket.socket, socket.socket]:
    """A message-preserving socket pair (``SOCK_SEQPACKET``): each message arrives whole or not at all. The
    first end's send buffer, ``size`` bytes (as far as the system allows), bounds what waits to be read."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for option in (SO_SNDBUFFORCE, socket.SO_SNDBUF):
        try:
            ours.setsockopt(socket.SOL_SOCKET, option, size)
            break
        except OSError:
            continue
    return ours, theirs


class ShadowQueue:
    """The worker's end of the socket its shadow process reads: a bounded queue of whole messages. :meth:`offer`
    never waits: a message the socket has no room for is refused (the caller counts it dropped)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setblocking(False)
        self.capacity = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        self._lock = threading.Lock()

    def offer(self, payload: bytes) -> bool:
        try:
            with self._lock:
                self.sock.send(payload)
        except OSError:  # no room (BlockingIOError), too large for the buffer, or the reader is gone
            return False
        return True

    def send(self, payload: bytes, timeout: float = 30.0) -> None:
        """A message that must arrive (a new configuration): waits for room, at most ``timeout`` seconds (the
        sync thread, never a request). OSError when the reader is gone or did not make room."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                try:
                    self.sock.send(payload)
                    return
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the shadow process did not read its queue") from None
                    select.select([], [self.sock], [], 1.0)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


MAX_BATCH = 64
GATHER_SECONDS = 0.005
"""The shadow process takes the requests waiting in its queue together, waiting up to this long for more after
the first: one candidate pass over 64 inputs costs a fraction of 64 passes over one."""


def read_messages(
    sock: socket.socket,
    idle: Callable[[], None],
    max_bytes: int = QUEUE_BYTES,
    idle_seconds: float = FLUSH_SECONDS,
    max_batch: int = MAX_BATCH,
    gather_seconds: float = GATHER_SECONDS,
):
    """The messages of ``sock`` (each at most ``max_bytes``: the sender's buffer) until the other end closes, in
    lists of at most ``max_batch``: what arrived within ``gather_seconds`` of the first. ``idle()`` whenever
    nothing came for ``idle_seconds`` and whenever the queue runs dry."""
    buffer = bytearray(max_bytes)
    sock.setblocking(True)
    while True:
        if not select.select([sock], [], [], idle_seconds)[0]:
            idle()
            continue
        batch, deadline = [], time.monotonic() + gather_seconds
        while len(batch) < max_batch:
            wait = max(0.0, deadline - time.monotonic())
            if batch and not select.select([sock], [], [], wait)[0]:
                break
            size = sock.recv_into(buffer, len(buffer), socket.MSG_TRUNC)
            if size == 0:
                if batch:
                    yield batch
                return  # the worker closed its end
            if size > len(buffer):  # longer than any message the worker can send: cannot happen; skipped
                log.warning("a shadow message of %s bytes was cut to %s and skipped", size, len(buffer))
            else:
                batch.append(bytes(buffer[:size]))
        yield batch
        if not select.select([sock], [], [], 0)[0]:
            idle()


def joined(predictions: list[Prediction]) -> Prediction:
    """Several answers as one, inputs in order (the primary's answers of the requests a batch joins)."""
    if len(predictions) == 1:
        return predictions[0]
    layers = predictions[0].layer_sparsity
    return Prediction(
        np.concatenate([p.probabilities for p in predictions]),
        {layer: np.concatenate([p.layer_sparsity[layer] for p in predictions]) for layer in layers},
        np.concatenate([p.overall for p in predictions]),
        np.concatenate([p.scores for p in predictions]),
        np.concatenate([p.atypical for p in predictions]),
    )


ITEM = struct.Struct("<c8sBII")  # b"I", shadow id, x's dtype (0 float32, 1 float64), inputs, result columns
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
CONFIG = b"C"


def encode_item(shadow_id: str, x: np.ndarray, prediction, layers: list[str]) -> bytes:
    """A mirrored request as one frame: its inputs and the primary's answer (probabilities, each of ``layers``'
    zero share, the overall share, the typicality flag) as one float64 block. Two microseconds, where a pickle
    took 14."""
    dtype = 1 if x.dtype == np.float64 else 0
    columns = [prediction.probabilities, *(prediction.layer_sparsity[layer][:, None] for layer in layers)]
    if layers:
        columns.append(prediction.overall[:, None])
    columns.append(np.asarray(prediction.atypical)[:, None])
    block = np.concatenate([np.asarray(c, dtype=np.float64) for c in columns], axis=1)
    head = ITEM.pack(b"I", shadow_id.encode()[:8].ljust(8), dtype, len(x), block.shape[1])
    return head + np.ascontiguousarray(x, dtype=DTYPES[dtype]).tobytes() + block.tobytes()


def decode_item(payload: bytes, item_shape: tuple, layers: list[str]) -> tuple[np.ndarray, Prediction]:
    """:func:`encode_item`'s inputs and primary answer (``layers``: the primary's, in order)."""
    _, _, dtype, n, width = ITEM.unpack_from(payload)
    dtype = DTYPES[dtype]
    size = n * int(np.prod(item_shape)) * dtype.itemsize
    x = np.frombuffer(payload, dtype=dtype, count=size // dtype.itemsize, offset=ITEM.size).reshape(n, *item_shape)
    block = np.frombuffer(payload, dtype=np.float64, offset=ITEM.size + size).reshape(n, width)
    classes = width - 1 - (len(layers) + 1 if layers else 0)
    sparsity = {layer: block[:, classes + i] for i, layer in enumerate(layers)}
    overall = block[:, classes + len(layers)] if layers else np.zeros(n)
    atypical = block[:, -1] > 0
    return x, Prediction(block[:, :classes], sparsity, overall, np.zeros(n), atypical)


def item_id(payload: bytes) -> str:
    return ITEM.unpack_from(payload)[1].decode().rstrip()


# --- where the comparisons are made


class ShadowConsumer:
    """Runs each mirrored request on its candidate, compares, and writes the figures every ``flush_seconds`` and
    whenever the queue runs dry. ``load(tag)``: the candidate's runtime (the shadow process loads it from the
    store; in process, the worker's own)."""

    def __init__(self, load: Callable[[str], object], flush_seconds: float = FLUSH_SECONDS) -> None:
        self.load = load
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
            answer = candidate.predict(x)
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


# --- the worker's side


@dataclass
class _Mirror:
    spec: ShadowSpec
    layers: list[str]  # the primary's, in the order its frames carry them
    mirrored: object  # the worker's counters of this shadow
    dropped: object


class ShadowRunner:
    """One worker's shadows: which primary's requests are mirrored (:meth:`offer`, on the request's path: a pickle
    and one message to a socket), which name has a canary (:meth:`choose`), and the shadow process that reads it.

    The comparisons run in a process of their own at the lowest CPU priority (``nice`` 19): a thread would share
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
            [sys.executable, "-m", "service.shadow_process"], stdin=theirs.fileno(), env=env, close_fds=True
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


def totals_of(families, spec: ShadowSpec, widths: dict[str, int]) -> tuple[Totals, dict[str, int]]:
    """One shadow's comparison, summed over every worker's series (the collected metric families): its
    :class:`Totals` (the candidate's units by ``widths``) and its counts by outcome (a canary's: by side)."""
    want = dict(zip(PAIR, spec.labels, strict=True))
    totals, outcomes, fired = Totals(), dict.fromkeys(OUTCOMES, 0.0), {}
    for family in families:
        if not family.name.startswith(("shadow_", "canary_")):
            continue
        for sample in family.samples:
            labels = sample.labels
            if any(labels.get(k) != v for k, v in want.items()):
                continue
            name, value = sample.name, sample.value
            if name == "shadow_items_total":
                outcomes[labels["outcome"]] += value
            elif name == "shadow_label_agreements_total":
                totals.agreements += int(value)
            elif name == "shadow_probability_total_variation_sum":
                totals.total_variation += value
            elif name == "shadow_activation_sparsity_ratio_sum":
                side = totals.sparsity[labels["side"]]
                side[labels["layer"]] = side.get(labels["layer"], 0.0) + value
            elif name == "shadow_atypical_total":
                totals.atypical[labels["side"]] += int(value)
            elif name == "shadow_candidate_unit_fired_total":
                unit = (labels["layer"], int(labels["unit"]))
                fired[unit] = fired.get(unit, 0) + value
            elif name == "canary_requests_total":
                outcomes[labels["side"]] = outcomes.get(labels["side"], 0.0) + value
    totals.items = int(outcomes["compared"])
    totals.candidate_fired = {layer: np.zeros(width, dtype=np.int64) for layer, width in widths.items()}
    for (layer, unit), value in fired.items():
        if layer in totals.candidate_fired and unit < widths[layer]:
            totals.candidate_fired[layer][unit] = int(value)
    return totals, {k: int(v) for k, v in outcomes.items()}
