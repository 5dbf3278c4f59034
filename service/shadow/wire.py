"""The queue from a worker to its shadow process: a socket pair whose send buffer is the bound, and the frames on it."""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable

import numpy as np

from modelstore.runtime import Prediction
from service.shadow.spec import FLUSH_SECONDS, QUEUE_BYTES

log = logging.getLogger(__name__)

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


MAX_GATHERED = 64
GATHER_SECONDS = 0.005
"""The shadow process takes the requests waiting in its queue together, waiting up to this long for more after
the first: one candidate pass over 64 inputs costs a fraction of 64 passes over one."""


def read_messages(
    sock: socket.socket,
    idle: Callable[[], None],
    max_bytes: int = QUEUE_BYTES,
    idle_seconds: float = FLUSH_SECONDS,
    max_batch: int = MAX_GATHERED,
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
