"""PREPARE / EXECUTE / DEALLOCATE / DISCARD, and the one namespace they share with the
statements drivers prepare through the protocol (psycopg relies on both)."""

from __future__ import annotations

import subprocess

import asyncpg
import pg8000.native
import psycopg
import psycopg.errors
import pytest

from tests.serverproc import ServerProcess


@pytest.fixture(scope="module")
def items(shared_server: ServerProcess) -> ServerProcess:
    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION items")
        conn.execute("INSERT INTO items (id, n) VALUES ('a', 1), ('b', 2), ('c', 3)")
    return shared_server


def test_psycopg_default_prepare_threshold_survives_rollback(items: ServerProcess) -> None:
    with psycopg.connect(items.dsn()) as conn:
        assert conn.prepare_threshold == 5
        for _ in range(10):  # past the threshold psycopg prepares it server-side
            got = conn.execute("SELECT n FROM items WHERE id = %s", ("b",)).fetchall()
            assert got == [(2,)]
        # The statement psycopg prepared is visible to SQL EXECUTE: one namespace.
        assert conn.execute("EXECUTE _pg3_0('c')").fetchall() == [(3,)]
        conn.rollback()  # ROLLBACK, then DEALLOCATE ALL
        with pytest.raises(psycopg.errors.InvalidSqlStatementName):
            conn.execute("EXECUTE _pg3_0('c')")
        conn.rollback()
        for i in range(10):
            got = conn.execute("SELECT id FROM items WHERE n = %s", (i % 3 + 1,)).fetchall()
            assert got == [("abc"[i % 3],)]
        conn.rollback()
        assert conn.execute("SELECT COUNT(*) FROM items").fetchone() == (3,)


def test_psycopg_prepare_threshold_zero(items: ServerProcess) -> None:
    with psycopg.connect(items.dsn(), autocommit=True, prepare_threshold=0) as conn:
        conn.execute("CREATE COLLECTION scratch")
        for i in range(3):
            conn.execute("INSERT INTO scratch (id, n) VALUES (%s, %s)", (f"s{i}", i))
        assert conn.execute("SELECT COUNT(*) FROM scratch").fetchone() == (3,)
        # A DROP makes psycopg forget its statements and send DEALLOCATE ALL.
        conn.execute("DROP COLLECTION scratch PURGE")
        conn.execute("CREATE COLLECTION scratch")
        conn.execute("INSERT INTO scratch (id, n) VALUES (%s, %s)", ("t", 9))
        assert conn.execute("SELECT n FROM scratch WHERE id = %s", ("t",)).fetchall() == [(9,)]
        conn.execute("DEALLOCATE ALL")
        assert conn.execute("SELECT n FROM scratch WHERE id = %s", ("t",)).fetchall() == [(9,)]
        conn.execute("DROP COLLECTION scratch PURGE")


def test_sql_and_protocol_statements_share_one_namespace(items: ServerProcess) -> None:
    with psycopg.connect(items.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT n FROM items WHERE id = %s", ("a",), prepare=True).fetchone()
        conn.execute("DEALLOCATE _pg3_0")  # removes the protocol-prepared statement
        with pytest.raises(psycopg.errors.InvalidSqlStatementName):
            conn.execute("EXECUTE _pg3_0('a')")
        conn.execute("PREPARE _pg3_1 AS SELECT 1")
        # psycopg's next Parse uses the name SQL PREPARE took.
        with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
            conn.execute("SELECT id FROM items WHERE n = %s", (2,), prepare=True)
        assert conn.execute("EXECUTE _pg3_1").fetchone() == (1,)


def test_psql_prepare_execute_deallocate(items: ServerProcess) -> None:
    script = """
    PREPARE byn (int8) AS SELECT id FROM items WHERE n >= $1 ORDER BY id;
    EXECUTE byn(2);
    EXECUTE byn('3');
    PREPARE ins (text, int8) AS INSERT INTO items (id, n) VALUES ($1, $2);
    EXECUTE ins('d', 2 + 2);
    EXECUTE byn (4);
    DELETE FROM items WHERE id = 'd';
    DEALLOCATE byn;
    DEALLOCATE PREPARE ins;
    PREPARE byn AS SELECT COUNT(*) FROM items;
    EXECUTE byn;
    DEALLOCATE ALL;
    """
    out = subprocess.run(
        [*items.psql(), "-v", "ON_ERROR_STOP=1", "-At"],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "PREPARE",
        "b",
        "c",
        "c",
        "PREPARE",
        "INSERT 0 1",
        "d",
        "DELETE 1",
        "DEALLOCATE",
        "DEALLOCATE",
        "PREPARE",
        "3",
        "DEALLOCATE ALL",
    ]


def test_execute_through_the_extended_protocol_describes_its_rows(items: ServerProcess) -> None:
    with psycopg.connect(items.dsn(), autocommit=True) as conn:
        conn.execute("PREPARE pick (int8) AS SELECT id, n FROM items WHERE n = $1")
        cur = conn.execute("EXECUTE pick(%s)", (3,))
        assert cur.fetchall() == [("c", 3)]
        assert cur.statusmessage == "SELECT 1"
        assert [(d.name, d.type_code) for d in cur.description] == [("id", 25), ("n", 20)]


async def test_asyncpg_execute_with_a_parameter(items: ServerProcess) -> None:
    conn = await asyncpg.connect(
        host="127.0.0.1", port=items.port, user="nodedb", database="nodedb"
    )
    try:
        await conn.execute("PREPARE plus (int8) AS SELECT $1 + 1 AS x")
        stmt = await conn.prepare("EXECUTE plus($1)")
        assert [a.name for a in stmt.get_parameters()] == ["int8"]
        assert [a.name for a in stmt.get_attributes()] == ["x"]
        assert await stmt.fetchval(41) == 42
        assert await conn.execute("DEALLOCATE plus") == "DEALLOCATE"
        with pytest.raises(asyncpg.InvalidSQLStatementNameError):
            await conn.fetch("EXECUTE plus(1)")
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


def test_pg8000_untyped_parameter_takes_the_declared_type(items: ServerProcess) -> None:
    con = pg8000.native.Connection("nodedb", host="127.0.0.1", port=items.port, database="nodedb")
    try:
        con.run("PREPARE twice (int8) AS SELECT $1 * 2 AS d")
        assert con.run("EXECUTE twice(:v)", v=21) == [[42]]
        con.run("DEALLOCATE twice")
    finally:
        con.close()


ERRORS = [
    ("EXECUTE nope", "26000", 'prepared statement "nope" does not exist'),
    ("DEALLOCATE nope", "26000", 'prepared statement "nope" does not exist'),
    ("PREPARE one (int8) AS SELECT 2", "42P05", 'prepared statement "one" already exists'),
    ("EXECUTE one(1, 2)", "42601", 'wrong number of parameters for prepared statement "one"'),
    ("EXECUTE one", "42601", 'wrong number of parameters for prepared statement "one"'),
    ("EXECUTE one('abc')", "22P02", "invalid input syntax"),
    ("EXECUTE one(abc)", "42703", 'column "abc" does not exist'),
    ("EXECUTE one()", "42601", "syntax error"),
    ("PREPARE b (nosuch) AS SELECT $1", "42704", 'type "nosuch" does not exist'),
    ("PREPARE b AS BEGIN", "42601", "syntax error"),
    ("PREPARE b AS EXECUTE one(1)", "42601", "syntax error"),
    ("EXECUTE one(1) now", "42601", "syntax error"),
    ("DEALLOCATE one now", "42601", "syntax error"),
    ("DEALLOCATE ALL now", "42601", "syntax error"),
    ("DISCARD ALL now", "42601", "syntax error"),
    ("DISCARD everything", "42601", "syntax error"),
]


@pytest.mark.parametrize("simple", [False, True], ids=["extended", "simple"])
@pytest.mark.parametrize(("sql", "code", "message"), ERRORS)
def test_prepared_statement_errors_leave_the_session_usable(
    items: ServerProcess, simple: bool, sql: str, code: str, message: str
) -> None:
    with psycopg.connect(items.dsn(), autocommit=True) as conn:
        conn.execute("PREPARE one (int8) AS SELECT $1 AS v")
        cur = psycopg.ClientCursor(conn) if simple else conn.cursor()
        with pytest.raises(psycopg.Error) as err:
            cur.execute(sql)
        assert err.value.sqlstate == code
        assert message in str(err.value)
        assert cur.execute("EXECUTE one(7)").fetchall() == [(7,)]


def test_discard_all_resets_the_session_and_refuses_a_transaction(items: ServerProcess) -> None:
    with psycopg.connect(items.dsn(), autocommit=True, application_name="app") as conn:
        default_timeout = conn.execute("SHOW statement_timeout").fetchone()
        conn.execute("SET statement_timeout = 4321")
        conn.execute("SET application_name = 'changed'")
        conn.execute("PREPARE kept AS SELECT 1")
        conn.execute("DISCARD PLANS")
        conn.execute("DISCARD TEMP")
        conn.execute("DISCARD SEQUENCES")
        assert conn.execute("EXECUTE kept").fetchone() == (1,)
        conn.execute("BEGIN")
        with pytest.raises(psycopg.errors.ActiveSqlTransaction) as err:
            conn.execute("DISCARD ALL")
        assert "DISCARD ALL cannot run inside a transaction block" in str(err.value)
        conn.execute("ROLLBACK")
        assert conn.execute("DISCARD ALL").statusmessage == "DISCARD ALL"
        assert conn.execute("SHOW statement_timeout").fetchone() == default_timeout
        assert conn.execute("SHOW application_name").fetchone() == ("app",)
        assert conn.info.parameter_status("application_name") == "app"
        with pytest.raises(psycopg.errors.InvalidSqlStatementName):
            conn.execute("EXECUTE kept")
