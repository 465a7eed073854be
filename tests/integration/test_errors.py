"""Each SQLSTATE of SQL.md that applies, and the connection stays usable after each."""

from __future__ import annotations

import threading
from pathlib import Path

import asyncpg
import psycopg
import pytest

from tests.serverproc import ServerProcess

CASES = [
    ("SELEC * FROM users", "42601"),
    ("INSERT INTO users { id: }", "42601"),
    ("SELECT * FROM nosuch", "42P01"),
    ("SELECT frobnicate(1)", "42883"),
    ("INSERT INTO users (id) VALUES ('u1')", "23505"),
    ("CREATE COLLECTION users", "42P07"),
    ("SELECT $1::text::int8", "22P02"),
    ("UPDATE kv SET n = 'abc' WHERE key = 'k'", "22P02"),
    ("SELECT 1 / 0", "22012"),
    ("SHOW no_such_setting", "42704"),
]


@pytest.fixture(scope="module")
def prepared(shared_server: ServerProcess) -> ServerProcess:
    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION users")
        conn.execute("INSERT INTO users (id, name) VALUES ('u1', 'Alice')")
        conn.execute("CREATE COLLECTION kv TYPE KEY_VALUE (key TEXT PRIMARY KEY, n INT8)")
        conn.execute("INSERT INTO kv (key, n) VALUES ('k', 1)")
    return shared_server


@pytest.mark.parametrize(("sql", "code"), CASES)
async def test_error_has_sqlstate_and_connection_survives(
    prepared: ServerProcess, sql: str, code: str
) -> None:
    conn = await asyncpg.connect(
        host="127.0.0.1", port=prepared.port, user="nodedb", database="nodedb"
    )
    try:
        with pytest.raises(asyncpg.PostgresError) as err:
            if "$1" in sql:
                await conn.fetch(sql, "not-a-number")
            else:
                await conn.execute(sql)
        assert err.value.sqlstate == code, str(err.value)
        assert await conn.fetchval("SELECT COUNT(*) FROM users") == 1
    finally:
        await conn.close()


def test_error_in_transaction_aborts_it_until_rollback(prepared: ServerProcess) -> None:
    with psycopg.connect(prepared.dsn()) as conn:
        conn.execute("INSERT INTO users (id) VALUES ('t1')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO users (id) VALUES ('u1')")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute("SELECT COUNT(*) FROM users").fetchone() == (1,)


async def test_statement_timeout_is_57014(prepared: ServerProcess) -> None:
    conn = await asyncpg.connect(
        host="127.0.0.1", port=prepared.port, user="nodedb", database="nodedb"
    )
    try:
        await conn.execute("SET statement_timeout = 200")
        with pytest.raises(asyncpg.QueryCanceledError):
            await conn.execute("SELECT pg_sleep(5)")
        await conn.execute("SET statement_timeout = 0")
        assert await conn.fetchval("SELECT 41 + 1") == 42
    finally:
        await conn.close()


def test_cancel_request_is_57014(prepared: ServerProcess) -> None:
    """psycopg's cancel() sends a CancelRequest on a second connection, as libpq does."""
    with psycopg.connect(prepared.dsn(), autocommit=True) as conn:
        timer = threading.Timer(0.3, conn.cancel)
        timer.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(5)")
        timer.join()
        assert conn.execute("SELECT 41 + 1").fetchone() == (42,)


async def test_too_many_connections_is_53300(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", env={"NODEDB_MAX_CONNECTIONS": "2"}).start()
    try:
        held = [
            await asyncpg.connect(host="127.0.0.1", port=srv.port, user="nodedb") for _ in range(2)
        ]
        with pytest.raises(asyncpg.PostgresError) as err:
            await asyncpg.connect(host="127.0.0.1", port=srv.port, user="nodedb")
        assert err.value.sqlstate == "53300"
        for c in held:
            await c.close()
        # A slot freed is a slot usable again.
        again = await asyncpg.connect(host="127.0.0.1", port=srv.port, user="nodedb")
        await again.close()
    finally:
        srv.kill9()
