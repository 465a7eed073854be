"""Each real client library and psql doing the document and KV statements of SQL.md."""

from __future__ import annotations

import datetime as dt
import subprocess

import asyncpg
import pg8000.native
import psycopg
import pytest

from bench.pg import Postgres
from tests.serverproc import ServerProcess


def psql(srv: ServerProcess, *args: str, db: str = "nodedb", stdin: str | None = None) -> str:
    out = subprocess.run(
        [
            *srv.psql(db),
            "-v",
            "ON_ERROR_STOP=1",
            "-Atq",
            *args,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_psql_commands_and_script(server: ServerProcess) -> None:
    psql(server, "-c", "CREATE COLLECTION users")
    psql(
        server,
        "-c",
        "INSERT INTO users (id, name, age) VALUES ('u1', 'Alice', 30), ('u2', 'Bob', 25)",
    )
    script = """
    INSERT INTO users { id: 'u3', name: 'Carol', tags: ['ops', 'dev'], addr: { city: 'Oslo' } };
    INSERT INTO users [ { id: 'u4', name: 'Dan' }, { id: 'u5', name: 'Eve' } ];
    UPDATE users SET age = 31 WHERE id = 'u1';
    DELETE FROM users WHERE id = 'u2';
    SELECT id, name, age FROM users ORDER BY id;
    SELECT doc_get(addr, '$.city') FROM users WHERE id = 'u3';
    SELECT COUNT(*), MIN(age), MAX(age) FROM users;
    """
    out = psql(server, stdin=script).splitlines()
    assert out == ["u1|Alice|31", "u3|Carol|", "u4|Dan|", "u5|Eve|", "Oslo", "4|31|31"]
    # The generated id of an insert without one is a UUID v7.
    psql(server, "-c", "INSERT INTO users { name: 'NoId' }")
    gen = psql(server, "-c", "SELECT id FROM users WHERE name = 'NoId'").strip()
    assert len(gen) == 36 and gen[14] == "7"


def test_psql_kv_upsert_conflict_and_ttl(server: ServerProcess) -> None:
    psql(server, "-c", "CREATE COLLECTION sessions TYPE KEY_VALUE (key TEXT PRIMARY KEY)")
    psql(server, "-c", "INSERT INTO sessions { key: 'sess_1', user_id: 'alice', ttl: 3600 }")
    psql(server, "-c", "UPSERT INTO sessions { key: 'sess_1', user_id: 'bob' }")
    assert psql(server, "-c", "SELECT user_id FROM sessions WHERE key = 'sess_1'").strip() == "bob"
    psql(server, "-c", "INSERT INTO sessions { key: 'sess_1' } ON CONFLICT DO NOTHING")
    assert psql(server, "-c", "SELECT user_id FROM sessions WHERE key = 'sess_1'").strip() == "bob"
    psql(server, "-c", "INSERT INTO sessions { key: 'short', ttl: 1 }")
    assert psql(server, "-c", "SELECT COUNT(*) FROM sessions").strip() == "2"
    import time

    time.sleep(1.3)
    assert psql(server, "-c", "SELECT key FROM sessions ORDER BY key").split() == ["sess_1"]


def test_psycopg_implicit_transactions_commit_and_rollback(server: ServerProcess) -> None:
    with psycopg.connect(server.dsn()) as conn:
        conn.execute("CREATE COLLECTION users")
        conn.commit()
        cur = conn.cursor()
        cur.execute("INSERT INTO users (id, name, age) VALUES (%s, %s, %s)", ("p1", "Ann", 40))
        cur.execute("SELECT COUNT(*) FROM users")
        assert cur.fetchone() == (1,)  # the transaction sees its own write
        with psycopg.connect(server.dsn(), autocommit=True) as other:
            assert other.execute("SELECT COUNT(*) FROM users").fetchone() == (0,)
        conn.rollback()
        assert cur.execute("SELECT COUNT(*) FROM users").fetchone() == (0,)
        cur.execute("INSERT INTO users (id, name, age) VALUES (%s, %s, %s)", ("p1", "Ann", 40))
        cur.execute("INSERT INTO users (id, name, score) VALUES (%s, %s, %s)", ("p2", "Ben", 2.5))
        conn.commit()
        rows = cur.execute("SELECT id, name, age, score FROM users ORDER BY id").fetchall()
        assert rows == [("p1", "Ann", 40, None), ("p2", "Ben", None, 2.5)]
        # psycopg sends ints as binary int8 and the value stays an integer.
        assert cur.execute("SELECT age FROM users WHERE age > %s", (39,)).fetchall() == [(40,)]
        conn.commit()
        kv = conn.cursor()
        kv.execute("CREATE COLLECTION counters TYPE KEY_VALUE (key TEXT PRIMARY KEY, hits INT8)")
        for _ in range(3):
            kv.execute(
                "INSERT INTO counters (key, hits) VALUES (%s, 1) "
                "ON CONFLICT (key) DO UPDATE SET hits = counters.hits + 1",
                ("k",),
            )
        conn.commit()
        assert kv.execute("SELECT hits FROM counters WHERE key = %s", ("k",)).fetchone() == (3,)


def test_psycopg_types_round_trip(server: ServerProcess) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION things")
        ts = dt.datetime(2026, 4, 1, 12, 30, tzinfo=dt.UTC)
        conn.execute(
            "INSERT INTO things (id, b, blob, at, flag, doc) VALUES "
            "(%s, %s, %s, %s, %s, %s::jsonb)",
            ("t1", 7, b"\x00\x01\xff", ts, True, '{"a": [1, 2]}'),
        )
        row = conn.execute("SELECT b, blob, at, flag, doc FROM things WHERE id = 't1'").fetchone()
        assert row == (7, b"\x00\x01\xff", ts, True, {"a": [1, 2]})


async def test_asyncpg_prepared_statements_and_types(server: ServerProcess) -> None:
    conn = await asyncpg.connect(
        host="127.0.0.1", port=server.port, user="nodedb", database="nodedb"
    )
    try:
        await conn.execute("CREATE COLLECTION users")
        insert = await conn.prepare("INSERT INTO users (id, name, age) VALUES ($1, $2, $3::int8)")
        for i in range(20):
            await insert.fetch(f"u{i:02d}", f"name{i}", i)
        by_id = await conn.prepare("SELECT * FROM users WHERE id = $1")
        row = await by_id.fetchrow("u07")
        assert dict(row) == {"id": "u07", "name": "name7", "age": 7}
        rows = await conn.fetch(
            "SELECT id FROM users WHERE age >= $1::int8 ORDER BY age DESC LIMIT 3", 15
        )
        assert [r["id"] for r in rows] == ["u19", "u18", "u17"]
        agg = await conn.fetchrow("SELECT COUNT(*), SUM(age), AVG(age) FROM users")
        assert tuple(agg) == (20, 190, 9.5)
        grouped = await conn.fetch(
            "SELECT age % 2 AS parity, COUNT(*) FROM users GROUP BY parity ORDER BY 1"
        )
        assert [tuple(r) for r in grouped] == [(0, 10), (1, 10)]
        # A cursor fetching in pieces uses Execute with a row limit (PortalSuspended).
        async with conn.transaction():
            got = [
                r["id"] async for r in conn.cursor("SELECT id FROM users ORDER BY id", prefetch=7)
            ]
        assert got == [f"u{i:02d}" for i in range(20)]
        with pytest.raises(asyncpg.UniqueViolationError):
            await insert.fetch("u01", "dup", 1)
        assert await conn.fetchval("SELECT COUNT(*) FROM users") == 20
    finally:
        await conn.close()


async def _pipeline_outcome(port: int, user: str, database: str) -> list[object]:
    """What an extended-protocol batch leaves behind: asyncpg's executemany sends every
    Bind/Execute and one Sync, so a failing row undoes the whole batch; psycopg's
    pipeline mode in autocommit, as PostgreSQL answers it."""
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user=user, database=database)
    seen: list[object] = []
    try:
        await conn.execute("CREATE TABLE pipe (id int PRIMARY KEY, v text)")
        await conn.executemany("INSERT INTO pipe (id, v) VALUES ($1, $2)", [(1, "a"), (2, "b")])
        with pytest.raises(asyncpg.UniqueViolationError) as dup:
            await conn.executemany(
                "INSERT INTO pipe (id, v) VALUES ($1, $2)", [(3, "c"), (1, "dup"), (4, "d")]
            )
        seen.append(dup.value.sqlstate)
        seen.append([tuple(r) for r in await conn.fetch("SELECT id, v FROM pipe ORDER BY id")])
        await conn.executemany("UPDATE pipe SET v = $2 WHERE id = $1", [(1, "x"), (2, "y")])
        seen.append([tuple(r) for r in await conn.fetch("SELECT id, v FROM pipe ORDER BY id")])
    finally:
        await conn.close()
    with psycopg.connect(
        host="127.0.0.1", port=port, user=user, dbname=database, autocommit=True
    ) as pconn:
        try:
            with pconn.pipeline():
                for i in (10, 11, 1, 12):
                    pconn.execute("INSERT INTO pipe (id, v) VALUES (%s, 'p')", (i,))
        except psycopg.errors.UniqueViolation:
            seen.append("duplicate in the pipeline")
        seen.append([r[0] for r in pconn.execute("SELECT id FROM pipe ORDER BY id")])
        # Statements that meet the batch's transaction: ROLLBACK ends it, BEGIN takes it
        # over, SET runs inside it, a Query after the batch ends it first.
        for batch in (
            ["INSERT INTO pipe VALUES (20, 'r')", "ROLLBACK"],
            ["INSERT INTO pipe VALUES (21, 'b')", "BEGIN", "INSERT INTO pipe VALUES (22, 'b')"],
            ["ROLLBACK"],
            ["INSERT INTO pipe VALUES (23, 's')", "SET application_name = 'p'"],
            ["INSERT INTO pipe VALUES (24, 's')", "INSERT INTO pipe VALUES (1, 'dup')"],
            ["INSERT INTO pipe VALUES (25, 'c')", "COMMIT"],
        ):
            try:
                with pconn.pipeline():
                    for sql in batch:
                        pconn.execute(sql)
            except psycopg.Error as e:
                seen.append(e.sqlstate)
            seen.append(str(pconn.info.transaction_status))
        seen.append([r[0] for r in pconn.execute("SELECT id FROM pipe ORDER BY id")])
    return seen


async def test_a_batch_up_to_sync_is_one_transaction_as_in_postgresql(
    server: ServerProcess, postgres: Postgres
) -> None:
    ours = await _pipeline_outcome(server.port, "nodedb", "nodedb")
    theirs = await _pipeline_outcome(postgres.port, "postgres", "postgres")
    assert ours == theirs
    assert ours[0] == "23505" and ours[1] == [(1, "a"), (2, "b")]


def test_pg8000_untyped_parameters(server: ServerProcess) -> None:
    con = pg8000.native.Connection("nodedb", host="127.0.0.1", port=server.port, database="nodedb")
    try:
        con.run("CREATE COLLECTION users")
        con.run("INSERT INTO users (id, name, age) VALUES (:i, :n, :a::int8)", i="x1", n="Xi", a=33)
        con.run("INSERT INTO users (id, name, age) VALUES (:i, :n, :a::int8)", i="x2", n="Yo", a=21)
        # pg8000 sends every parameter untyped; compared with a number it is read as one.
        assert con.run("SELECT id FROM users WHERE age > :a ORDER BY id", a=25) == [["x1"]]
        con.run("UPDATE users SET age = age + 1 WHERE id = :i", i="x2")
        assert con.run("SELECT age FROM users WHERE id = 'x2'") == [[22]]
        con.run("DELETE FROM users WHERE name LIKE :p", p="X%")
        assert con.run("SELECT id FROM users") == [["x2"]]
        # An untyped value stored in a schemaless field is text, as SQL.md says.
        con.run("INSERT INTO users (id, note) VALUES ('x3', :v)", v=5)
        assert con.run("SELECT note FROM users WHERE id = 'x3'") == [["5"]]
    finally:
        con.close()


def test_concurrent_transactions_lose_no_increment(server: ServerProcess) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as setup:
        setup.execute("CREATE COLLECTION c TYPE KEY_VALUE (key TEXT PRIMARY KEY, n INT8)")
        setup.execute("INSERT INTO c (key, n) VALUES ('k', 0)")
    a = psycopg.connect(server.dsn())
    b = psycopg.connect(server.dsn())
    try:
        a.execute("UPDATE c SET n = n + 1 WHERE key = 'k'")
        b.execute("UPDATE c SET n = n + 10 WHERE key = 'k'")
        assert a.execute("SELECT n FROM c WHERE key = 'k'").fetchone() == (1,)  # its own write
        a.commit()
        b.commit()
    finally:
        a.close()
        b.close()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT n FROM c WHERE key = 'k'").fetchone() == (11,)
