"""INSERT / UPSERT / ON CONFLICT / UPDATE / DELETE .. RETURNING, through psycopg (extended
protocol), asyncpg, pg8000 and psql (simple protocol), as PostgreSQL answers them."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator

import asyncpg
import pg8000.native
import psycopg
import pytest

from tests.serverproc import ServerProcess

_names = itertools.count()


@pytest.fixture
def conn(shared_server: ServerProcess) -> Iterator[psycopg.Connection]:
    with psycopg.connect(shared_server.dsn(), autocommit=True) as c:
        yield c


def fresh(conn: psycopg.Connection, kind: str = "") -> str:
    """A new collection's name (the tests share one server)."""
    name = f"r{next(_names)}"
    conn.execute(f"CREATE COLLECTION {name} {kind}")
    return name


def kv(conn: psycopg.Connection) -> str:
    return fresh(conn, "TYPE KEY_VALUE (key TEXT PRIMARY KEY, hits INT8)")


def psql(srv: ServerProcess, sql: str) -> list[str]:
    out = subprocess.run(
        [*srv.psql(), "-v", "ON_ERROR_STOP=1", "-AX", "-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_insert_values_returns_columns_expressions_and_aliases(conn: psycopg.Connection) -> None:
    c = fresh(conn)
    cur = conn.execute(
        f"INSERT INTO {c} (id, name, age) VALUES ('u1', 'Ann', 30), ('u2', 'Bob', 25) "
        "RETURNING id, age + 1 AS next_age, upper(name), age * 2"
    )
    assert cur.statusmessage == "INSERT 0 2"
    assert [d.name for d in cur.description] == ["id", "next_age", "upper", "?column?"]
    assert cur.fetchall() == [("u1", 31, "ANN", 60), ("u2", 26, "BOB", 50)]


def test_insert_returning_star_gives_every_field_of_the_new_row(conn: psycopg.Connection) -> None:
    c = fresh(conn)
    conn.execute(f"INSERT INTO {c} (id, a) VALUES ('x', 1)")
    cur = conn.execute(f"INSERT INTO {c} (id, b) VALUES ('y', 'two') RETURNING *")
    assert [d.name for d in cur.description] == ["id", "a", "b"]
    assert cur.fetchall() == [("y", None, "two")]


def test_object_form_insert_returns_generated_ids(conn: psycopg.Connection) -> None:
    c = fresh(conn)
    one = conn.execute(f"INSERT INTO {c} {{ name: 'Carol', n: 5 }} RETURNING id, name, n")
    assert one.statusmessage == "INSERT 0 1"
    (gen, name, n), *rest = one.fetchall()
    assert (name, n, rest) == ("Carol", 5, [])
    assert len(gen) == 36 and gen[14] == "7"  # a UUID v7, the one that was stored
    many = conn.execute(
        f"INSERT INTO {c} [ {{ id: 'd1', name: 'Dan' }}, {{ name: 'Eve' }} ] RETURNING id"
    )
    assert many.statusmessage == "INSERT 0 2"
    ids = [r[0] for r in many.fetchall()]
    assert ids[0] == "d1" and len(ids[1]) == 36
    stored = conn.execute(f"SELECT id, name FROM {c} ORDER BY name").fetchall()
    assert stored == [(gen, "Carol"), ("d1", "Dan"), (ids[1], "Eve")]


def test_update_returns_the_rows_after_the_update(conn: psycopg.Connection) -> None:
    c = fresh(conn)
    conn.execute(f"INSERT INTO {c} (id, age) VALUES ('u1', 30), ('u2', 40), ('u3', 50)")
    cur = conn.execute(f"UPDATE {c} SET age = age + 1 WHERE age < 45 RETURNING id, age")
    assert cur.statusmessage == "UPDATE 2"
    assert sorted(cur.fetchall()) == [("u1", 31), ("u2", 41)]
    none = conn.execute(f"UPDATE {c} SET age = 0 WHERE id = 'nobody' RETURNING age")
    assert none.statusmessage == "UPDATE 0" and none.fetchall() == []


def test_update_to_a_value_of_another_type_is_still_sent(conn: psycopg.Connection) -> None:
    c = fresh(conn)
    conn.execute(f"INSERT INTO {c} (id, n) VALUES ('a', 5)")
    cur = conn.execute(f"UPDATE {c} SET n = 'five' RETURNING n")
    assert cur.fetchall() == [("five",)]
    assert conn.execute(f"SELECT n FROM {c}").fetchall() == [("five",)]


def test_an_error_in_returning_changes_nothing(conn: psycopg.Connection) -> None:
    c = fresh(conn)
    conn.execute(f"INSERT INTO {c} (id, n) VALUES ('a', 5)")
    for sql in (
        f"DELETE FROM {c} RETURNING 1 / (n - 5)",
        f"UPDATE {c} SET n = 6 RETURNING 1 / (n - 6)",
        f"INSERT INTO {c} (id, n) VALUES ('b', 0) RETURNING 1 / n",
    ):
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute(sql)
    assert conn.execute(f"SELECT id, n FROM {c}").fetchall() == [("a", 5)]


def test_a_type_changed_in_the_transaction_is_still_returned(conn: psycopg.Connection) -> None:
    c = fresh(conn)
    conn.execute(f"INSERT INTO {c} (id, n) VALUES ('a', 5)")
    with conn.transaction():
        conn.execute(f"UPDATE {c} SET n = 'x'")
        assert conn.execute(f"DELETE FROM {c} RETURNING id, n").fetchall() == [("a", "x")]


def test_delete_returns_the_deleted_rows_old_values(conn: psycopg.Connection) -> None:
    c = fresh(conn)
    conn.execute(f"INSERT INTO {c} (id, name) VALUES ('u1', 'Ann'), ('u2', 'Bob')")
    cur = conn.execute(f"DELETE FROM {c} WHERE id = 'u2' RETURNING *")
    assert cur.statusmessage == "DELETE 1"
    assert [d.name for d in cur.description] == ["id", "name"]
    assert cur.fetchall() == [("u2", "Bob")]
    assert conn.execute(f"SELECT id FROM {c}").fetchall() == [("u1",)]


def test_kv_upsert_and_on_conflict_return_as_postgresql(conn: psycopg.Connection) -> None:
    c = kv(conn)
    conn.execute(f"INSERT INTO {c} (key, hits) VALUES ('k', 1)")
    upd = conn.execute(
        f"INSERT INTO {c} (key, hits) VALUES ('k', 1), ('new', 1) "
        f"ON CONFLICT (key) DO UPDATE SET hits = {c}.hits + 10 RETURNING key, hits"
    )
    assert upd.statusmessage == "INSERT 0 2"
    assert upd.fetchall() == [("k", 11), ("new", 1)]
    # DO NOTHING returns nothing for the rows it skipped.
    skip = conn.execute(
        f"INSERT INTO {c} (key, hits) VALUES ('k', 0), ('third', 3) ON CONFLICT DO NOTHING "
        "RETURNING key"
    )
    assert skip.statusmessage == "INSERT 0 1" and skip.fetchall() == [("third",)]
    ups = conn.execute(f"UPSERT INTO {c} {{ key: 'k', hits: 99 }} RETURNING *")
    assert ups.statusmessage == "INSERT 0 1" and ups.fetchall() == [("k", 99)]
    obj = conn.execute(
        f"INSERT INTO {c} {{ key: 'k' }} ON CONFLICT DO UPDATE SET hits = 7 RETURNING hits"
    )
    assert obj.fetchall() == [(7,)]
    gone = conn.execute(f"INSERT INTO {c} {{ key: 'k' }} ON CONFLICT DO NOTHING RETURNING key")
    assert gone.statusmessage == "INSERT 0 0" and gone.fetchall() == []
    deleted = conn.execute(f"DELETE FROM {c} WHERE key = 'k' RETURNING key, hits")
    assert deleted.fetchall() == [("k", 7)]


def test_returning_after_do_update_is_found_outside_strings(conn: psycopg.Connection) -> None:
    c = fresh(conn)
    conn.execute(f"INSERT INTO {c} {{ id: 'a' }}")
    cur = conn.execute(
        f"INSERT INTO {c} {{ id: 'a' }} ON CONFLICT DO UPDATE SET note = 'x RETURNING y' "
        "RETURNING id, note"
    )
    assert cur.fetchall() == [("a", "x RETURNING y")]
    cur = conn.execute(f"UPSERT INTO {c} (id, note) VALUES ('a', 'z') RETURNING note")
    assert cur.statusmessage == "INSERT 0 1" and cur.fetchall() == [("z",)]


def test_kv_ttl_is_not_returned_as_a_field(conn: psycopg.Connection) -> None:
    c = kv(conn)
    cur = conn.execute(f"INSERT INTO {c} {{ key: 's', hits: 1, ttl: 3600 }} RETURNING *")
    assert [d.name for d in cur.description] == ["key", "hits"]
    assert cur.fetchall() == [("s", 1)]


def test_unknown_column_on_typed_kv_is_null_as_in_select(conn: psycopg.Connection) -> None:
    c = kv(conn)
    conn.execute(f"INSERT INTO {c} (key, hits) VALUES ('a', 1)")
    assert conn.execute(f"SELECT nope FROM {c}").fetchall() == [(None,)]
    cur = conn.execute(f"UPDATE {c} SET hits = 2 RETURNING hits, nope")
    assert cur.fetchall() == [(2, None)]


def test_returning_in_a_transaction_shows_what_commits(conn: psycopg.Connection) -> None:
    c = fresh(conn)
    conn.execute(f"INSERT INTO {c} (id, n) VALUES ('a', 1)")
    with conn.transaction():
        gen = conn.execute(f"INSERT INTO {c} {{ n: 2 }} RETURNING id").fetchone()
        after = conn.execute(f"UPDATE {c} SET n = n * 10 RETURNING id, n").fetchall()
        assert gen is not None
        assert sorted(after) == sorted([("a", 10), (gen[0], 20)])
    assert sorted(conn.execute(f"SELECT id, n FROM {c}").fetchall()) == sorted(after)
    with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
        assert conn.execute(f"DELETE FROM {c} WHERE id = 'a' RETURNING n").fetchall() == [(10,)]
        conn.execute(f"INSERT INTO {c} (id) VALUES ('{gen[0]}')")
    assert conn.execute(f"SELECT n FROM {c} WHERE id = 'a'").fetchall() == [(10,)]


def test_psycopg_executemany_returning(conn: psycopg.Connection) -> None:
    c = fresh(conn)
    cur = conn.cursor()
    cur.executemany(
        f"INSERT INTO {c} (id, name) VALUES (%s, %s) RETURNING id, upper(name)",
        [("a", "ann"), ("b", "bob"), ("c", "cy")],
        returning=True,
    )
    got = [r for _ in cur.results() for r in cur.fetchall()]
    assert got == [("a", "ANN"), ("b", "BOB"), ("c", "CY")]


def test_psycopg_prepared_statement_describes_returning(conn: psycopg.Connection) -> None:
    c = kv(conn)
    for i in range(3):  # prepared from the second execution on: Describe of the statement
        cur = conn.execute(
            f"INSERT INTO {c} (key, hits) VALUES (%s, %s) RETURNING key, hits",
            (f"k{i}", i),
            prepare=True,
        )
        assert cur.fetchall() == [(f"k{i}", i)]
        assert [(d.name, d.type_code) for d in cur.description] == [("key", 25), ("hits", 20)]


def test_sql_prepare_and_execute_return_rows(shared_server: ServerProcess) -> None:
    name = f"r{next(_names)}"
    psql(shared_server, f"CREATE COLLECTION {name} TYPE KEY_VALUE (key TEXT PRIMARY KEY, n INT8)")
    out = psql(
        shared_server,
        f"PREPARE ins (text, int8) AS INSERT INTO {name} (key, n) VALUES ($1, $2) "
        f"RETURNING key, n + 1 AS m; EXECUTE ins ('a', 41);",
    )
    assert out == ["PREPARE", "key|m", "a|42", "(1 row)", "INSERT 0 1"]


async def test_asyncpg_fetch_on_insert_returning(shared_server: ServerProcess) -> None:
    conn = await asyncpg.connect(
        host="127.0.0.1", port=shared_server.port, user="nodedb", database="nodedb"
    )
    try:
        name = f"r{next(_names)}"
        await conn.execute(
            f"CREATE COLLECTION {name} TYPE KEY_VALUE (key TEXT PRIMARY KEY, n INT8)"
        )
        rows = await conn.fetch(
            f"INSERT INTO {name} (key, n) VALUES ($1, $2), ($3, $4) RETURNING key, n, n + 1 AS m",
            "a",
            1,
            "b",
            2,
        )
        assert [tuple(r) for r in rows] == [("a", 1, 2), ("b", 2, 3)]
        stmt = await conn.prepare(f"UPDATE {name} SET n = n + $1::int8 WHERE key = $2 RETURNING *")
        assert [(a.name, a.type.name) for a in stmt.get_attributes()] == [
            ("key", "text"),
            ("n", "int8"),
        ]
        assert [tuple(r) for r in await stmt.fetch(5, "a")] == [("a", 6)]
        assert await conn.fetchval(f"DELETE FROM {name} WHERE key = 'b' RETURNING n") == 2
        # execute() without arguments is the simple protocol: the tag is the status.
        assert await conn.execute(f"UPDATE {name} SET n = 0 RETURNING n") == "UPDATE 1"
    finally:
        await conn.close()


async def test_asyncpg_type_changed_in_the_transaction_is_an_error_not_a_hang(
    shared_server: ServerProcess,
) -> None:
    conn = await asyncpg.connect(
        host="127.0.0.1", port=shared_server.port, user="nodedb", database="nodedb"
    )
    try:
        name = f"r{next(_names)}"
        await conn.execute(f"CREATE COLLECTION {name}")
        await conn.execute(f"INSERT INTO {name} (id, n) VALUES ('a', 5)")
        tr = conn.transaction()
        await tr.start()
        await conn.execute(f"UPDATE {name} SET n = 'x'")
        with pytest.raises(asyncpg.DatatypeMismatchError, match="cast it"):
            await conn.fetch(f"DELETE FROM {name} RETURNING n")
        await tr.rollback()
        async with conn.transaction():
            await conn.execute(f"UPDATE {name} SET n = 'x'")
            got = await conn.fetch(f"DELETE FROM {name} RETURNING n::text")
        assert [tuple(r) for r in got] == [("x",)]
        assert await conn.fetchval(f"SELECT COUNT(*) FROM {name}") == 0
    finally:
        await conn.close()


def test_pg8000_returning(shared_server: ServerProcess) -> None:
    con = pg8000.native.Connection(
        "nodedb", host="127.0.0.1", port=shared_server.port, database="nodedb"
    )
    try:
        name = f"r{next(_names)}"
        con.run(f"CREATE COLLECTION {name}")
        assert con.run(
            f"INSERT INTO {name} (id, name) VALUES (:i, :n) RETURNING id, name", i="p1", n="Pat"
        ) == [["p1", "Pat"]]
        assert con.row_count == 1
        assert con.run(f"UPDATE {name} SET name = :n RETURNING name", n="Sam") == [["Sam"]]
        assert con.run(f"DELETE FROM {name} RETURNING id") == [["p1"]]
    finally:
        con.close()


def test_psql_prints_returned_rows_and_the_tag(shared_server: ServerProcess) -> None:
    name = f"r{next(_names)}"
    psql(shared_server, f"CREATE COLLECTION {name}")
    out = psql(
        shared_server,
        f"INSERT INTO {name} (id, age) VALUES ('a', 1), ('b', 2) RETURNING id, age",
    )
    assert out == ["id|age", "a|1", "b|2", "(2 rows)", "INSERT 0 2"]
    out = psql(shared_server, f"UPDATE {name} SET age = age + 1 WHERE id = 'a' RETURNING age")
    assert out == ["age", "2", "(1 row)", "UPDATE 1"]
    out = psql(shared_server, f"DELETE FROM {name} WHERE id = 'b' RETURNING *")
    assert out == ["id|age", "b|2", "(1 row)", "DELETE 1"]


def test_returning_on_timeseries_is_refused_and_writes_nothing(conn: psycopg.Connection) -> None:
    name = f"r{next(_names)}"
    conn.execute(f"CREATE TIMESERIES {name}")
    with pytest.raises(psycopg.errors.FeatureNotSupported):
        conn.execute(f"INSERT INTO {name} (ts, host) VALUES (now(), 'h1') RETURNING *")
    assert conn.execute(f"SELECT COUNT(*) FROM {name}").fetchone() == (0,)


@pytest.mark.parametrize(
    "tail",
    ["RETURNING", "RETURNING id FROM x", "RETURNING id id id"],
)
def test_a_bad_returning_list_is_a_syntax_error(conn: psycopg.Connection, tail: str) -> None:
    c = fresh(conn)
    for sql in (
        f"INSERT INTO {c} {{ id: 'a' }} {tail}",
        f"INSERT INTO {c} (id) VALUES ('a') {tail}",
    ):
        with pytest.raises(psycopg.errors.SyntaxError):
            conn.execute(sql)
    assert conn.execute(f"SELECT COUNT(*) FROM {c}").fetchone() == (0,)


def test_aggregates_are_not_allowed_in_returning(conn: psycopg.Connection) -> None:
    c = fresh(conn)
    with pytest.raises(psycopg.errors.GroupingError):
        conn.execute(f"INSERT INTO {c} (id) VALUES ('a') RETURNING count(*)")
