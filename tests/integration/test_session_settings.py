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
        "SET search_path = \"$user\", public",
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
