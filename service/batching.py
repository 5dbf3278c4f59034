"""Batching in the data plane: requests for the same model version that arrive together share a forward pass.

A request's inputs are decoded and checked first (a bad item is refused before it joins a batch), then queued
for their version. The queue is run by a callback on the event loop, so whatever arrived in the same turn of
the loop, oldest first, goes into one pass of at most ``max_size`` items (``BATCH_MAX_SIZE``); a request with more
items than that runs alone (a request is never split). With ``wait`` 0 (``BATCH_WAIT_MS``, the default) a lone
request never waits for company: its pass runs on the next turn of the loop, or at once while no company has
arrived for a while (Triton's dynamic batcher does not wait by default either; TorchServe once made every image
wait the full delay, pytorch/serve#1235). With a wait, the pass
runs when the batch is full or the wait is over, whichever comes first. Past ``max_queue`` items waiting
(``BATCH_MAX_QUEUE``), a request is refused at once with 503 and ``Retry-After`` (counted, one log line a second
at most), never queued without bound.

Each request gets exactly the answer it gets alone: every engine computes each item on its own, and the batch's
prediction is cut back into each request's rows. What a batch shares is the per-call bookkeeping around the pass
(the metrics, the counting, the Python calls): one image at 8 connections costs less a request. If a pass fails,
its requests are run again one by one, so only a request that fails alone gets the error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import numpy as np

from service.errors import ServiceError
from sparsity.result import rows
from sparsity.validation import join_checked

log = logging.getLogger(__name__)

MAX_SIZE, WAIT_MS, MAX_QUEUE = 64, 0.0, 1024
"""The defaults of ``BATCH_MAX_SIZE``, ``BATCH_WAIT_MS`` and ``BATCH_MAX_QUEUE`` (the reasons are in the docs'
configuration page)."""


ALONE, PROBE = 2, 16
"""After ``ALONE`` passes in a row that found a single request, a request that finds its queue empty runs at once
(a turn of the event loop costs a lone one-image request about 10% of its time, measured); every ``PROBE``-th
still waits a turn, to see whether company arrives (then batching resumes)."""


class Overloaded(ServiceError):
    """More items wait for a model version than the queue holds."""

    status = 503
    kind = "overloaded"
    headers = ((b"retry-after", b"1"),)

    def __init__(self, waiting: int, max_queue: int) -> None:
        rule = f"{waiting} items are waiting for this model, the most the queue holds is {max_queue}; retry later"
        super().__init__(rule, "queue")


@dataclass
class _Request:
    x: np.ndarray
    future: asyncio.Future
    queued: float  # time.perf_counter() when it joined


@dataclass
class _Queue:
    runtime: object
    requests: deque = field(default_factory=deque)
    items: int = 0
    handle: asyncio.Handle | asyncio.TimerHandle | None = None
    alone: int = 0  # passes in a row that found one request: no company arrives, so the next runs at once


def answers_alone(runtime, count: int = 6) -> bool:
    """Whether ``runtime`` answers each item of a batch exactly as it answers that item alone (every array of its
    prediction, to the bit), on its card's examples (or inputs drawn within its range). The sparse engine, ONNX
    Runtime and NumPy's one-row products do; TensorFlow's batched kernels do not (its probabilities differed in
    the last bits): a version that does not is never batched, so batching never changes an answer."""
    examples = getattr(runtime.card, "examples", None) or []
    if len(examples) >= 2:
        x = np.asarray(examples[:count], dtype=np.float32)
    else:
        low, high = getattr(runtime, "value_range", None) or (0.0, 1.0)
        x = np.random.default_rng(0).uniform(low, high, (count, *runtime.item_shape)).astype(np.float32)
    whole = runtime.predict(x)
    return all(_same(rows(whole, i, i + 1), runtime.predict(x[i : i + 1])) for i in range(len(x)))


def _same(a, b) -> bool:
    for f in fields(a):
        left, right = getattr(a, f.name), getattr(b, f.name)
        if isinstance(left, dict):
            if left.keys() != right.keys() or not all(_equal(left[k], right[k]) for k in left):
                return False
        elif not _equal(left, right):
            return False
    return True


def _equal(left, right) -> bool:
    if isinstance(left, np.ndarray):
        return left.shape == right.shape and bool(np.array_equal(left, right, equal_nan=left.dtype.kind == "f"))
    return left == right


class Batcher:
    """The queues of one worker, one per model version; ``run(runtime, x, waits)`` is the data plane's pass."""

    def __init__(
        self,
        run: Callable,
        max_size: int = MAX_SIZE,
        wait_ms: float = WAIT_MS,
        max_queue: int = MAX_QUEUE,
        refused: Callable[[object], None] = lambda runtime: None,
    ) -> None:
        self.run, self.max_size, self.wait, self.max_queue = run, max_size, wait_ms / 1000, max_queue
        self.refused = refused
        self.queues: dict[str, _Queue] = {}
        self._logged = 0.0

    @property
    def on(self) -> bool:
        return self.max_size > 1

    async def infer(self, runtime, x: np.ndarray):
        """``x``'s prediction, from a pass shared with whatever else is queued for ``runtime``."""
        queue = self.queues.get(runtime.tag)
        if queue is None or queue.runtime is not runtime:
            queue = self.queues[runtime.tag] = _Queue(runtime)
        if queue.items + len(x) > self.max_queue:
            self._refuse(runtime, queue.items)
        if queue.handle is None and self.wait <= 0 and queue.alone >= ALONE and queue.alone % PROBE:
            queue.alone += 1  # one client at a time: its pass runs now, without a turn of the loop
            return self.run(runtime, x, [0.0])
        loop = asyncio.get_running_loop()
        request = _Request(x, loop.create_future(), time.perf_counter())
        queue.requests.append(request)
        queue.items += len(x)
        if queue.handle is None:
            queue.handle = (
                loop.call_soon(self._flush, queue) if self.wait <= 0 else loop.call_later(self.wait, self._flush, queue)
            )
        elif queue.items >= self.max_size and isinstance(queue.handle, asyncio.TimerHandle):
            queue.handle.cancel()  # full before the wait is over: run now
            queue.handle = loop.call_soon(self._flush, queue)
        return await request.future

    def _refuse(self, runtime, waiting: int) -> None:
        self.refused(runtime)
        now = time.monotonic()
        if now - self._logged >= 1.0:
            self._logged = now
            log.warning("%s: %d items waiting, the queue holds %d: refusing with 503", runtime.tag, waiting,
                        self.max_queue)  # fmt: skip
        raise Overloaded(waiting, self.max_queue)

    def _flush(self, queue: _Queue) -> None:
        queue.handle = None
        batch, items = [], 0
        while queue.requests and (not batch or items + len(queue.requests[0].x) <= self.max_size):
            request = queue.requests.popleft()
            batch.append(request)
            items += len(request.x)
        queue.items -= items
        if queue.requests:  # the rest, oldest first, on the next turn
            queue.handle = asyncio.get_running_loop().call_soon(self._flush, queue)
        queue.alone = queue.alone + 1 if len(batch) == 1 and not queue.requests else 0
        batch = [request for request in batch if not request.future.done()]  # a client that left: dropped
        if not getattr(queue.runtime, "batchable", True):  # its answers depend on the batch: one pass a request
            for request in batch:
                self._run(queue.runtime, [request])
        elif batch:
            self._run(queue.runtime, batch)

    def _run(self, runtime, batch: list[_Request]) -> None:
        started = time.perf_counter()
        waits = [started - request.queued for request in batch]
        try:
            x = batch[0].x if len(batch) == 1 else join_checked([request.x for request in batch])
            prediction = self.run(runtime, x, waits)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
                return
            for request in batch:  # only a request that fails alone gets the error
                self._run(runtime, [request])
            return
        start = 0
        for request in batch:
            stop = start + len(request.x)
            request.future.set_result(prediction if len(batch) == 1 else rows(prediction, start, stop))
            start = stop
