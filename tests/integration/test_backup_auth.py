"""Who may read and overwrite which backup files, the names of the default tenant,
and the SQLSTATEs of bad backup paths."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.serverproc import ServerProcess


def _error(conn: psycopg.Connection, sql: str) -> psycopg.Error:  # type: ignore[type-arg]
    with pytest.raises(psycopg.Error) as err:
        conn.execute(sql)
    return err.value


def _copy_in_error(conn: psycopg.Connection, sql: str, data: bytes) -> psycopg.Error:  # type: ignore[type-arg]
    with pytest.raises(psycopg.Error) as err, conn.cursor().copy(sql) as copy:
        copy.write(data)
    return err.value


@pytest.fixture
def two_tenants(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    """Tenants ta and tb; opa (of ta) holds GRANT BACKUP ON TENANT ta; tb.bak is tb's backup."""
    allowed = tmp_path / "bk"
    allowed.mkdir()
    srv = ServerProcess(tmp_path / "data", env={"NODEDB_BACKUP_ALLOWED_DIRS": str(allowed)}).start()
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        for name in ("ta", "tb"):
            su.execute(f"CREATE TENANT {name}")
        su.execute("CREATE USER opa WITH PASSWORD 'x' TENANT ta")
        su.execute("GRANT BACKUP ON TENANT ta TO opa")
    with psycopg.connect(srv.dsn(database="tb"), autocommit=True) as tb:
        tb.execute("CREATE COLLECTION secrets")
        tb.execute("INSERT INTO secrets (id, v) VALUES ('s1', 'tb-only')")
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        su.execute(f"BACKUP TENANT tb TO '{allowed / 'tb.bak'}'")
    yield srv, allowed
    srv.kill9()


def test_a_grant_on_one_tenant_reads_no_other_tenants_backup(two_tenants) -> None:  # type: ignore[no-untyped-def]
    srv, allowed = two_tenants
    tb_bak = allowed / "tb.bak"
    tb_bytes = tb_bak.read_bytes()
    with psycopg.connect(srv.dsn(user="opa", database="ta"), autocommit=True) as opa:
        opa.execute(f"BACKUP TENANT ta TO '{allowed / 'ta.bak'}'")
        assert opa.execute(f"RESTORE TENANT ta FROM '{allowed / 'ta.bak'}' DRY RUN").fetchone()
        for sql in (
            f"RESTORE TENANT ta FROM '{tb_bak}' DRY RUN WITH (rename)",
            f"RESTORE TENANT ta FROM '{tb_bak}' DRY RUN",
            f"RESTORE TENANT ta FROM '{allowed / 'ta.bak'}' DRY RUN WITH (rename)",
        ):
            err = _error(opa, sql)
            assert err.sqlstate == "42501", sql
            message = str(err).replace(str(tb_bak), "")
            assert '"tb"' not in message and "'tb'" not in message, "the other tenant is not named"
        for sql in (
            "COPY tenant_restore(ta) FROM STDIN DRY RUN",
            "COPY tenant_restore(ta) FROM STDIN DRY RUN WITH (rename)",
        ):
            assert _copy_in_error(opa, sql, tb_bytes).sqlstate == "42501", sql
        assert opa.execute("SELECT 1").fetchone() == (1,)  # the session goes on
    assert tb_bak.read_bytes() == tb_bytes
    with psycopg.connect(srv.dsn(), autocommit=True) as su:  # the superuser still may
        row = su.execute(f"RESTORE TENANT ta FROM '{tb_bak}' DRY RUN WITH (rename)").fetchone()
        assert row is not None and row[0] == "tb"


def test_a_grant_on_one_tenant_overwrites_no_other_file(two_tenants) -> None:  # type: ignore[no-untyped-def]
    srv, allowed = two_tenants
    tb_bak = allowed / "tb.bak"
    tb_bytes = tb_bak.read_bytes()
    notes = allowed / "notes.txt"
    notes.write_bytes(b"not a backup")
    with psycopg.connect(srv.dsn(user="opa", database="ta"), autocommit=True) as opa:
        for target in (tb_bak, notes):
            err = _error(opa, f"BACKUP TENANT ta TO '{target}' WITH (overwrite)")
            assert err.sqlstate == "42501", target
            assert str(target) in str(err)
        # Its own tenant's backup it may replace.
        own = allowed / "ta.bak"
        opa.execute(f"BACKUP TENANT ta TO '{own}'")
        first = own.read_bytes()
        opa.execute("CREATE COLLECTION more")
        opa.execute(f"BACKUP TENANT ta TO '{own}' WITH (overwrite)")
        assert own.read_bytes() != first
    assert tb_bak.read_bytes() == tb_bytes
    assert notes.read_bytes() == b"not a backup"
    assert sorted(p.name for p in allowed.iterdir()) == ["notes.txt", "ta.bak", "tb.bak"]
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        su.execute(f"BACKUP TENANT ta TO '{tb_bak}' WITH (overwrite)")
        row = su.execute(f"RESTORE TENANT ta FROM '{tb_bak}' DRY RUN").fetchone()
        assert row is not None and row[0] == "ta"


def test_backup_and_restore_path_errors_are_clear(two_tenants) -> None:  # type: ignore[no-untyped-def]
    srv, allowed = two_tenants
    (allowed / "adir").mkdir()
    (allowed / "file").write_bytes(b"x")
    longest = "n" * 245 + ".bak"  # 249 bytes: a legal name
    cases = {
        f"{allowed}/missing/x.bak": "58P01",
        f"{allowed}/{'n' * 252}.bak": "22023",  # 256 bytes
        f"{allowed}/adir": "42809",
        f"{allowed}/file/x.bak": "42809",
    }
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        for path, state in cases.items():
            for sql in (
                f"BACKUP TENANT tb TO '{path}'",
                f"BACKUP TENANT tb TO '{path}' WITH (overwrite)",
            ):
                err = _error(su, sql)
                assert err.sqlstate == state, sql
                assert path in str(err) or path[:60] in str(err), str(err)
        assert su.execute(f"BACKUP TENANT tb TO '{allowed / longest}'").fetchone()
        assert su.execute(f"RESTORE TENANT tb FROM '{allowed / longest}' DRY RUN").fetchone()
        for path, state in (
            (f"{allowed}/missing.bak", "58P01"),
            (f"{allowed}/missing/x.bak", "58P01"),
            (f"{allowed}/adir", "42809"),
            (f"{allowed}/{'n' * 252}.bak", "22023"),
        ):
            for sql in (
                f"RESTORE TENANT tb FROM '{path}' DRY RUN",
                f"RESTORE TENANT tb FROM '{path}'",
            ):
                err = _error(su, sql)
                assert err.sqlstate == state, sql
                assert path[:60] in str(err), str(err)
    with psycopg.connect(srv.dsn(database="tb"), autocommit=True) as tb:
        assert tb.execute("SELECT v FROM secrets").fetchall() == [("tb-only",)]
    with psycopg.connect(srv.dsn(user="opa", database="ta"), autocommit=True) as opa:
        assert _error(opa, f"BACKUP TENANT ta TO '{allowed}/missing/x.bak'").sqlstate == "58P01"
    assert sorted(p.name for p in allowed.iterdir()) == sorted(["adir", "file", "tb.bak", longest])
    assert not any((allowed / "adir").iterdir())


def test_the_default_tenant_answers_to_nodedb_and_default(two_tenants) -> None:  # type: ignore[no-untyped-def]
    srv, allowed = two_tenants
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        su.execute("CREATE COLLECTION things")
        su.execute("INSERT INTO things (id) VALUES ('t1')")
        su.execute("CREATE USER keeper WITH PASSWORD 'x'")
        su.execute("GRANT BACKUP ON TENANT nodedb TO keeper")
        for name in ("nodedb", "default"):
            row = su.execute(f"BACKUP TENANT {name} TO '{allowed / name}.bak'").fetchone()
            assert row is not None and row[0] == "default" and row[3] == 1
            checked = su.execute(f"RESTORE TENANT {name} FROM '{allowed / name}.bak' DRY RUN")
            assert checked.fetchone() == row
        err = _error(su, f"RESTORE TENANT nodedb FROM '{allowed / 'nodedb.bak'}'")
        assert err.sqlstate == "42501"  # the default tenant is never replaced
    with psycopg.connect(srv.dsn(user="keeper"), autocommit=True) as keeper:
        for name in ("nodedb", "default"):
            path = allowed / f"k-{name}.bak"
            assert keeper.execute(f"BACKUP TENANT {name} TO '{path}'").fetchone()
            assert keeper.execute(f"RESTORE TENANT {name} FROM '{path}' DRY RUN").fetchone()
            with keeper.cursor().copy(f"COPY tenant_restore({name}) FROM STDIN DRY RUN") as copy:
                copy.write(path.read_bytes())
        assert _error(keeper, "BACKUP TENANT ta TO '/nowhere.bak'").sqlstate == "42501"
    streamed = subprocess.run(
        [*srv.psql("nodedb", user="keeper"), "-c", "COPY (BACKUP TENANT nodedb) TO STDOUT"],
        capture_output=True,
        timeout=60,
    )
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout.startswith(b"NDBK")


def test_backup_onto_a_full_disk_is_53100_and_leaves_nothing(tmp_path: Path) -> None:
    """A real full filesystem: a 1 MiB tmpfs (the tests run as root, as CI does)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        config = tmp_path / "nodedb.toml"
        config.write_text(f'[backup]\nallowed_dirs = ["{mnt}"]\n')
        srv = ServerProcess(tmp_path / "data", config=config).start()
        try:
            with psycopg.connect(srv.dsn(), autocommit=True) as conn:
                conn.execute("CREATE COLLECTION big")
                pad = os.urandom(1500).hex()  # incompressible, 3 KB a row
                for i in range(0, 1000, 100):
                    values = ", ".join(f"('r{j}', '{pad}')" for j in range(i, i + 100))
                    conn.execute(f"INSERT INTO big (id, pad) VALUES {values}")
                with pytest.raises(psycopg.errors.DiskFull):
                    conn.execute(f"BACKUP TENANT nodedb TO '{mnt}/all.bak'")
                assert list(mnt.iterdir()) == []
                assert conn.execute("SELECT COUNT(*) FROM big").fetchone() == (1000,)
        finally:
            srv.kill9()
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
