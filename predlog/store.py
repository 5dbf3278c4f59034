"""The prediction log's database: :class:`SqliteStore` (the default, one file, WAL) and :class:`PostgresStore`
(when a ``postgresql://`` URL is set), one interface. Every statement is written once with ``?`` placeholders;
PostgreSQL's driver gets them as ``%s``. Values always travel as parameters, never in the SQL text.

Each process opens its own store (a connection and a lock: the service's writer thread, the log routes' threads
and the command line each use one). SQLite in WAL mode lets every worker write the one file (a writer waits up to
``busy_timeout`` for another's transaction) and readers never block writers; ``synchronous=NORMAL`` keeps the file
consistent whatever kills a process (a committed transaction survives a crash of the process).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from predlog import schema
from predlog.query import Filters


class StoreError(RuntimeError):
    """The log's database cannot be opened or used: one line saying which and why."""


LOG_URL_SETTING = "PREDICTION_LOG_URL"
FILE_NAME = "prediction-log.sqlite3"


def default_location(environ=None) -> str:
    """Where the log is unless told: ``PREDICTION_LOG_URL``, else ``prediction-log.sqlite3`` beside the model
    store (``$BENTOML_HOME``, default ``~/bentoml``)."""
    environ = os.environ if environ is None else environ
    if environ.get(LOG_URL_SETTING, "").strip():
        return environ[LOG_URL_SETTING].strip()
    home = environ.get("BENTOML_HOME") or os.path.expanduser("~/bentoml")
    return os.path.join(home, FILE_NAME)


def open_store(where: str) -> Store:
    """The store at ``where``: a ``postgresql://`` (or ``postgres://``) URL, else a SQLite file path (its
    directory made if missing). Migrated to the current schema."""
    if where.startswith(("postgresql://", "postgres://")):
        store: Store = PostgresStore(where)
    else:
        store = SqliteStore(Path(where))
    store.migrate()
    return store


def describe(where: str) -> str:
    """``where`` for a log line: a URL without its password."""
    if "://" in where and "@" in where:
        scheme, rest = where.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}@{host}"
    return where


class Store:
    """What both databases do; a subclass connects and says how its driver takes parameters."""

    dialect = ""
    placeholder = "?"

    def __init__(self) -> None:
        self._lock = threading.Lock()

    # --- a subclass's part
    def _connect(self):
        raise NotImplementedError

    @contextmanager
    def _migration_lock(self, cursor) -> Iterator[None]:
        yield

    def insert(self, rows: Sequence[tuple]) -> None:
        raise NotImplementedError

    # --- shared
    def _sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    @contextmanager
    def transaction(self) -> Iterator[object]:
        """A cursor in one transaction: committed at the end, rolled back on any error (raised again)."""
        with self._lock:
            connection = self._connection
            cursor = connection.cursor()
            try:
                yield cursor
                connection.commit()
            except BaseException:
                connection.rollback()
                raise
            finally:
                cursor.close()

    def _execute(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self.transaction() as cursor:
            cursor.execute(self._sql(sql), tuple(params))
            return cursor.fetchall() if cursor.description else []

    def version(self) -> int:
        rows = self._execute("SELECT MAX(version) FROM predlog_schema")
        return int(rows[0][0] or 0)

    def migrate(self) -> int:
        """Run the missing migrations, each in a transaction; returns the schema version. StoreError when the
        database is newer than this code."""
        with self.transaction() as cursor:
            cursor.execute("CREATE TABLE IF NOT EXISTS predlog_schema (version INTEGER PRIMARY KEY, at TEXT)")
        with self.transaction() as cursor, self._migration_lock(cursor):
            cursor.execute("SELECT MAX(version) FROM predlog_schema")
            current = int(cursor.fetchone()[0] or 0)
            if current > schema.VERSION:
                raise StoreError(
                    f"the prediction log's database is at schema version {current}, newer than this service's "
                    f"{schema.VERSION}: upgrade the service or point it at another database"
                )
            for number in range(current + 1, schema.VERSION + 1):
                for sql in schema.statements(self.dialect, number):
                    cursor.execute(sql)
                cursor.execute(self._sql("INSERT INTO predlog_schema (version, at) VALUES (?, CURRENT_TIMESTAMP)"),
                               (number,))  # fmt: skip
        return schema.VERSION

    def page(self, model: str, filters: Filters) -> list[dict]:
        """One page of ``model``'s rows, newest first, after the filters' cursor (inputs left out)."""
        where, params = filters.where(model, self.dialect)
        columns = (*schema.READ, "has_input")
        sql = (
            f"SELECT {', '.join(schema.READ)}, input IS NOT NULL FROM predictions WHERE {where} "
            "ORDER BY id DESC LIMIT ?"
        )
        rows = self._execute(sql, [*params, filters.limit])
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def get(self, model: str, row_id: int) -> dict | None:
        """One row of ``model`` with its input (compressed bytes or None), or None."""
        columns = (*schema.READ, "input")
        rows = self._execute(
            f"SELECT {', '.join(columns)} FROM predictions WHERE model = ? AND id = ?", [model, row_id]
        )
        return dict(zip(columns, rows[0], strict=True)) if rows else None

    def review(self, model: str, row_id: int, label: str, at: float) -> bool:
        """Store a reviewer's label for a row; False when ``model`` has no such row."""
        with self.transaction() as cursor:
            cursor.execute(
                self._sql("UPDATE predictions SET review = ?, reviewed_at = ? WHERE model = ? AND id = ?"),
                (label, at, model, row_id),
            )
            return cursor.rowcount == 1

    def reviewed(self, model: str, version: str | None = None) -> list[tuple[int, bytes, str]]:
        """``(id, input, review)`` of every reviewed row of ``model`` that kept its input, oldest first."""
        sql = "SELECT id, input, review FROM predictions WHERE model = ? AND review IS NOT NULL AND input IS NOT NULL"
        params: list = [model]
        if version is not None:
            sql += " AND version = ?"
            params.append(version)
        return [(int(i), bytes(data), str(label)) for i, data, label in self._execute(sql + " ORDER BY id", params)]

    def purge(self, before: float) -> int:
        """Delete the rows written before ``before`` (seconds since the epoch); returns how many."""
        models = [row[0] for row in self._execute("SELECT DISTINCT model FROM predictions")]
        removed = 0
        for model in models:  # by (model, at): the index every insert keeps anyway
            with self.transaction() as cursor:
                cursor.execute(self._sql("DELETE FROM predictions WHERE model = ? AND at < ?"), (model, before))
                removed += max(cursor.rowcount, 0)
        return removed

    def count(self, model: str | None = None) -> int:
        if model is None:
            return int(self._execute("SELECT COUNT(*) FROM predictions")[0][0])
        return int(self._execute("SELECT COUNT(*) FROM predictions WHERE model = ?", [model])[0][0])

    def close(self) -> None:
        with self._lock:
            self._connection.close()


class SqliteStore(Store):
    dialect = "sqlite"
    SIZES = (512, 64, 8, 1)  # rows a statement (512: 7,680 parameters, under SQLite's 32,766)

    def __init__(self, path: Path, busy_seconds: float = 10.0) -> None:
        super().__init__()
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(path, timeout=busy_seconds, check_same_thread=False)
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=NORMAL")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the prediction log {path}: {exc}") from None

    @contextmanager
    def _migration_lock(self, cursor) -> Iterator[None]:
        cursor.execute("BEGIN IMMEDIATE")  # SQLite's write lock: one process migrates, the others wait and see it
        yield

    def insert(self, rows: Sequence[tuple]) -> None:
        """Rows in one transaction, many to a statement (``INSERT ... VALUES (...), (...), ...``): one step of
        SQLite a statement, where ``executemany`` takes one a row, and a thread beside an event loop gives the
        interpreter lock up and takes it back at every step (measured: the writer's CPU 17 us a request with
        ``executemany``, 13 with this). Statements hold :data:`SIZES` rows only, so few distinct statements are ever
        prepared (each is cached, and one of a thousand rows is large: a statement a remainder size grew a worker
        by 40 MB in a minute)."""
        width = len(schema.COLUMNS)
        head = f"INSERT INTO predictions ({', '.join(schema.COLUMNS)}) VALUES "
        one = "(" + ", ".join("?" * width) + ")"
        with self.transaction() as cursor:
            start = 0
            for size in self.SIZES:
                while len(rows) - start >= size:
                    chunk = rows[start : start + size]
                    cursor.execute(head + ", ".join([one] * size), [value for row in chunk for value in row])
                    start += size


class PostgresStore(Store):
    dialect = "postgresql"
    placeholder = "%s"

    def __init__(self, url: str, connect_seconds: int = 10) -> None:
        super().__init__()
        try:
            import psycopg
        except ImportError:  # pragma: no cover - psycopg is pinned in the service's requirements
            raise StoreError("PREDICTION_LOG_URL is a PostgreSQL URL but psycopg is not installed") from None
        self.url = url
        try:
            self._connection = psycopg.connect(url, connect_timeout=connect_seconds,
                                               application_name=f"sparsity-log-{os.getpid()}")  # fmt: skip
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to the prediction log {describe(url)}: {exc}".strip()) from None

    @contextmanager
    def _migration_lock(self, cursor) -> Iterator[None]:
        cursor.execute("SELECT pg_advisory_xact_lock(7396001)")  # held to the transaction's end
        yield

    def insert(self, rows: Sequence[tuple]) -> None:
        """COPY: one round trip for the whole batch (about 10x executemany's rows a second here)."""
        sql = f"COPY predictions ({', '.join(schema.COLUMNS)}) FROM STDIN"
        with self.transaction() as cursor, cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
