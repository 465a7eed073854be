"""RESET and SET .. TO DEFAULT go back to the session's value at connection start; SET
and SHOW name and print settings as PostgreSQL does."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.serverproc import ServerProcess


def test_reset_returns_a_setting_to_its_value_at_connection_start(
    shared_server: ServerProcess,
) -> None:
    dsn = shared_server.dsn() + " application_name=app"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET application_name = 'other'")
        conn.execute("SET statement_timeout = 5000")
        conn.execute("RESET application_name")
        assert conn.execute("SHOW application_name").fetchone() == ("app",)
        assert conn.info.parameter_status("application_name") == "app"
        conn.execute("SET statement_timeout TO DEFAULT")
        assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)


def test_reset_all_restores_every_setting_and_invents_none(shared_server: ServerProcess) -> None:
    dsn = shared_server.dsn() + " application_name=app"
    with psycopg.connect(dsn, autocommit=True) as conn:
        before = conn.execute("SHOW ALL").fetchall()
        conn.execute("SET application_name = 'other'")
        conn.execute("SET statement_timeout = 5000")
        conn.execute("RESET ALL")
        assert conn.execute("SHOW ALL").fetchall() == before
        assert conn.info.parameter_status("application_name") == "app"


@pytest.mark.parametrize(
    "statement",
    [
        'SET TIME ZONE "Europe/Berlin"',  # pgcli at start-up, from $TZ
        "SET TIME ZONE 'UTC'",
        "SET timezone TO 'Asia/Tokyo'",
        'SET search_path = "$user", public',
        "SET application_name = 'my app'",
    ],
)
def test_set_and_show_name_and_print_as_postgresql(
    shared_server: ServerProcess, postgres: Any, statement: str
) -> None:
    shows = ["SHOW TIME ZONE", "SHOW search_path", "SHOW application_name"]
    got, want = [], []
    for dsn, out in ((shared_server.dsn(), got), (postgres.dsn(), want)):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET TIME ZONE 'UTC'")  # PostgreSQL starts in its host's zone
            conn.execute(statement)
            for show in shows:
                cur = conn.execute(show)
                out.append(([d.name for d in cur.description or []], cur.fetchall()))
    assert got == want


# Each runs on PostgreSQL and on the server, in order, on one connection each (text
# results, as psql reads them: the zone shows in how a timestamptz is printed).
TIME_ZONE_SCRIPT = [
    "SET TIME ZONE 'UTC'",
    "CREATE TABLE tz_events (id INT PRIMARY KEY, at TIMESTAMPTZ, wall TIMESTAMP)",
    "INSERT INTO tz_events VALUES (1, '2026-07-01 12:00:00+00', '2026-07-01 12:00:00')",
    "SET TIME ZONE 'Europe/Berlin'",
    "SHOW TIME ZONE",
    "SELECT id, at, wall FROM tz_events",
    "INSERT INTO tz_events VALUES (2, '2026-01-15 08:30:00', '2026-01-15 08:30:00')",
    "SELECT id, at, wall, at::text FROM tz_events ORDER BY id",
    "SET TIME ZONE 'america/new_york'",
    "SHOW TimeZone",
    "SELECT id, at FROM tz_events ORDER BY id",
    "SET TIME ZONE 'Asia/Kolkata'",
    "SELECT at FROM tz_events WHERE id = 2",
    "SELECT id FROM tz_events WHERE at = '2026-01-15 13:00:00'",
    "SET TIME ZONE -7",
    "SHOW TIME ZONE",
    "SELECT at FROM tz_events WHERE id = 1",
    "SET TIME ZONE 'Mars/Base'",
    "SET TIME ZONE 'UTC'",
    "SELECT id, at FROM tz_events ORDER BY id",
]


def _text_outcome(conn: psycopg.Connection[Any], sql: str) -> tuple[Any, ...]:
    try:
        cur = conn.execute(sql)
    except psycopg.Error as e:
        return ("error", e.sqlstate)
    return (cur.statusmessage, cur.fetchall() if cur.description else None)


def test_the_session_time_zone_reads_and_prints_timestamps_as_postgresql(
    server: ServerProcess, postgres: Any
) -> None:
    with (
        psycopg.connect(postgres.dsn(), autocommit=True) as pg,
        psycopg.connect(server.dsn(), autocommit=True) as ours,
    ):
        for conn in (pg, ours):  # every value as the text the server printed
            conn.adapters.register_loader("timestamptz", psycopg.types.string.TextLoader)
            conn.adapters.register_loader("timestamp", psycopg.types.string.TextLoader)
        pg.execute("DROP TABLE IF EXISTS tz_events")
        for sql in TIME_ZONE_SCRIPT:
            assert _text_outcome(ours, sql) == _text_outcome(pg, sql), sql


def test_a_time_zone_sent_at_start_up_is_the_sessions(server: ServerProcess) -> None:
    """JDBC sends the JVM's zone as the TimeZone start-up parameter."""
    with psycopg.connect(server.dsn(), autocommit=True, options="-c TimeZone=Asia/Tokyo") as c:
        assert c.info.parameter_status("TimeZone") == "Asia/Tokyo"
        assert c.execute("SHOW TIME ZONE").fetchone() == ("Asia/Tokyo",)
        c.adapters.register_loader("timestamptz", psycopg.types.string.TextLoader)
        at = c.execute("SELECT '2026-07-01 00:00:00+00'::timestamptz").fetchone()
        assert at == ("2026-07-01 09:00:00+09",)
