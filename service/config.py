"""Service settings, read from the environment once at start and validated: a bad value stops the
service with one line naming the variable, the value and the rule (see ``service.service``).

Every setting, its default and its rule are in :data:`SETTINGS`; the README's table lists them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelstore.engines import SETTINGS as ENGINES
from modelstore.kinds import PLUGIN_SETTING, plugin_modules
from predlog.rows import INPUTS
from predlog.store import LOG_URL_SETTING, Store, default_location, open_store
from service.rules import SettingsError, boolean, key_file, log_location, model_tags, one_of, seconds, shadows, whole
from sparsity.drift import WINDOW as DRIFT_WINDOW

MiB = 1024 * 1024
SHADOW_QUEUE_BYTES = MiB
BATCH_MAX_SIZE, BATCH_MAX_QUEUE = 64, 1024
"""Batching's defaults: a pass takes at most 64 items (one image a request: 64 clients at once), and 1,024 items may
wait (a request of the most items allowed, MAX_BATCH, can always queue)."""
"""A worker's shadow queue by default (:mod:`service.shadow.wire`): about 300 one-image requests."""


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
    Setting(
        "PREDICTION_LOG",
        "log",
        True,
        boolean,
        "keep a row for each answered item (GET /models/NAME/log); false: no rows (drift is still measured)",
    ),
    Setting(
        "PREDICTION_LOG_URL",
        "log_url",
        "",
        log_location,
        "where the log is: a postgresql:// URL, or a SQLite file; unset: prediction-log.sqlite3 in the model store",
    ),
    Setting(
        "PREDICTION_LOG_SAMPLE",
        "log_sample",
        1.0,
        seconds(0, 1, "share"),
        "the share of typical items logged (atypical items always are)",
    ),
    Setting(
        "PREDICTION_LOG_INPUTS",
        "log_inputs",
        "atypical",
        one_of(*INPUTS),
        "whose inputs the log keeps (compressed): atypical items', every item's, or none",
    ),
    Setting(
        "PREDICTION_LOG_RETENTION_DAYS",
        "log_retention_days",
        30.0,
        seconds(0, 36500, "days"),
        "rows older than this are deleted (0: kept)",
    ),
    Setting(
        "DRIFT_WINDOW",
        "drift_window",
        DRIFT_WINDOW,
        whole(50, 1_000_000),
        "served items a drift window holds (per worker and model version) before its index is computed",
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
    log: bool
    log_url: str
    log_sample: float
    log_inputs: str
    log_retention_days: float
    drift_window: int

    def log_location(self) -> str:
        """PREDICTION_LOG_URL, or the SQLite file beside the model store."""
        return self.log_url or default_location({k: v for k, v in os.environ.items() if k != LOG_URL_SETTING})

    def log_opener(self) -> Callable[[], Store] | None:
        """What opens the prediction log (each caller its own connection), or None with the log off."""
        if not self.log:
            return None
        where = self.log_location()
        return lambda: open_store(where)

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
