"""Tenants, users, SCRAM and isolation, through real clients."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pg8000.native
import psycopg
import pytest

from tests.serverproc import ServerProcess, connect_sqlstate


def _sqlstate(fn, *args, **kwargs) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(psycopg.Error) as err:
        fn(*args, **kwargs)
    assert err.value.sqlstate is not None
    return err.value.sqlstate


def test_tenants_are_isolated_and_users_are_confined(server: ServerProcess) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as su:
        su.execute("CREATE TENANT acme")
        su.execute("CREATE TENANT globex")
        su.execute("CREATE USER alice WITH PASSWORD 'pw-a' TENANT acme")
        tenants = su.execute("SHOW TENANTS").fetchall()
        assert [r[0] for r in tenants] == ["default", "acme", "globex"]
        assert _sqlstate(su.execute, "CREATE TENANT acme") == "42710"
        assert _sqlstate(su.execute, 'CREATE TENANT "_system"') == "42939"
        walled = {r[0] for r in su.execute("SELECT tenant FROM _system.wal").fetchall()}
        assert walled == {"_system", "default", "acme", "globex"}
    with psycopg.connect(server.dsn(user="alice", database="acme"), autocommit=True) as a:
        a.execute("CREATE COLLECTION secrets")
        a.execute("INSERT INTO secrets (id, v) VALUES ('s1', 'acme-only')")
        assert a.execute("SELECT current_database(), current_user").fetchone() == ("acme", "alice")
        assert _sqlstate(a.execute, "CREATE TENANT x") == "42501"
        assert _sqlstate(a.execute, "SHOW TENANTS") == "42501"
        seen = {r[0] for r in a.execute("SELECT tenant FROM _system.wal").fetchall()}
        assert seen == {"acme"}, "a tenant's user sees neither others' WAL nor the catalog's"
    with psycopg.connect(server.dsn(database="globex"), autocommit=True) as g:
        assert _sqlstate(g.execute, "SELECT * FROM secrets") == "42P01"
    with psycopg.connect(server.dsn(), autocommit=True) as d:
        assert _sqlstate(d.execute, "SELECT * FROM secrets") == "42P01"
    assert connect_sqlstate(server, user="alice", database="globex") == "42501"
    assert connect_sqlstate(server, database="nosuch") == "3D000"
    assert connect_sqlstate(server, user="mallory") == "28000"


def test_catalog_changes_survive_kill9_without_checkpoint(server: ServerProcess) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as su:
        su.execute("CREATE TENANT acme")
        su.execute("CREATE USER bob WITH PASSWORD 'pw' TENANT acme")
        su.execute("GRANT BACKUP ON TENANT acme TO bob")
    with psycopg.connect(server.dsn(user="bob", database="acme"), autocommit=True) as b:
        b.execute("CREATE COLLECTION orders")
        b.execute("INSERT INTO orders { id: 'o1', total: 10 }")
    server.kill9()
    server.start()
    with psycopg.connect(server.dsn(user="bob", database="acme"), autocommit=True) as b:
        assert b.execute("SELECT total FROM orders WHERE id = 'o1'").fetchone() == (10,)
        assert b.execute("SHOW COLLECTIONS").fetchall()[0][:3] == ("orders", "document", 1)


def test_drop_and_purge_tenant(server: ServerProcess) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as su:
        su.execute("CREATE TENANT temp")
    with psycopg.connect(server.dsn(database="temp"), autocommit=True) as t:
        t.execute("CREATE COLLECTION c")
        t.execute("INSERT INTO c { id: 'x' }")
    tenant_dir = server.data_dir / "tenants" / "2"
    assert tenant_dir.exists()
    open_session = psycopg.connect(server.dsn(database="temp"), autocommit=True)
    with psycopg.connect(server.dsn(), autocommit=True) as su:
        su.execute("DROP TENANT temp")
        for sql in ("SELECT * FROM c", "INSERT INTO c { id: 'y' }"):
            with pytest.raises(psycopg.Error) as err:
                open_session.execute(sql)
            assert err.value.sqlstate == "57P03"
        open_session.close()
        assert connect_sqlstate(server, database="temp") == "3D000"
        assert tenant_dir.exists(), "DROP keeps the files until PURGE"
        assert _sqlstate(su.execute, "DROP TENANT default") == "42501"
        assert _sqlstate(su.execute, "PURGE TENANT temp") == "42601"  # CONFIRM is required
        su.execute("PURGE TENANT temp CONFIRM")
        su.execute("PURGE TENANT temp CONFIRM")  # idempotent
        assert not tenant_dir.exists()
        su.execute("CREATE TENANT temp")  # the name is free again
    with psycopg.connect(server.dsn(database="temp"), autocommit=True) as t:
        assert t.execute("SHOW COLLECTIONS").fetchall() == []


@pytest.fixture
def scram_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    cfg = tmp_path / "nodedb.toml"
    cfg.write_text('[auth]\nmode = "scram"\nsuperuser_password = "s3cret"\n')
    srv = ServerProcess(tmp_path / "data", config=cfg).start()
    yield srv
    srv.kill9()


async def _connect_state(srv: ServerProcess, user: str, password: str) -> str:
    with pytest.raises(asyncpg.PostgresError) as err:
        await asyncpg.connect(
            host="127.0.0.1", port=srv.port, user=user, database="nodedb", password=password
        )
    return str(err.value.sqlstate)


async def test_scram_authentication_with_every_driver(scram_server: ServerProcess) -> None:
    srv = scram_server
    with psycopg.connect(srv.dsn(password="s3cret"), autocommit=True) as su:
        su.execute("CREATE USER carol WITH PASSWORD 'c-pass' TENANT default")
    conn = await asyncpg.connect(
        host="127.0.0.1", port=srv.port, user="carol", password="c-pass", database="nodedb"
    )
    assert await conn.fetchval("SELECT current_user") == "carol"
    await conn.close()
    pg = pg8000.native.Connection(
        "carol", password="c-pass", host="127.0.0.1", port=srv.port, database="nodedb"
    )
    assert pg.run("SELECT 1") == [[1]]
    pg.close()
    assert await _connect_state(srv, "carol", "wrong") == "28P01"
    assert await _connect_state(srv, "nobody", "x") == "28000"
    assert "c-pass" not in srv.log() and "s3cret" not in srv.log()
    stored = (srv.data_dir / "system").rglob("*")
    assert not any(b"c-pass" in p.read_bytes() for p in stored if p.is_file())


def test_session_authorization_and_role_cannot_claim_another_user(server: ServerProcess) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as su:
        su.execute("CREATE TENANT acme")
        su.execute("CREATE USER alice WITH PASSWORD 'x' TENANT acme")
    with psycopg.connect(server.dsn(user="alice", database="acme"), autocommit=True) as a:
        for sql in (
            "SET session_authorization = 'nodedb'",
            "SET SESSION session_authorization TO nodedb",
            "SET SESSION AUTHORIZATION 'nodedb'",
            "SET SESSION AUTHORIZATION nodedb",
            "SET role = 'nodedb'",
            "SET ROLE nodedb",
            "SELECT set_config('session_authorization', 'nodedb', false)",
            "SELECT set_config('role', 'nodedb', false)",
        ):
            assert _sqlstate(a.execute, sql) == "42501", sql
            assert a.execute("SHOW session_authorization").fetchone() == ("alice",)
            assert a.execute("SHOW is_superuser").fetchone() == ("off",)
            assert a.execute("SHOW role").fetchone() == ("none",)
        assert _sqlstate(a.execute, "SELECT set_config('is_superuser', 'on', false)") == "55P02"
        assert a.execute("SHOW is_superuser").fetchone() == ("off",)
        assert _sqlstate(a.execute, "SET SESSION AUTHORIZATION nosuch") == "22023"
        assert _sqlstate(a.execute, "SET ROLE nosuch") == "22023"
        # Itself it may name, and every way back to the start is accepted.
        for sql in (
            "SET SESSION AUTHORIZATION alice",
            "SET session_authorization = 'alice'",
            "SET SESSION AUTHORIZATION DEFAULT",
            "RESET SESSION AUTHORIZATION",
            "RESET session_authorization",
            "SET session_authorization TO DEFAULT",
        ):
            a.execute(sql)
            assert a.execute("SHOW session_authorization").fetchone() == ("alice",), sql
        a.execute("SET ROLE alice")
        assert a.execute("SHOW role").fetchone() == ("alice",)
        for sql in ("SET ROLE NONE", "RESET ROLE", "SET role TO DEFAULT"):
            a.execute("SET ROLE alice")
            a.execute(sql)
            assert a.execute("SHOW role").fetchone() == ("none",), sql
        assert a.execute("SELECT current_user, session_user").fetchone() == ("alice", "alice")
    with psycopg.connect(server.dsn(), autocommit=True) as su:
        # The server cannot act as another user, so it does not pretend to.
        assert _sqlstate(su.execute, "SET SESSION AUTHORIZATION alice") == "0A000"
        assert _sqlstate(su.execute, "SET ROLE alice") == "0A000"
        su.execute("SET SESSION AUTHORIZATION nodedb")
        assert su.execute("SHOW session_authorization").fetchone() == ("nodedb",)
