"""LISTEN / NOTIFY through psql, psycopg and asyncpg against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest

from tests.serverproc import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("notify") / "data").start()
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        su.execute("CREATE TENANT other")
    yield srv
    srv.kill9()


def notes(c: psycopg.Connection[Any], wait: float = 1.0) -> list[tuple[str, str, int]]:
    """The notifications the connection has received within ``wait`` seconds."""
    got = []
    for n in c.notifies(timeout=wait, stop_after=None):
        got.append((n.channel, n.payload, n.pid))
    return got


def test_psql_prints_a_notification_it_receives(server: ServerProcess) -> None:
    out = subprocess.run(
        [*server.psql(), "-c", "LISTEN jobs", "-c", "NOTIFY jobs, 'hello'"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert 'Asynchronous notification "jobs" with payload "hello" received' in out, out


def test_psycopg_listeners_get_notifications_in_commit_order(server: ServerProcess) -> None:
    with (
        psycopg.connect(server.dsn(), autocommit=True) as a,
        psycopg.connect(server.dsn(), autocommit=True) as b,
        psycopg.connect(server.dsn(database="other"), autocommit=True) as elsewhere,
    ):
        a.execute("LISTEN jobs")
        elsewhere.execute("LISTEN jobs")
        b_pid = b.execute("SELECT pg_backend_pid()").fetchone()[0]
        b.execute("NOTIFY jobs, 'one'")
        b.execute("SELECT pg_notify('jobs', 'two')")
        b.execute("NOTIFY unheard, 'x'")
        with b.transaction():
            b.execute("NOTIFY jobs, 'three'")
            # Not before the COMMIT.
            assert notes(a, 0.3) == [("jobs", "one", b_pid), ("jobs", "two", b_pid)]
        assert notes(a, 1.0) == [("jobs", "three", b_pid)]
        with pytest.raises(psycopg.errors.DivisionByZero), b.transaction():
            b.execute("NOTIFY jobs, 'rolled back'")
            raise psycopg.errors.DivisionByZero()
        b.execute("NOTIFY jobs")  # no payload: an empty one
        assert notes(a, 1.0) == [("jobs", "", b_pid)]
        # Another tenant's channel of the same name hears nothing of this one.
        assert notes(elsewhere, 0.2) == []
        a.execute("UNLISTEN *")
        b.execute("NOTIFY jobs, 'after unlisten'")
        assert notes(a, 0.3) == []


def test_a_session_hears_its_own_notify_after_its_statement(server: ServerProcess) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as c:
        c.execute("LISTEN self")
        c.execute("NOTIFY self, 'me'")
        assert [n[1] for n in notes(c, 1.0)] == ["me"]


def test_an_oversized_payload_is_refused(server: ServerProcess) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.Error) as err:
            c.execute(f"NOTIFY big, '{'x' * 8000}'")
        assert err.value.sqlstate == "22023"
        c.execute("SELECT 1")  # the session goes on


async def _asyncpg_listener(port: int) -> list[tuple[str, str]]:
    got: list[tuple[str, str]] = []
    listener = await asyncpg.connect(host="127.0.0.1", port=port, user="nodedb", database="nodedb")
    sender = await asyncpg.connect(host="127.0.0.1", port=port, user="nodedb", database="nodedb")
    try:
        await listener.add_listener(
            "events", lambda _c, _pid, ch, payload: got.append((ch, payload))
        )
        await sender.execute("NOTIFY events, 'a'")
        await sender.execute("SELECT pg_notify('events', 'b')")
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the listener is idle: delivered while idle
        return got
    finally:
        await listener.close()
        await sender.close()


def test_asyncpg_add_listener_receives_while_idle(server: ServerProcess) -> None:
    assert asyncio.run(_asyncpg_listener(server.port)) == [("events", "a"), ("events", "b")]


def live(c: psycopg.Connection[Any], sql: str) -> tuple[str, str]:
    row = c.execute(sql).fetchone()
    assert row is not None
    return row[0], row[1]


def pushed(c: psycopg.Connection[Any], channel: str, wait: float = 1.0) -> list[dict[str, Any]]:
    return [json.loads(p) for ch, p, _ in notes(c, wait) if ch == channel]


def test_live_select_pushes_only_matching_changes(server: ServerProcess) -> None:
    with (
        psycopg.connect(server.dsn(), autocommit=True) as sub,
        psycopg.connect(server.dsn(), autocommit=True) as w,
    ):
        w.execute("CREATE COLLECTION orders")
        w.execute("INSERT INTO orders {id: 'old', total: 500}")
        qid, channel = live(sub, "LIVE SELECT * FROM orders WHERE total > 100")
        assert channel == f"live_{qid}"
        w.execute("INSERT INTO orders {id: 'small', total: 5}")
        w.execute("INSERT INTO orders {id: 'big', total: 200}")
        w.execute("UPDATE orders SET total = 300 WHERE id = 'big'")
        w.execute("UPDATE orders SET total = 150 WHERE id = 'small'")  # enters the filter
        w.execute("UPDATE orders SET total = 1 WHERE id = 'old'")  # leaves it
        w.execute("DELETE FROM orders WHERE id = 'big'")
        got = pushed(sub, channel)
        assert [(g["op"], g["id"]) for g in got] == [
            ("INSERT", "big"),
            ("UPDATE", "big"),
            ("INSERT", "small"),
            ("DELETE", "old"),
            ("DELETE", "big"),
        ]
        assert got[1]["new_value"] == {"id": "big", "total": 300}
        assert got[1]["old_value"] == {"id": "big", "total": 200}
        assert got[3]["old_value"] == {"id": "old", "total": 500} and got[3]["new_value"] is None
        lsns = [g["lsn"] for g in got]
        assert lsns == sorted(lsns) and all(g["collection"] == "orders" for g in got)
        sub.execute(f"KILL LIVE QUERY '{qid}'")
        w.execute("INSERT INTO orders {id: 'after', total: 999}")
        assert pushed(sub, channel, 0.3) == []
        with pytest.raises(psycopg.Error) as err:
            sub.execute(f"KILL LIVE QUERY '{qid}'")
        assert err.value.sqlstate == "42704"


def test_live_select_since_lsn_fills_the_gap_of_a_reconnect(server: ServerProcess) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as w:
        w.execute("CREATE COLLECTION feed")
        with psycopg.connect(server.dsn(), autocommit=True) as first:
            _, channel = live(first, "LIVE SELECT * FROM feed")
            w.execute("INSERT INTO feed {id: 'a'}")
            seen = pushed(first, channel)
            assert [g["id"] for g in seen] == ["a"]
        # Disconnected: these happen while nobody listens.
        w.execute("INSERT INTO feed {id: 'b'}")
        w.execute("INSERT INTO feed {id: 'c'}")
        with psycopg.connect(server.dsn(), autocommit=True) as again:
            _, channel = live(again, f"LIVE SELECT * FROM feed SINCE LSN {seen[-1]['lsn']}")
            w.execute("INSERT INTO feed {id: 'd'}")
            assert [g["id"] for g in pushed(again, channel)] == ["b", "c", "d"]
        with psycopg.connect(server.dsn(), autocommit=True) as c:
            with pytest.raises(psycopg.Error) as err:
                c.execute("LIVE SELECT id FROM feed")
            assert err.value.sqlstate == "42601"
            with pytest.raises(psycopg.Error) as err:
                c.execute("LIVE SELECT * FROM nothing")
            assert err.value.sqlstate == "42P01"


JS = Path(__file__).resolve().parent.parent / "js"


def test_node_postgres_notification_events(server: ServerProcess) -> None:
    """node-postgres's Client emits 'notification' for each NOTIFY, idle or not, in
    commit order, and none from a rolled-back block or another tenant."""
    proc = subprocess.Popen(
        ["node", str(JS / "listen.js"), str(server.port), "jobs"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NOTES_EXPECTED": "3"},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        with (
            psycopg.connect(server.dsn(), autocommit=True) as c,
            psycopg.connect(server.dsn(database="other"), autocommit=True) as other,
        ):
            pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
            other.execute("NOTIFY jobs, 'other tenant'")
            c.execute("NOTIFY jobs, 'one'")
            with pytest.raises(psycopg.errors.DivisionByZero), c.transaction():
                c.execute("NOTIFY jobs, 'rolled back'")
                c.execute("SELECT 1/0")
            with c.transaction():
                c.execute("SELECT pg_notify('jobs', 'two')")
                c.execute("NOTIFY jobs, 'three'")
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    got = [json.loads(line) for line in out.splitlines()]
    assert got == [{"channel": "jobs", "payload": p, "pid": pid} for p in ("one", "two", "three")]
