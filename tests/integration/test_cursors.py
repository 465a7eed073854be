"""SQL cursors (DECLARE, FETCH, MOVE, CLOSE) and psycopg's named cursors, with
PostgreSQL's rules: a cursor is read as of its DECLARE, lives until CLOSE or the end
of its block, and WITH HOLD outlives a COMMIT but not a ROLLBACK."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.serverproc import ServerProcess

N = 10_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("cursors") / "data").start()
    with psycopg.connect(srv.dsn(), autocommit=True) as c, c.cursor() as cur:
        c.execute("CREATE COLLECTION big")
        cur.executemany(
            "INSERT INTO big (id, n) VALUES (%s, %s::int8)", [(f"k{i:05d}", i) for i in range(N)]
        )
    yield srv
    srv.kill9()


def sqlstate(c: psycopg.Connection[Any], sql: str) -> str | None:
    with pytest.raises(psycopg.Error) as err:
        c.execute(sql)
    return err.value.sqlstate


def test_a_psycopg_named_cursor_streams_ten_thousand_rows(server: ServerProcess) -> None:
    with psycopg.connect(server.dsn()) as c:
        with c.cursor(name="walk") as cur:
            cur.itersize = 700
            cur.execute("SELECT id, n FROM big WHERE n >= %s ORDER BY n", (10,))
            assert [(d.name, d.type_code) for d in cur.description or []] == [
                ("id", 25),
                ("n", 20),
            ]
            assert cur.fetchone() == ("k00010", 10)
            assert cur.fetchmany(2) == [("k00011", 11), ("k00012", 12)]
            rest = list(cur)
        assert len(rest) == N - 13
        assert rest[-1] == ("k09999", 9999)
        assert [n for _, n in rest] == list(range(13, N))


def test_fetch_move_and_close_in_a_block(server: ServerProcess) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as c:
        c.execute("BEGIN")
        c.execute("DECLARE c CURSOR FOR SELECT n FROM big WHERE n < 6 ORDER BY n")
        c.execute("INSERT INTO big (id, n) VALUES ('late', 1)")  # not in the cursor
        assert c.execute("FETCH 2 FROM c").fetchall() == [(0,), (1,)]
        assert c.execute("MOVE FORWARD 2 IN c").statusmessage == "MOVE 2"
        assert c.execute("FETCH NEXT FROM c").fetchall() == [(4,)]
        cur = c.execute("FETCH ALL FROM c")
        assert cur.fetchall() == [(5,)] and cur.statusmessage == "FETCH 1"
        assert c.execute("FETCH c").fetchall() == []  # past the end: no rows, no error
        assert sqlstate(c, "DECLARE c CURSOR FOR SELECT 1") == "42P03"
        c.execute("ROLLBACK")
        c.execute("BEGIN")
        c.execute("DECLARE d CURSOR FOR SELECT n FROM big ORDER BY n LIMIT 1")
        c.execute("CLOSE d")
        assert sqlstate(c, "FETCH d") == "34000"
        c.execute("ROLLBACK")


def test_a_cursor_ends_with_its_block_unless_held(server: ServerProcess) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as c:
        assert sqlstate(c, "DECLARE c CURSOR FOR SELECT 1") == "25P01"
        c.execute("BEGIN")
        c.execute("DECLARE plain CURSOR FOR SELECT n FROM big ORDER BY n LIMIT 3")
        c.execute("DECLARE held CURSOR WITH HOLD FOR SELECT n FROM big ORDER BY n LIMIT 3")
        c.execute("COMMIT")
        assert sqlstate(c, "FETCH plain") == "34000"
        assert c.execute("FETCH 2 FROM held").fetchall() == [(0,), (1,)]
        c.execute("BEGIN")
        c.execute("DECLARE undone CURSOR WITH HOLD FOR SELECT 1")
        c.execute("ROLLBACK")
        assert sqlstate(c, "FETCH undone") == "34000"
        assert c.execute("FETCH held").fetchall() == [(2,)]  # an older held one stays
        c.execute("CLOSE ALL")
        assert sqlstate(c, "FETCH held") == "34000"


def test_a_rollback_to_a_savepoint_closes_the_cursors_declared_after_it(
    server: ServerProcess,
) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as c:
        c.execute("BEGIN")
        c.execute("DECLARE before CURSOR FOR SELECT n FROM big ORDER BY n LIMIT 2")
        c.execute("SAVEPOINT s")
        c.execute("DECLARE after CURSOR FOR SELECT 1")
        c.execute("ROLLBACK TO SAVEPOINT s")
        assert c.execute("FETCH ALL FROM before").fetchall() == [(0,), (1,)]
        assert sqlstate(c, "FETCH after") == "34000"
        c.execute("ROLLBACK")


def test_psql_declares_and_fetches(server: ServerProcess) -> None:
    out = subprocess.run(
        [
            *server.psql(),
            "-c",
            "BEGIN; DECLARE c CURSOR FOR SELECT id FROM big ORDER BY id LIMIT 3; "
            "FETCH 2 FROM c; COMMIT;",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "k00000" in out and "k00001" in out and "k00002" not in out, out
