"""SAVEPOINT, RELEASE SAVEPOINT and ROLLBACK TO SAVEPOINT through real drivers, with the
answers PostgreSQL gives: a rollback to a savepoint undoes the block's writes after it
(and its NOTIFYs), keeps the savepoint, and makes a failed block usable again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.serverproc import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("savepoints") / "data").start()
    yield srv
    srv.kill9()


@pytest.fixture
def c(server: ServerProcess) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION IF NOT EXISTS t")
        conn.execute("DELETE FROM t")
        yield conn


def ids(c: psycopg.Connection[Any]) -> list[str]:
    return [r[0] for r in c.execute("SELECT id FROM t ORDER BY id").fetchall()]


def sqlstate(c: psycopg.Connection[Any], sql: str) -> str | None:
    with pytest.raises(psycopg.Error) as err:
        c.execute(sql)
    return err.value.sqlstate


def test_rollback_to_undoes_the_writes_after_it_and_keeps_it(c: psycopg.Connection[Any]) -> None:
    c.execute("BEGIN")
    c.execute("INSERT INTO t (id) VALUES ('a')")
    c.execute("SAVEPOINT s1")
    c.execute("INSERT INTO t (id) VALUES ('b')")
    c.execute("UPDATE t SET v = 1 WHERE id = 'a'")
    c.execute("SAVEPOINT s2")
    c.execute("DELETE FROM t WHERE id = 'a'")
    assert ids(c) == ["b"]
    c.execute("ROLLBACK TO SAVEPOINT s1")  # s2 goes with it; s1 stays
    assert ids(c) == ["a"]
    assert c.execute("SELECT v FROM t WHERE id = 'a'").fetchone() == (None,)
    assert sqlstate(c, "RELEASE SAVEPOINT s2") == "3B001"
    c.execute("ROLLBACK")
    c.execute("BEGIN")
    c.execute("INSERT INTO t (id) VALUES ('a')")
    c.execute("SAVEPOINT s1")
    c.execute("INSERT INTO t (id) VALUES ('b')")
    c.execute("ROLLBACK TO s1")
    c.execute("INSERT INTO t (id) VALUES ('c')")
    c.execute("ROLLBACK TO SAVEPOINT s1")  # again: the savepoint stayed
    c.execute("INSERT INTO t (id) VALUES ('d')")
    c.execute("RELEASE s1")  # what it covered stays done
    c.execute("COMMIT")
    assert ids(c) == ["a", "d"]


def test_rollback_to_makes_a_failed_block_usable_again(c: psycopg.Connection[Any]) -> None:
    c.execute("BEGIN")
    c.execute("INSERT INTO t (id) VALUES ('a')")
    c.execute("SAVEPOINT s")
    c.execute("INSERT INTO t (id) VALUES ('b')")
    assert sqlstate(c, "SELECT 1/0") == "22012"
    assert sqlstate(c, "SELECT 1") == "25P02"
    c.execute("ROLLBACK TO SAVEPOINT s")
    c.execute("INSERT INTO t (id) VALUES ('c')")
    c.execute("COMMIT")
    assert ids(c) == ["a", "c"]


def test_the_newest_savepoint_of_a_name_is_the_one_meant(c: psycopg.Connection[Any]) -> None:
    c.execute("BEGIN")
    c.execute("SAVEPOINT s")
    c.execute("INSERT INTO t (id) VALUES ('a')")
    c.execute("SAVEPOINT s")
    c.execute("INSERT INTO t (id) VALUES ('b')")
    c.execute("ROLLBACK TO s")
    assert ids(c) == ["a"]
    c.execute("RELEASE s")  # the newer one: the older is still there
    c.execute("ROLLBACK TO s")
    assert ids(c) == []
    c.execute("COMMIT")
    assert ids(c) == []


def test_savepoints_outside_a_block_and_unknown_names_are_errors(
    c: psycopg.Connection[Any],
) -> None:
    for sql in ("SAVEPOINT s", "RELEASE SAVEPOINT s", "ROLLBACK TO SAVEPOINT s"):
        assert sqlstate(c, sql) == "25P01"
    c.execute("BEGIN")
    c.execute("INSERT INTO t (id) VALUES ('a')")
    assert sqlstate(c, "ROLLBACK TO nosuch") == "3B001"
    assert sqlstate(c, "SELECT 1") == "25P02"  # the error aborted the block
    c.execute("ROLLBACK")
    assert ids(c) == []


def test_a_notify_after_a_savepoint_rolled_back_to_is_not_sent(
    server: ServerProcess, c: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as listener:
        listener.execute("LISTEN ch")
        c.execute("BEGIN")
        c.execute("NOTIFY ch, 'kept'")
        c.execute("SAVEPOINT s")
        c.execute("NOTIFY ch, 'dropped'")
        c.execute("ROLLBACK TO s")
        c.execute("COMMIT")
        got = [n.payload for n in listener.notifies(timeout=1.0, stop_after=None)]
    assert got == ["kept"]


def test_psycopg_nested_transaction_blocks(c: psycopg.Connection[Any]) -> None:
    with c.transaction():
        c.execute("INSERT INTO t (id) VALUES ('outer')")
        with pytest.raises(ZeroDivisionError), c.transaction():  # SAVEPOINT "_pg3_1"
            c.execute("INSERT INTO t (id) VALUES ('inner')")
            raise ZeroDivisionError
        with c.transaction():
            c.execute("INSERT INTO t (id) VALUES ('inner2')")
    assert ids(c) == ["inner2", "outer"]


@pytest.mark.parametrize("driver", ["psycopg", "pg8000"])
def test_sqlalchemy_connects_and_rolls_back_a_nested_transaction(
    server: ServerProcess, c: psycopg.Connection[Any], driver: str
) -> None:
    """SQLAlchemy's start-up (pg_catalog.version(), psycopg's hstore lookup in a
    savepoint), text(), a transaction and begin_nested() rolled back."""
    engine = sa.create_engine(f"postgresql+{driver}://nodedb@127.0.0.1:{server.port}/nodedb")
    try:
        with engine.begin() as conn:
            # n as a literal: pg8000 sends parameters untyped, which a schemaless field stores as text
            conn.execute(sa.text("INSERT INTO t (id, n) VALUES (:id, 1)"), {"id": "a"})
            nested = conn.begin_nested()
            conn.execute(sa.text("INSERT INTO t (id, n) VALUES ('b', 2)"))
            nested.rollback()
            conn.execute(sa.text("INSERT INTO t (id, n) VALUES ('c', 3)"))
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, n FROM t ORDER BY id")).fetchall()
            assert [tuple(r) for r in rows] == [("a", 1), ("c", 3)]
            assert (
                conn.execute(sa.text("SELECT pg_catalog.version()"))
                .scalar()
                .startswith("PostgreSQL ")
            )
    finally:
        engine.dispose()


def test_sqlalchemy_asyncpg_rolls_back_a_nested_transaction(
    server: ServerProcess, c: psycopg.Connection[Any]
) -> None:
    async def run() -> list[tuple[Any, ...]]:
        engine = create_async_engine(f"postgresql+asyncpg://nodedb@127.0.0.1:{server.port}/nodedb")
        try:
            async with engine.begin() as conn:
                await conn.execute(sa.text("INSERT INTO t (id) VALUES ('x')"))
                nested = await conn.begin_nested()
                await conn.execute(sa.text("INSERT INTO t (id) VALUES ('y')"))
                await nested.rollback()
            async with engine.connect() as conn:
                result = await conn.execute(sa.text("SELECT id FROM t ORDER BY id"))
                return [tuple(r) for r in result.fetchall()]
        finally:
            await engine.dispose()

    assert asyncio.run(run()) == [("x",)]
