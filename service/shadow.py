"""Shadows and canaries: a candidate version beside the version that answers a name (the *primary*).

- **mirror** (a shadow): ``share`` of the requests the primary answers also run on the candidate, off the
  request's path. Each worker has one :class:`ShadowRunner` thread at the lowest CPU priority (``nice`` 19), fed
  by a bounded queue (``SHADOW_QUEUE_ITEMS`` inputs): a request only appends to it (microseconds), and when the
  queue is full its inputs are dropped and counted, never the primary's work. The two answers are compared
  (:mod:`modelstore.compare`) and the figures go to Prometheus series per pair, which every worker writes and
  the ``GET`` reads back summed over workers, so the answer, ``/metrics`` and an offline ``compare`` agree.
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
import random
import threading
import time
import warnings
from collections import deque
from dataclasses import asdict, dataclass, replace

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from modelstore.compare import SIDES, Compared, IncomparableVersions, Totals, check_pair, compare, unit_widths
from service.metrics import RATIO_BUCKETS, observe_many
from sparsity.contract import ALL_LAYERS

log = logging.getLogger(__name__)

MODES = ("mirror", "canary")
LOADING, ACTIVE = "loading", "active"
CANARY_HEADER = b"x-canary-key"
QUEUE_ITEMS = 1024
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
    """The label children of one shadow in this worker, written by its thread only."""

    def __init__(self, spec: ShadowSpec, primary, candidate) -> None:
        labels = spec.labels
        self.labels = labels
        self.items = {outcome: SHADOW_ITEMS.labels(*labels, outcome) for outcome in OUTCOMES}
        self.agreements = SHADOW_AGREEMENTS.labels(*labels)
        self.total_variation = SHADOW_TOTAL_VARIATION.labels(*labels)
        self.sparsity = {
            side: {layer: SHADOW_SPARSITY.labels(*labels, side, layer) for layer in _sparsity_layers(runtime)}
            for side, runtime in zip(SIDES, (primary, candidate), strict=True)
        }
        self.atypical = {side: SHADOW_ATYPICAL.labels(*labels, side) for side in (*SIDES, "both")}
        self.widths = unit_widths(candidate) or {}
        self.units = {
            layer: [SHADOW_UNIT_FIRED.labels(*labels, layer, str(unit)) for unit in range(width)]
            for layer, width in self.widths.items()
        }
        SHADOW_SHARE.labels(*labels, spec.mode).set(spec.share)
        self.mode = spec.mode

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
        """Drop this pair's children from this process (the exposition drops every worker's series of it)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for metric in (SHADOW_AGREEMENTS, SHADOW_TOTAL_VARIATION):
                _remove(metric, self.labels)
            for outcome in OUTCOMES:
                _remove(SHADOW_ITEMS, (*self.labels, outcome))
            for side, layers in self.sparsity.items():
                for layer in layers:
                    _remove(SHADOW_SPARSITY, (*self.labels, side, layer))
            for side in self.atypical:
                _remove(SHADOW_ATYPICAL, (*self.labels, side))
            for layer, width in self.widths.items():
                for unit in range(width):
                    _remove(SHADOW_UNIT_FIRED, (*self.labels, layer, str(unit)))
            _remove(SHADOW_SHARE, (*self.labels, self.mode))


def _remove(metric, labels: tuple) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)


def _sparsity_layers(runtime) -> list[str]:
    layers = list(getattr(runtime, "layers", []) or [])
    return [*layers, ALL_LAYERS] if layers else []


@dataclass
class _Mirror:
    spec: ShadowSpec
    metrics: PairMetrics


class ShadowRunner:
    """One worker's shadows: which primary's requests are mirrored, the bounded queue, the thread that runs the
    candidates and writes the comparisons."""

    def __init__(self, plane, queue_items: int = QUEUE_ITEMS, flush_seconds: float = FLUSH_SECONDS) -> None:
        self.plane = plane
        self.queue_items = queue_items
        self.flush_seconds = flush_seconds
        self.mirrors: dict[str, _Mirror] = {}  # primary tag -> its mirror (replaced whole, read without a lock)
        self.canaries: dict[str, ShadowSpec] = {}  # name -> canary spec
        self._queue: deque = deque()
        self._queued = 0
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pending: dict[str, list[Compared]] = {}  # shadow id -> comparisons not written yet
        self._last_flush = time.monotonic()

    # --- following the served set (the sync thread)

    def configure(self, specs: dict[str, ShadowSpec]) -> None:
        """Follow these specs (by name): inactive or unloaded ones are skipped; a removed shadow stops at once
        (its queued inputs are dropped unrecorded, its children go from this process)."""
        mirrors, canaries = {}, {}
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
                for side in ("primary", "candidate"):
                    CANARY_REQUESTS.labels(*spec.labels, side)
                SHADOW_SHARE.labels(*spec.labels, spec.mode).set(spec.share)
                continue
            old = self.mirrors.get(spec.primary_tag)
            same = old is not None and old.spec == spec
            mirrors[spec.primary_tag] = old if same else _Mirror(spec, PairMetrics(spec, primary, candidate))
        current = {m.spec.id for m in mirrors.values()}
        gone = [m for m in self.mirrors.values() if m.spec.id not in current]
        for old_spec in self.canaries.values():
            if old_spec.name not in canaries or canaries[old_spec.name].id != old_spec.id:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    for side in ("primary", "candidate"):
                        _remove(CANARY_REQUESTS, (*old_spec.labels, side))
                    _remove(SHADOW_SHARE, (*old_spec.labels, old_spec.mode))
        self.mirrors, self.canaries = mirrors, canaries
        with self._cv:
            if gone:
                kept = deque(item for item in self._queue if item[0].id in current)
                self._queued = sum(len(item[1]) for item in kept)
                self._queue = kept
                for mirror in gone:
                    self._pending.pop(mirror.spec.id, None)
        for mirror in gone:
            mirror.metrics.forget()
        if mirrors and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
            self._thread.start()

    # --- the request's path

    def offer(self, runtime, x: np.ndarray, prediction) -> None:
        """Queue a primary's request for its candidate (``share`` of them), or count it dropped. Microseconds."""
        mirror = self.mirrors.get(runtime.tag)
        if mirror is None:
            return
        spec = mirror.spec
        if spec.share < 1.0 and random.random() >= spec.share:
            return
        n = len(x)
        with self._cv:
            if self._queued + n > self.queue_items:
                outcome = "dropped"
            else:
                self._queue.append((spec, x, prediction))
                self._queued += n
                outcome = "mirrored"
                self._cv.notify()
        mirror.metrics.items[outcome].inc(n)

    def choose(self, name: str, key: bytes | None):
        """The canary of ``name`` and whether this request goes to its candidate, or None without a canary."""
        spec = self.canaries.get(name)
        if spec is None:
            return None
        side = "candidate" if answers_candidate(spec, key) else "primary"
        CANARY_REQUESTS.labels(*spec.labels, side).inc()
        return spec, side

    # --- the shadow thread

    def _run(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SHADOW_NICE)
        while True:
            with self._cv:
                while not self._queue:
                    self._flush_locked_out()
                    self._cv.wait(self.flush_seconds)
                spec, x, prediction = self._queue.popleft()
                self._queued -= len(x)
            try:
                self._compare(spec, x, prediction)
            except Exception:
                log.exception("the shadow of %s failed on a request", spec.name)
            if time.monotonic() - self._last_flush >= self.flush_seconds:
                self._flush()

    def _flush_locked_out(self) -> None:
        """Flush from inside the condition's lock: release it while writing."""
        if not self._pending:
            return
        self._cv.release()
        try:
            self._flush()
        finally:
            self._cv.acquire()

    def _compare(self, spec: ShadowSpec, x: np.ndarray, prediction) -> None:
        mirror = self.mirrors.get(spec.primary_tag)
        if mirror is None or mirror.spec.id != spec.id:
            return  # removed or replaced since it was queued
        candidate = self.plane.loaded.get(spec.candidate_tag)
        if candidate is None:
            return
        from sparsity.errors import InvalidInputError

        try:
            with self.plane.using(candidate):
                answer = candidate.predict(x)
        except InvalidInputError as exc:
            mirror.metrics.items["failed"].inc(len(x))
            log.warning("shadow %s refused a request the primary answered: %s", spec.candidate_tag, exc)
            return
        self._pending.setdefault(spec.id, []).append(compare(prediction, answer))

    def _flush(self) -> None:
        self._last_flush = time.monotonic()
        pending, self._pending = self._pending, {}
        by_id = {m.spec.id: m for m in self.mirrors.values()}
        for shadow_id, batch in pending.items():
            mirror = by_id.get(shadow_id)
            if mirror is not None:
                mirror.metrics.write(batch)


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
