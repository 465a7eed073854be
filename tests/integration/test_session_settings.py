"""RESET and SET .. TO DEFAULT go back to the session's value at connection start."""

from __future__ import annotations

import psycopg

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
