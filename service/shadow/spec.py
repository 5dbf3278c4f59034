"""A shadow's spec as the shared served set holds it, the rules of its fields, and the canary's split."""

from __future__ import annotations

import hashlib
import logging
import math
import random
from dataclasses import asdict, dataclass, replace

from service.config import SHADOW_QUEUE_BYTES
from service.errors import ShadowError
from service.observability.pending import FLUSH_SECONDS as METRICS_FLUSH_SECONDS
from service.protocol import SHADOW_MODES

log = logging.getLogger(__name__)

MODES = SHADOW_MODES
LOADING, ACTIVE = "loading", "active"
CANARY_HEADER = b"x-canary-key"
QUEUE_BYTES = SHADOW_QUEUE_BYTES
FLUSH_SECONDS = METRICS_FLUSH_SECONDS
SHADOW_NICE = 19
"""The shadow process's niceness where ``SCHED_IDLE`` is not available: under load the kernel gives it what the
request threads leave."""


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
