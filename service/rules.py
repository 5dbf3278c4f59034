"""The rules a setting's value must follow, one parser each: a parser takes the raw text and returns the value
or raises ValueError with the rule (:mod:`service.config` names the variable)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable


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


def log_location(raw: str) -> str:
    """A ``postgresql://`` URL with a host and a database, or a SQLite file path whose directory exists or can be
    made."""
    value = raw.strip()
    if value.startswith(("postgresql://", "postgres://")):
        rest = value.split("://", 1)[1]
        if not rest.split("@")[-1].split("/")[0] or "/" not in rest.split("@")[-1]:
            raise ValueError("must be postgresql://user[:password]@host[:port]/database, or a SQLite file path")
        return value
    if "://" in value:
        raise ValueError("must be a postgresql:// URL or a SQLite file path (no other database is supported)")
    if os.path.isdir(value):
        raise ValueError("must be a SQLite file path, not a directory")
    return value
