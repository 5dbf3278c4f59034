"""Service settings, read from the environment once at start and validated: a bad value stops the
service with one line naming the variable, the value and the rule (see ``service.service``).

Every setting, its default and its rule are in :data:`SETTINGS`; the README's table lists them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelstore.engines import SETTINGS as ENGINES
from modelstore.kinds import PLUGIN_SETTING, plugin_modules

MiB = 1024 * 1024
SHADOW_QUEUE_BYTES = MiB
BATCH_MAX_SIZE, BATCH_MAX_QUEUE = 64, 1024
"""Batching's defaults: a pass takes at most 64 items (one image a request: 64 clients at once), and 1,024 items may
wait (a request of the most items allowed, MAX_BATCH, can always queue)."""
"""A worker's shadow queue by default (:mod:`service.shadow.wire`): about 300 one-image requests."""


class SettingsError(ValueError):
    """One environment setting has a value outside its rule."""

    def __init__(self, name: str, raw: str, rule: str) -> None:
        super().__init__(f"environment variable {name}={raw!r} is invalid: {rule}")
        self.name, self.raw, self.rule = name, raw, rule


def whole(lo: int, hi: int) -> Callable[[str], int]:
    rule = f"must be a whole number from {lo} to {hi}"

    def parse(raw: str) -> int:
        try:
            value = int(raw.strip().replace("_", ""))
        except ValueError:
            raise ValueError(rule) from None
        if not lo <= value <= hi:
            raise ValueError(rule)
        return value

    return parse


def seconds(lo: float, hi: float, unit: str = "seconds") -> Callable[[str], float]:
    rule = f"must be a number of {unit} from {lo:g} to {hi:g}"

    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(rule) from None
        if not lo <= value <= hi:  # also refuses nan
            raise ValueError(rule)
        return value

    return parse


def boolean(raw: str) -> bool:
    text = raw.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be one of true, false, 1, 0, yes, no, on, off")


_TAG = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?(?::[A-Za-z0-9](?:[A-Za-z0-9._-]{0,127}))?$")


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return parse


def model_tags(raw: str) -> tuple[str, ...]:
    """``name[:version],...``: each a BentoML model tag, each at most once (several versions of a name are
    served side by side; an unversioned name means its latest)."""
    rule = (
        "must be comma-separated model tags name[:version], lower-case names, each tag once "
        "(e.g. mnist_cnn,iris_l1:latest or mnist_cnn:v1,mnist_cnn:v2)"
    )
    tags = tuple(part.strip() for part in raw.split(","))
    if any(not _TAG.match(tag) for tag in tags):
        raise ValueError(rule)
    full = [tag if ":" in tag else f"{tag}:latest" for tag in tags]
    if len(set(full)) != len(full):
        raise ValueError(rule)
    return tags


def shadows(raw: str) -> tuple[tuple[str, str, float, str], ...]:
    """``name:version:share[:mode],...``: a shadow (mode mirror, the default) or canary per name, at start."""
    rule = (
        "must be comma-separated name:version:share[:mode], a share from 0 to 1, mode mirror or canary, "
        "each name once (e.g. mnist_cnn:v2:0.25)"
    )
    specs = []
    for part in raw.split(","):
        fields = [f.strip() for f in part.strip().split(":")]
        if len(fields) == 3:
            fields.append("mirror")
        if len(fields) != 4 or not _TAG.match(f"{fields[0]}:{fields[1]}") or fields[3] not in ("mirror", "canary"):
            raise ValueError(rule)
        try:
            share = float(fields[2])
        except ValueError:
            raise ValueError(rule) from None
        if not 0 <= share <= 1:  # also refuses nan
            raise ValueError(rule)
        specs.append((fields[0], fields[1], share, fields[3]))
    if len({name for name, *_ in specs}) != len(specs):
        raise ValueError(rule)
    return tuple(specs)


def key_file(raw: str) -> str:
    """A readable file of keys (one per line)."""
    path = raw.strip()
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ValueError("must be a readable file holding one key per line")
    return path


@dataclass(frozen=True)
class Setting:
    env: str
    field: str
    default: Any
    parse: Callable[[str], Any]
    doc: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "SERVED_MODELS",
        "served_models",
        (),
        model_tags,
        "the models to serve, name[:version],...; unset: the latest version of every model in the store",
    ),
    Setting(
        PLUGIN_SETTING,
        "model_kinds",
        (),
        plugin_modules,
        "more model kinds, module.path,...: each module's KIND is added to the kinds table (see README, Layout)",
    ),
    Setting("SERVICE_WORKERS", "workers", 1, whole(1, 64), "worker processes (each loads every served model)"),
    Setting("TF_INTRA_OP_THREADS", "tf_intra_threads", 1, whole(1, 256), "TensorFlow threads inside one op"),
    Setting("TF_INTER_OP_THREADS", "tf_inter_threads", 1, whole(1, 256), "TensorFlow ops run in parallel"),
    Setting("ONNX_INTRA_OP_THREADS", "onnx_intra_threads", 1, whole(1, 256), "ONNX Runtime threads inside one op"),
    Setting(
        "NUMPY_THREADS",
        "numpy_threads",
        1,
        whole(1, 256),
        "BLAS threads per worker for NumPy's matrix products (the typicality score)",
    ),
    Setting(
        "ENGINE",
        "engine",
        "auto",
        one_of(*ENGINES),
        "auto: each model on the fastest engine that passed its check at registration (the sparse engine only where "
        "it is faster at 1 and 256 images); sparse, onnxruntime, tensorflow: that engine wherever the model has it",
    ),
    # 1024 images of 784 numbers written with up to ~20 characters each fit in 16 MiB.
    Setting("MAX_BODY_BYTES", "max_body_bytes", 16 * MiB, whole(1024, 1024 * MiB), "larger bodies get 413"),
    Setting(
        "MAX_DRAIN_BYTES",
        "max_drain_bytes",
        64 * MiB,
        whole(0, 4096 * MiB),
        "a refused body up to this size is read to its end so the client reads the 4xx",
    ),
    Setting(
        "BODY_TIMEOUT_SECONDS",
        "body_timeout",
        30.0,
        seconds(0.1, 3600),
        "a body not complete this long after its headers gets 408 and the connection is closed",
    ),
    Setting("MAX_IMAGE_PIXELS", "max_image_pixels", 4096 * 4096, whole(784, 2**28), "larger uploads get 400"),
    Setting("ACCESS_LOG", "access_log", False, boolean, "one log line per request"),
    Setting(
        "MODEL_POLL_SECONDS",
        "poll_seconds",
        0.0,
        seconds(0, 86400),
        "every this many seconds, load each served name's latest stored version when it is new (0: off)",
    ),
    Setting(
        "MODEL_LOAD_TIMEOUT_SECONDS",
        "load_timeout",
        120.0,
        seconds(1, 3600),
        "a load or unload not done in every worker by then is withdrawn (the previous version keeps serving)",
    ),
    Setting(
        "MAX_UNIT_SERIES",
        "max_unit_series",
        1024,
        whole(0, 1_000_000),
        "a model with more ReLU units than this gets per-layer never-fired counts instead of per-unit series",
    ),
    Setting(
        "SHADOW",
        "shadows",
        (),
        shadows,
        "at start, name:version:share[:mode],...: mirror share of each name's requests to that version (mode "
        "canary: answer them with it); PUT /models/NAME/shadow does it while serving",
    ),
    Setting(
        "BATCH_MAX_SIZE",
        "batch_max_size",
        BATCH_MAX_SIZE,
        whole(1, 1024),
        "items a forward pass takes from a model version's queue (1: no batching)",
    ),
    Setting(
        "BATCH_WAIT_MS",
        "batch_wait_ms",
        0.0,
        seconds(0, 1000, "milliseconds"),
        "how long a pass waits to fill (0: never)",
    ),
    Setting(
        "BATCH_MAX_QUEUE",
        "batch_max_queue",
        BATCH_MAX_QUEUE,
        whole(1024, 1_000_000),
        "items that may wait for a model version; past it, 503 with Retry-After",
    ),
    Setting(
        "SHADOW_QUEUE_BYTES",
        "shadow_queue_bytes",
        SHADOW_QUEUE_BYTES,
        whole(4096, 1024 * MiB),
        "a worker's shadow queue (the send buffer of a socket to its shadow process): a mirrored request that does "
        "not fit is dropped and counted, never the primary's",
    ),
    Setting(
        "MANAGEMENT_KEY_FILE",
        "management_key_file",
        None,
        key_file,
        "keys (one per line) for the repository routes (load, unload, index); unset: those routes are off",
    ),
    Setting(
        "INFERENCE_KEY_FILE",
        "inference_key_file",
        None,
        key_file,
        "keys (one per line) for the prediction routes, /models and the examples; unset: open",
    ),
    Setting(
        "EXPOSE_EXAMPLES",
        "expose_examples",
        True,
        boolean,
        "false hides the cards' calibration examples from the API and the page",
    ),
)


RENAMED = {"KERAS_ENGINE": "ENGINE"}
"""Settings that were renamed: set, they stop the service with one line naming the new one."""


@dataclass(frozen=True)
class Settings:
    served_models: tuple[str, ...]
    model_kinds: tuple[str, ...]
    workers: int
    tf_intra_threads: int
    tf_inter_threads: int
    onnx_intra_threads: int
    engine: str
    numpy_threads: int
    max_body_bytes: int
    max_drain_bytes: int
    body_timeout: float
    max_image_pixels: int
    access_log: bool
    poll_seconds: float
    load_timeout: float
    max_unit_series: int
    shadows: tuple[tuple[str, str, float, str], ...]
    batch_max_size: int
    batch_wait_ms: float
    batch_max_queue: int
    shadow_queue_bytes: int
    management_key_file: str | None
    inference_key_file: str | None
    expose_examples: bool

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Read every setting; unset or empty means the default. Raises SettingsError on the first
        bad value."""
        environ = os.environ if environ is None else environ
        for old, new in RENAMED.items():
            if environ.get(old, "").strip():
                raise SettingsError(old, environ[old], f"is no longer read; set {new} instead")
        values = {}
        for setting in SETTINGS:
            raw = environ.get(setting.env, "")
            if not raw.strip():
                values[setting.field] = setting.default
                continue
            try:
                values[setting.field] = setting.parse(raw)
            except ValueError as exc:
                raise SettingsError(setting.env, raw, str(exc)) from None
        return cls(**values)
