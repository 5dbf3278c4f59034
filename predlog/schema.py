"""The prediction log's tables, versioned: each migration is a list of statements written once, in SQL that
SQLite and PostgreSQL both take (the few words that differ are filled in per database: :data:`DIALECTS`).

A database records its version in ``predlog_schema``; :func:`predlog.store.Store.migrate` runs the missing
migrations in order, each in one transaction, under a lock (PostgreSQL: an advisory lock; SQLite: its write
lock), so workers starting together migrate once. A database newer than this code is refused, not touched.
"""

from __future__ import annotations

DIALECTS = {
    "sqlite": {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "blob": "BLOB", "real": "REAL", "bool": "INTEGER"},
    "postgresql": {"id": "BIGSERIAL PRIMARY KEY", "blob": "BYTEA", "real": "DOUBLE PRECISION", "bool": "BOOLEAN"},
}

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: one row an answered item
    (
        """CREATE TABLE predictions (
            id {id},
            at {real} NOT NULL,
            request_id TEXT NOT NULL,
            item INTEGER NOT NULL,
            model TEXT NOT NULL,
            version TEXT NOT NULL,
            role TEXT NOT NULL,
            route TEXT NOT NULL,
            label INTEGER NOT NULL,
            top {real} NOT NULL,
            zeros TEXT NOT NULL,
            overall {real} NOT NULL,
            score {real},
            atypical {bool} NOT NULL,
            latency_ms {real} NOT NULL,
            input {blob}
        )""",
        # two indexes only: each costs every insert (pages by id, time filters and the purge by time, per model)
        "CREATE INDEX predictions_model_id ON predictions (model, id)",
        "CREATE INDEX predictions_model_at ON predictions (model, at)",
    ),
    # 2: a reviewer's label for an item (a class name, or "invalid": not a valid input)
    (
        "ALTER TABLE predictions ADD COLUMN review TEXT",
        "ALTER TABLE predictions ADD COLUMN reviewed_at {real}",
    ),
)
"""Every migration, oldest first; the schema's version is their number. Never edit one that shipped: add one."""

VERSION = len(MIGRATIONS)

COLUMNS = (
    "at", "request_id", "item", "model", "version", "role", "route", "label", "top", "zeros", "overall", "score",
    "atypical", "latency_ms", "input",
)  # fmt: skip
"""The columns a written row fills, in order (:mod:`predlog.rows` makes tuples of them)."""

READ = ("id", *COLUMNS[:-1], "review", "reviewed_at")
"""The columns a read returns (the input only for one row: :meth:`predlog.store.Store.get`)."""

INVALID = "invalid"
"""The review label of an item that is not a valid input of the model at all."""


def statements(dialect: str, migration: int) -> list[str]:
    """The SQL of migration ``migration`` (1-based) for ``dialect``."""
    words = DIALECTS[dialect]
    return [sql.format(**words) for sql in MIGRATIONS[migration - 1]]
