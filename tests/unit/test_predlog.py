"""The prediction log's store (:mod:`predlog`) on both databases: a real SQLite file and a real PostgreSQL server
(``tests/postgres.py``; marked ``system``: ``make test`` installs it, ``make test-fast`` runs SQLite alone)."""

from __future__ import annotations

import multiprocessing
import sqlite3
from types import SimpleNamespace

import numpy as np
import pytest

from predlog import schema
from predlog.dataset import reviewed_dataset
from predlog.query import MAX_LIMIT, Filters, QueryError, parse
from predlog.rows import Entry, decode_input, encode_input, rows_of
from predlog.store import SqliteStore, StoreError, open_store

CLASSES = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def postgres_url():
    from benchmarks.postgres import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.system)])
def store(request, tmp_path):
    if request.param == "sqlite":
        opened = open_store(str(tmp_path / "log.sqlite3"))
    else:
        from benchmarks.postgres import fresh_database

        url = request.getfixturevalue("postgres_url")
        opened = open_store(fresh_database(url, f"t_{abs(hash(request.node.name)) % 10**9}"))
    yield opened
    opened.close()


def prediction(n: int, atypical=None, rng=None):
    rng = rng or np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(10), n)
    zeros = {"conv1": rng.uniform(0.9, 1, n), "dense": rng.uniform(0.8, 0.9, n)}
    return SimpleNamespace(
        probabilities=probabilities,
        labels=probabilities.argmax(axis=1),
        layer_sparsity=zeros,
        overall=(zeros["conv1"] + zeros["dense"]) / 2,
        scores=rng.uniform(0, 20, n),
        atypical=np.asarray(atypical if atypical is not None else [False] * n),
        contributions=None,
    )


def entry(n=3, at=1000.0, version="v1", role="primary", atypical=None, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 28, 28)).astype(np.float32)
    return Entry(at, f"req-{seed}", "mnist_cnn", version, role, "/models/{name}/predict", x,
                 prediction(n, atypical, rng), 0.0012)  # fmt: skip


def write(store, *entries, sample=1.0, inputs="atypical"):
    rng = np.random.default_rng(0)
    rows = [row for e in entries for row in rows_of(e, sample, inputs, rng)]
    store.insert(rows)
    return rows


def test_migrations_bring_a_new_database_to_the_current_version_once(store):
    assert store.version() == schema.VERSION
    assert store.migrate() == schema.VERSION  # again: nothing to do
    assert store.version() == schema.VERSION


def test_a_database_newer_than_the_code_is_refused_untouched(tmp_path):
    path = tmp_path / "log.sqlite3"
    open_store(str(path)).close()
    with sqlite3.connect(path) as connection:
        connection.execute("INSERT INTO predlog_schema (version) VALUES (?)", (schema.VERSION + 1,))
    with pytest.raises(StoreError, match="newer than this service"):
        open_store(str(path))


def test_migrating_an_old_database_keeps_its_rows(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as connection:  # a database at version 1, with a row
        connection.execute("CREATE TABLE predlog_schema (version INTEGER PRIMARY KEY, at TEXT)")
        for sql in schema.statements("sqlite", 1):
            connection.execute(sql)
        connection.execute("INSERT INTO predlog_schema (version) VALUES (1)")
        rows = rows_of(entry(1), 1.0, "none", np.random.default_rng(0))
        connection.execute(f"INSERT INTO predictions ({', '.join(schema.COLUMNS)}) VALUES "
                           f"({', '.join('?' * len(schema.COLUMNS))})", rows[0])  # fmt: skip
    store = open_store(str(path))
    assert store.version() == 2
    (row,) = store.page("mnist_cnn", Filters())
    assert row["review"] is None and row["label"] == rows[0][7]


def test_rows_are_read_back_with_every_filter_and_pages_cover_each_row_once(store):
    write(store, entry(4, at=1000.0, version="v1", atypical=[True, False, False, True], seed=1))
    write(store, entry(3, at=2000.0, version="v2", role="canary", seed=2))
    write(store, entry(5, at=3000.0, version="v2", atypical=[False] * 4 + [True], seed=3))
    assert store.count("mnist_cnn") == 12
    assert [r["version"] for r in store.page("mnist_cnn", Filters(version="v1"))] == ["v1"] * 4
    atypical = store.page("mnist_cnn", Filters(atypical=True))
    assert len(atypical) == 3 and all(r["atypical"] for r in atypical)
    assert all(r["has_input"] for r in atypical)  # inputs kept for atypical items only (the default)
    assert not any(r["has_input"] for r in store.page("mnist_cnn", Filters(atypical=False)))
    assert {r["role"] for r in store.page("mnist_cnn", Filters(role="canary"))} == {"canary"}
    assert len(store.page("mnist_cnn", Filters(since=1500, until=2500))) == 3
    some = store.page("mnist_cnn", Filters())[0]
    assert all(r["label"] == some["label"] for r in store.page("mnist_cnn", Filters(label=some["label"])))
    seen, cursor = [], None
    while True:
        page = store.page("mnist_cnn", Filters(limit=5, cursor=cursor))
        seen += [r["id"] for r in page]
        if len(page) < 5:
            break
        cursor = page[-1]["id"]
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == 12
    assert store.page("other_model", Filters()) == []


def test_a_kept_input_is_the_array_the_model_was_given_bit_for_bit(store):
    e = entry(2, atypical=[True, False], seed=4)
    write(store, e)
    (row,) = store.page("mnist_cnn", Filters(atypical=True))
    stored = store.get("mnist_cnn", row["id"])
    np.testing.assert_array_equal(decode_input(bytes(stored["input"])), e.x[0])
    assert len(encode_input(e.x[0])) < e.x[0].nbytes
    assert store.get("other_model", row["id"]) is None


def test_a_review_is_stored_with_its_time_and_exported_as_a_dataset(store):
    e = entry(3, atypical=[True, True, True], seed=5)
    write(store, e)
    ids = sorted(r["id"] for r in store.page("mnist_cnn", Filters()))
    assert store.review("mnist_cnn", ids[0], "7", 5000.0)
    assert store.review("mnist_cnn", ids[1], schema.INVALID, 5001.0)
    assert not store.review("mnist_cnn", 10**9, "7", 5002.0)
    assert not store.review("iris_l1", ids[2], "7", 5002.0)  # another model's row is not this one's
    got = store.get("mnist_cnn", ids[0])
    assert got["review"] == "7" and got["reviewed_at"] == 5000.0
    assert [r["id"] for r in store.page("mnist_cnn", Filters(reviewed=False))] == [ids[2]]
    found = reviewed_dataset(store, "mnist_cnn", CLASSES)
    assert found.y.tolist() == [7] and found.invalid == 1 and found.ids.tolist() == [ids[0]]
    np.testing.assert_array_equal(found.x[0], e.x[0])


def test_purge_removes_only_rows_older_than_the_retention(store):
    write(store, entry(2, at=1000.0, seed=6), entry(3, at=9000.0, seed=7))
    assert store.purge(5000.0) == 2
    assert store.count() == 3


def test_sql_in_every_field_is_data_never_sql(store):
    write(store, entry(2, seed=8))
    hostile = "x' OR '1'='1'; DROP TABLE predictions; --"
    assert store.page(hostile, Filters()) == []
    assert store.page("mnist_cnn", Filters(version=hostile)) == []
    assert store.page("mnist_cnn", Filters(role=hostile)) == []
    assert not store.review(hostile, 1, hostile, 1.0)
    assert store.count() == 2


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": [str(MAX_LIMIT + 1)]}, "limit"),
        ({"limit": ["0"]}, "limit"),
        ({"limit": ["-1"]}, "limit"),
        ({"limit": ["1", "2"]}, "limit"),
        ({"cursor": ["abc"]}, "cursor"),
        ({"atypical": ["yes please"]}, "atypical"),
        ({"since": ["yesterday"]}, "since"),
        ({"since": ["nan"]}, "since"),
        ({"since": ["2026-12-07"], "until": ["2026-12-06"]}, "until"),
        ({"label": ["eleven"]}, "label"),
        ({"label": ["10"]}, "label"),
        ({"role": ["boss"]}, "role"),
        ({"version": ["v1' OR 1=1 --"]}, "version"),
        ({"version": ["x" * 500]}, "version"),
        ({"order": ["id; DROP TABLE predictions"]}, "query"),
    ],
)
def test_a_bad_filter_names_its_parameter(query, field):
    with pytest.raises(QueryError) as caught:
        parse(query, CLASSES)
    assert caught.value.field == field and caught.value.rule


def test_good_filters_are_read():
    found = parse({"version": ["v2"], "atypical": ["true"], "label": ["7"], "since": ["2026-12-07T00:00:00Z"],
                   "limit": ["10"], "reviewed": ["false"], "role": ["canary"]}, CLASSES)  # fmt: skip
    assert found == Filters("v2", 1796601600.0, None, True, 7, "canary", False, None, 10)


def test_sampling_keeps_every_atypical_item_and_the_inputs_setting_is_followed():
    e = entry(200, atypical=[i % 10 == 0 for i in range(200)], seed=9)
    rng = np.random.default_rng(1)
    none_typical = rows_of(e, 0.0, "atypical", rng)
    assert len(none_typical) == 20 and all(row[12] for row in none_typical)
    half = rows_of(e, 0.5, "atypical", rng)
    assert 20 + 60 < len(half) < 20 + 120 and sum(bool(r[12]) for r in half) == 20
    assert all(row[14] is not None for row in rows_of(e, 1.0, "all", rng))
    assert all(row[14] is None for row in rows_of(e, 1.0, "none", rng))


def _write_from_a_process(path: str, seed: int) -> None:
    store = open_store(path)
    for k in range(20):
        write(store, entry(5, at=float(k), seed=seed * 100 + k))
    store.close()


def test_several_processes_write_one_sqlite_file_safely(tmp_path):
    path = str(tmp_path / "shared.sqlite3")
    open_store(path).close()
    processes = [multiprocessing.get_context("spawn").Process(target=_write_from_a_process, args=(path, s))
                 for s in range(4)]  # fmt: skip
    for p in processes:
        p.start()
    for p in processes:
        p.join(120)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    store = SqliteStore(__import__("pathlib").Path(path))
    assert store.count() == 4 * 20 * 5
    assert store._execute("PRAGMA integrity_check") == [("ok",)]
