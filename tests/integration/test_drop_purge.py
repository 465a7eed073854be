"""Soft drop, undrop, purge, the retention sweeper, and the views that show them."""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.serverproc import ServerProcess


def _dropped(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT name, engine_type, size_bytes_estimate > 0 "
        "FROM _system.dropped_collections ORDER BY name"
    ).fetchall()


def test_drop_undrop_purge_and_retention(server: ServerProcess) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for name in ("keep", "gone", "swept"):
            conn.execute(f"CREATE COLLECTION {name}")
            conn.execute(f"INSERT INTO {name} {{ id: 'x', v: 1 }}")
        conn.execute("DROP COLLECTION keep")
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM keep")
        assert _dropped(conn) == [("keep", "document", True)]
        queue = conn.execute(
            "SELECT collection, bytes > 0 FROM _system.l2_cleanup_queue"
        ).fetchall()
        assert queue == [("keep", True)]
        conn.execute("UNDROP COLLECTION keep")
        assert conn.execute("SELECT v FROM keep WHERE id = 'x'").fetchone() == (1,)
        conn.execute("DROP COLLECTION gone PURGE")
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("UNDROP COLLECTION gone")
        conn.execute("DROP COLLECTION swept")
        conn.execute("ALTER SYSTEM SET deactivated_collection_retention_days = 0.00001")
        deadline = time.monotonic() + 10
        while _dropped(conn) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _dropped(conn) == [], "the sweeper purges after the retention window"
    server.kill9()
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        names = [r[0] for r in conn.execute("SHOW COLLECTIONS")]
        assert names == ["keep"], "purged collections never come back on replay"
        conn.execute("CREATE COLLECTION gone")  # the name is free after a purge
    with psycopg.connect(server.dsn(), autocommit=True) as su:
        su.execute("CREATE USER u WITH PASSWORD 'p' TENANT default")
    with (
        psycopg.connect(server.dsn(user="u"), autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("ALTER SYSTEM SET deactivated_collection_retention_days = 1")
