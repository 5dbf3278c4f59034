"""Service settings, read from the environment once at start."""

from __future__ import annotations

import os
from dataclasses import dataclass


def _int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name, "")
    if not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"environment variable {name} must be >= {minimum}, got {value}")
    return value


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"environment variable {name} must be true or false, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    mnist_tag: str
    iris_tag: str
    workers: int
    tf_intra_threads: int
    tf_inter_threads: int
    max_body_bytes: int
    max_image_pixels: int
    access_log: bool

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            mnist_tag=os.environ.get("MNIST_MODEL_TAG", "mnist_cnn:latest"),
            iris_tag=os.environ.get("IRIS_MODEL_TAG", "iris_l1:latest"),
            workers=_int("SERVICE_WORKERS", 1),
            tf_intra_threads=_int("TF_INTRA_OP_THREADS", 1),
            tf_inter_threads=_int("TF_INTER_OP_THREADS", 1),
            # 1024 images of 784 numbers written with up to ~20 characters each fit in 16 MiB.
            max_body_bytes=_int("MAX_BODY_BYTES", 16 * 1024 * 1024),
            max_image_pixels=_int("MAX_IMAGE_PIXELS", 4096 * 4096),
            access_log=_bool("ACCESS_LOG", False),
        )
