"""The filters of ``GET /models/{name}/log``, read from a query string and checked: every refusal names the
parameter and the rule (:class:`QueryError`), and every value reaches the database as a parameter.

Pages are newest first; ``cursor`` is the ``next`` value of the page before (the smallest id it held): the next
page holds the rows written before it, so pages do not shift while rows are being added.
"""

from __future__ import annotations

import datetime
import math
import re
from dataclasses import dataclass

ROLES = ("primary", "canary", "shadow")
"""Which side of a split answered: the version serving the name, a canary's candidate answering its share, or
a shadow's candidate (mirrored, its answer never sent)."""
PARAMETERS = ("version", "since", "until", "atypical", "label", "role", "reviewed", "cursor", "limit")
DEFAULT_LIMIT, MAX_LIMIT = 50, 500
MAX_VALUE_CHARS = 128
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class QueryError(ValueError):
    """A query parameter outside its rule."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field, self.rule = field, rule


@dataclass(frozen=True)
class Filters:
    version: str | None = None
    since: float | None = None
    until: float | None = None
    atypical: bool | None = None
    label: int | None = None
    role: str | None = None
    reviewed: bool | None = None
    cursor: int | None = None
    limit: int = DEFAULT_LIMIT

    def where(self, model: str, dialect: str) -> tuple[str, list]:
        """The WHERE clause (``?`` placeholders) and its parameters."""
        clauses, params = ["model = ?"], [model]
        for column, value in (("version", self.version), ("role", self.role), ("label", self.label)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.since is not None:
            clauses.append("at >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append("at < ?")
            params.append(self.until)
        if self.atypical is not None:
            clauses.append("atypical = ?")
            params.append(self.atypical if dialect == "postgresql" else int(self.atypical))
        if self.reviewed is not None:
            clauses.append("review IS NOT NULL" if self.reviewed else "review IS NULL")
        if self.cursor is not None:
            clauses.append("id < ?")
            params.append(self.cursor)
        return " AND ".join(clauses), params


def parse_time(field: str, raw: str) -> float:
    """Seconds since the epoch, or an ISO 8601 time (``2026-12-07T13:00:00Z``; without a zone: UTC)."""
    rule = "must be a time: seconds since the epoch or ISO 8601 (2026-12-07T13:00:00Z)"
    try:
        value = float(raw)
    except ValueError:
        try:
            when = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise QueryError(field, rule) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        return when.timestamp()
    if not math.isfinite(value) or not 0 <= value < 1e11:
        raise QueryError(field, rule)
    return value


def _boolean(field: str, raw: str) -> bool:
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0"):
        return False
    raise QueryError(field, "must be true or false")


def _whole(field: str, raw: str, lo: int, hi: int) -> int:
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise QueryError(field, f"must be a whole number from {lo} to {hi}")
    return int(raw)


def parse(query: dict[str, list[str]], class_names: list[str]) -> Filters:
    """The filters of a parsed query string (``urllib.parse.parse_qs``: each name's values); ``label`` is a class
    name of the model or its index."""
    unknown = sorted(set(query) - set(PARAMETERS))
    if unknown:
        shown = ", ".join(name[:MAX_VALUE_CHARS] for name in unknown[:5])
        raise QueryError("query", f"unknown parameter(s) {shown}; the parameters are {', '.join(PARAMETERS)}")
    values: dict[str, str] = {}
    for name, given in query.items():
        if len(given) != 1:
            raise QueryError(name, "must be given once")
        if len(given[0]) > MAX_VALUE_CHARS:
            raise QueryError(name, f"must be at most {MAX_VALUE_CHARS} characters")
        values[name] = given[0].strip()
    found: dict = {}
    if "version" in values:
        if not _VERSION.match(values["version"]):
            raise QueryError("version", "must be a model version (letters, digits, '.', '_', '-')")
        found["version"] = values["version"]
    for name in ("since", "until"):
        if name in values:
            found[name] = parse_time(name, values[name])
    if found.get("since") is not None and found.get("until") is not None and found["since"] >= found["until"]:
        raise QueryError("until", "must be later than since")
    for name in ("atypical", "reviewed"):
        if name in values:
            found[name] = _boolean(name, values[name])
    if "label" in values:
        raw = values["label"]
        if raw in class_names:
            found["label"] = class_names.index(raw)
        elif raw.isdigit() and int(raw) < len(class_names):
            found["label"] = int(raw)
        else:
            shown = ", ".join(class_names[:12]) + (", ..." if len(class_names) > 12 else "")
            raise QueryError("label", f"must be one of the model's classes ({shown}) or its index")
    if "role" in values:
        if values["role"] not in ROLES:
            raise QueryError("role", f"must be one of {', '.join(ROLES)}")
        found["role"] = values["role"]
    if "cursor" in values:
        found["cursor"] = _whole("cursor", values["cursor"], 1, 2**62)
    if "limit" in values:
        found["limit"] = _whole("limit", values["limit"], 1, MAX_LIMIT)
    return Filters(**found)
