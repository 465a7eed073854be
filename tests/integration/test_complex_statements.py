"""Statements too deep for the server are ERROR 54001 and the session goes on; values
nested too deep are never stored; a long statement does not stall other sessions."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.serverproc import ServerProcess

DEEP_STATEMENTS = {
    "1000-term-plus": "SELECT " + " + ".join(["1"] * 1000),
    "1000-term-or": "SELECT * FROM c WHERE " + " OR ".join(f"n = {i}" for i in range(1000)),
    # Deep enough to overflow the C stack in code compiled with mypyc, which does not
    # count recursion as the interpreter does (nodedb_server/_hot.py): the server died.
    "100000-term-or": "SELECT * FROM c WHERE " + " OR ".join(f"n = {i}" for i in range(100000)),
    "500-nested-parentheses": "SELECT " + "(" * 500 + "1" + ")" * 500,
    "10000-deep-array-literal": "INSERT INTO c { id: 'deep', a: "
    + "[" * 10000
    + "]" * 10000
    + " }",
    "10000-deep-object-literal": "INSERT INTO c { id: 'deep', a: "
    + "{ b: " * 10000
    + "1"
    + " }" * 10000
    + " }",
}


@pytest.fixture(scope="module")
def prepared(shared_server: ServerProcess) -> ServerProcess:
    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION c")
        conn.execute("INSERT INTO c (id, n) VALUES ('one', 1)")
    return shared_server


@pytest.fixture
def conn(prepared: ServerProcess) -> Iterator[psycopg.Connection]:
    with psycopg.connect(prepared.dsn(), autocommit=True) as c:
        yield c


def _usable(conn: psycopg.Connection) -> None:
    assert conn.execute("SELECT 41 + 1").fetchone() == (42,)
    assert conn.execute("SELECT count(*) FROM c").fetchone() == (1,)


@pytest.mark.parametrize("sql", list(DEEP_STATEMENTS.values()), ids=list(DEEP_STATEMENTS))
@pytest.mark.parametrize("protocol", ["extended", "simple"])
def test_deep_statement_is_54001_and_session_goes_on(
    conn: psycopg.Connection, sql: str, protocol: str
) -> None:
    cursor = conn.cursor() if protocol == "extended" else psycopg.ClientCursor(conn)
    with pytest.raises(psycopg.errors.StatementTooComplex, match="statement too complex"):
        cursor.execute(sql)
    _usable(conn)


@pytest.mark.parametrize("protocol", ["extended", "simple"])
def test_expressions_hundreds_of_levels_deep_are_answered(
    conn: psycopg.Connection, protocol: str
) -> None:
    """Below the depth where statements become 54001 (sql/expr.py MAX_EXPR_DEPTH, and
    the interpreter's limit on the pure-Python path), compiled or not."""
    cursor = conn.cursor() if protocol == "extended" else psycopg.ClientCursor(conn)
    assert cursor.execute("SELECT " + " + ".join(["1"] * 399)).fetchone() == (399,)
    ors = " OR ".join(f"n = {i}" for i in range(900))
    assert cursor.execute(f"SELECT id FROM c WHERE {ors}").fetchall() == [("one",)]


@pytest.mark.parametrize(
    "sql", ["SELECT %s::jsonb", "INSERT INTO c (id, a) VALUES ('j', %s::jsonb)"]
)
def test_10000_deep_jsonb_parameter_is_54001(conn: psycopg.Connection, sql: str) -> None:
    deep = "[" * 10000 + "]" * 10000
    with pytest.raises(psycopg.errors.StatementTooComplex):
        conn.execute(sql, (deep,))
    _usable(conn)


def _nested(depth: int) -> str:
    """JSON text of lists nested ``depth`` levels."""
    return "[" * depth + "]" * depth


def test_value_deeper_than_256_levels_is_not_stored(server: ServerProcess) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION c")
        conn.execute("INSERT INTO c (id, a) VALUES ('at-limit', %s::jsonb)", (_nested(256),))
        with pytest.raises(psycopg.errors.StatementTooComplex, match="more than 256 levels"):
            conn.execute("INSERT INTO c (id, a) VALUES ('over', %s::jsonb)", (_nested(257),))
        # Nesting grown one level at a time is caught the same way.
        conn.execute("INSERT INTO c (id, a) VALUES ('grows', %s::jsonb)", (_nested(255),))
        conn.execute("UPDATE c SET a = [a] WHERE id = 'grows'")
        with pytest.raises(psycopg.errors.StatementTooComplex):
            conn.execute("UPDATE c SET a = [a] WHERE id = 'grows'")
        ids = conn.execute("SELECT id FROM c ORDER BY id").fetchall()
        assert ids == [("at-limit",), ("grows",)]
    # What was stored comes back after WAL replay, and after a checkpoint.
    for restart in ("kill9", "checkpoint"):
        if restart == "kill9":
            server.kill9()
        else:
            with psycopg.connect(server.dsn(), autocommit=True) as conn:
                conn.execute("CHECKPOINT")
            server.stop()
        server.start()
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            rows = conn.execute("SELECT id, a FROM c ORDER BY id").fetchall()
        assert [r[0] for r in rows] == ["at-limit", "grows"]
        assert all(str(r[1]).count("[") == 256 for r in rows)


def test_long_statement_does_not_stall_other_sessions(conn: psycopg.Connection) -> None:
    """A 100,000-item IN list takes seconds to parse; meanwhile others are answered."""
    big = "SELECT count(*) FROM c WHERE n IN (" + ", ".join(map(str, range(100_000))) + ")"
    sent = threading.Event()
    finished = threading.Event()
    answer: list[object] = []

    def run_big() -> None:
        with psycopg.connect(conn.info.dsn, autocommit=True) as other:
            cur = other.cursor()
            sent.set()
            answer.append(cur.execute(big).fetchone())
        finished.set()

    worker = threading.Thread(target=run_big)
    worker.start()
    try:
        sent.wait(10)
        time.sleep(0.5)  # the long statement is on its way, then being parsed
        for _ in range(10):
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert not finished.is_set(), "SELECT 1 was answered only after the long statement"
    finally:
        worker.join(120)
    assert answer == [(1,)]
