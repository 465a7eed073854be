"""BACKUP TENANT and RESTORE .. DRY RUN: files, streams, paths, permissions, damage."""

from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path

import loro
import pg8000.native
import psycopg
import pytest

from tests.serverproc import ServerProcess, connect_sqlstate

FIGURES = (
    "tenant",
    "watermark_lsn",
    "bytes",
    "documents",
    "indexes",
    "vectors",
    "edges",
    "kv",
    "timeseries",
    "crdt",
)


@pytest.fixture
def backup_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    allowed = tmp_path / "backups"
    allowed.mkdir()
    srv = ServerProcess(tmp_path / "data", env={"NODEDB_BACKUP_ALLOWED_DIRS": str(allowed)}).start()
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        su.execute("CREATE TENANT acme")
        su.execute("CREATE USER ops WITH PASSWORD 'x' TENANT acme")
        su.execute("GRANT BACKUP ON TENANT acme TO ops")
        su.execute("CREATE USER nobody WITH PASSWORD 'x' TENANT acme")
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION users")
        conn.execute(
            "INSERT INTO users [ {id: 'a', n: 1, v: [1.0, 2.0]}, {id: 'b', n: 2, v: [0.0, 1.0]} ]"
        )
        conn.execute("CREATE VECTOR INDEX iv ON users FIELD v METRIC l2 DIM 2")
        conn.execute("CREATE INDEX ON users FIELDS n")
        conn.execute("CREATE COLLECTION kv TYPE KEY_VALUE (key TEXT PRIMARY KEY)")
        conn.execute("UPSERT INTO kv { key: 'k', x: 1 }")
        conn.execute("GRAPH INSERT EDGE IN 'users' FROM 'a' TO 'b' TYPE 'knows'")
        conn.execute("CREATE TIMESERIES m")
        conn.execute("INSERT INTO m (ts, x) VALUES ('2026-04-01', 1), ('2026-04-02', 2)")
        conn.execute("CREATE COLLECTION notes")
        doc = loro.LoroDoc()
        doc.get_text("t").insert(0, "hi")
        doc.commit()
        conn.execute(
            "SELECT crdt_apply('notes', 'n1', %s)", (bytes(doc.export(loro.ExportMode.Snapshot())),)
        )
    yield srv, allowed
    srv.kill9()


def test_backup_file_and_dry_run_agree_and_change_nothing(backup_server) -> None:
    srv, allowed = backup_server
    path = allowed / "acme.bak"
    with psycopg.connect(srv.dsn(user="ops", database="acme"), autocommit=True) as conn:
        row = conn.execute(f"BACKUP TENANT acme TO '{path}'").fetchone()
        figures = dict(zip(FIGURES, row, strict=True))
        assert figures["tenant"] == "acme" and figures["bytes"] == path.stat().st_size
        assert (
            figures["documents"],
            figures["indexes"],
            figures["vectors"],
            figures["edges"],
            figures["kv"],
            figures["timeseries"],
            figures["crdt"],
        ) == (2, 2, 2, 1, 1, 2, 1)
        assert (path.stat().st_mode & 0o777) == 0o600
        lsn_before = conn.execute("SELECT current_lsn()").fetchone()
        checked = conn.execute(f"RESTORE TENANT acme FROM '{path}' DRY RUN").fetchone()
        assert checked == row
        assert conn.execute("SELECT current_lsn()").fetchone() == lsn_before
        assert not [p for p in allowed.iterdir() if p.name != "acme.bak"], "no temporary files left"


def test_copy_backup_to_stdout_through_psql(backup_server) -> None:
    srv, allowed = backup_server
    out = allowed / "streamed.bak"
    with open(out, "wb") as f:
        res = subprocess.run(
            [
                *srv.psql("acme"),
                "-c",
                "COPY (BACKUP TENANT acme) TO STDOUT",
            ],
            stdout=f,
            stderr=subprocess.PIPE,
            text=False,
            timeout=60,
        )
    assert res.returncode == 0, res.stderr
    assert b"documents 2" in res.stderr  # the NOTICE with the figures
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        row = conn.execute(f"RESTORE TENANT acme FROM '{out}' DRY RUN").fetchone()
        assert row[0] == "acme" and row[3:] == (2, 2, 2, 1, 1, 2, 1)


def test_paths_outside_allowed_dirs_and_overwrite_are_42501(backup_server, tmp_path: Path) -> None:
    srv, allowed = backup_server
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (allowed / "link").symlink_to(outside)
    (allowed / "taken.bak").write_bytes(b"x")
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        for target in (
            "relative.bak",
            f"{allowed}/../escape.bak",
            f"{outside}/x.bak",
            f"{allowed}/link/x.bak",
            f"{allowed}/taken.bak",
        ):
            with pytest.raises(psycopg.Error) as err:
                conn.execute(f"BACKUP TENANT acme TO '{target}'")
            assert err.value.sqlstate == "42501", target
        assert not any(outside.iterdir())
        assert (allowed / "taken.bak").read_bytes() == b"x"
        conn.execute(f"BACKUP TENANT acme TO '{allowed}/taken.bak' WITH (overwrite)")
        assert (allowed / "taken.bak").stat().st_size > 100


def test_permissions(backup_server) -> None:
    srv, allowed = backup_server
    with psycopg.connect(srv.dsn(user="nobody", database="acme"), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as err:
            conn.execute(f"BACKUP TENANT acme TO '{allowed}/n.bak'")
        assert err.value.sqlstate == "42501"
    with psycopg.connect(srv.dsn(user="ops", database="acme"), autocommit=True) as conn:
        conn.execute(f"BACKUP TENANT acme TO '{allowed}/ops.bak'")
        with pytest.raises(psycopg.Error) as err:
            conn.execute(f"RESTORE TENANT acme FROM '{allowed}/ops.bak'")
        assert err.value.sqlstate == "42501"


def test_damaged_foreign_and_wrong_key_backups_are_22000(backup_server, tmp_path: Path) -> None:
    srv, allowed = backup_server
    good = allowed / "good.bak"
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        conn.execute(f"BACKUP TENANT acme TO '{good}'")
        blob = good.read_bytes()
        cases = {
            "flipped.bak": blob[:300] + bytes([blob[300] ^ 1]) + blob[301:],
            "truncated.bak": blob[: len(blob) // 2],
            "empty.bak": b"",
            "random.bak": os.urandom(2000),
        }
        for name, data in cases.items():
            (allowed / name).write_bytes(data)
            with pytest.raises(psycopg.Error) as err:
                conn.execute(f"RESTORE TENANT acme FROM '{allowed / name}' DRY RUN")
            assert err.value.sqlstate == "22000", name
            assert "invalid backup" in str(err.value)
        with pytest.raises(psycopg.Error) as err:
            conn.execute(f"RESTORE TENANT other FROM '{good}' DRY RUN")
        assert err.value.sqlstate == "22000" and "rename" in str(err.value)
        ok = conn.execute(f"RESTORE TENANT other FROM '{good}' DRY RUN WITH (rename)").fetchone()
        assert ok[0] == "acme"
    # A real restore of a file that is no backup, or a backup of another tenant, is
    # refused from its header, before the tenant's sessions are touched.
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        su.execute("CREATE TENANT other")
    with (
        psycopg.connect(srv.dsn(database="acme"), autocommit=True) as acme,
        psycopg.connect(srv.dsn(database="other"), autocommit=True) as other_session,
        psycopg.connect(srv.dsn(), autocommit=True) as su,
    ):
        for sql in (
            f"RESTORE TENANT acme FROM '{allowed / 'random.bak'}'",
            f"RESTORE TENANT other FROM '{good}'",
        ):
            with pytest.raises(psycopg.Error) as err:
                su.execute(sql)
            assert err.value.sqlstate == "22000" and "nothing was changed" in str(err.value)
        assert acme.execute("SELECT count(*) FROM users").fetchone() == (2,)
        assert other_session.execute("SELECT 1").fetchone() == (1,)
    # A server with another master key cannot open it, and says which key it needs.
    other = ServerProcess(
        tmp_path / "other", env={"NODEDB_BACKUP_ALLOWED_DIRS": str(allowed)}
    ).start()
    try:
        with psycopg.connect(other.dsn(), autocommit=True) as conn:
            with pytest.raises(psycopg.Error) as err:
                conn.execute(f"RESTORE TENANT acme FROM '{good}' DRY RUN")
            assert err.value.sqlstate == "22000" and "needs master key id" in str(err.value)
    finally:
        other.kill9()


def test_restore_replaces_the_tenant_and_survives_kill9(backup_server) -> None:
    srv, allowed = backup_server
    bak = allowed / "r.bak"
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        conn.execute(f"BACKUP TENANT acme TO '{bak}'")
        conn.execute("INSERT INTO users { id: 'late' }")
        conn.execute("DROP COLLECTION kv PURGE")
        lsn_before = conn.execute("SELECT current_lsn()").fetchone()[0]
    bystander = psycopg.connect(srv.dsn(database="acme"), autocommit=True)
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        row = su.execute(f"RESTORE TENANT acme FROM '{bak}'").fetchone()
        assert row[0] == "acme"
    with pytest.raises(psycopg.OperationalError) as err:
        bystander.execute("SELECT 1")
    assert err.value.sqlstate == "57P01"  # ended by the restore
    bystander.close()

    def check() -> None:
        with psycopg.connect(srv.dsn(user="ops", database="acme"), autocommit=True) as conn:
            assert [r[0] for r in conn.execute("SELECT id FROM users ORDER BY id")] == ["a", "b"]
            names = [r[0] for r in conn.execute("SHOW COLLECTIONS")]
            assert "kv" not in names, "a collection purged after the backup stays purged"
            assert (
                conn.execute("SEARCH users USING VECTOR(v, ARRAY[1.0, 2.0], 1)").fetchone()[0]
                == "a"
            )
            assert conn.execute("GRAPH NEIGHBORS OF 'a' IN 'users'").fetchall() == [
                ("b", "knows", {})
            ]
            assert conn.execute("SELECT COUNT(*) FROM m").fetchone() == (2,)
            assert conn.execute("SELECT current_lsn()").fetchone()[0] > lsn_before

    check()
    srv.kill9()
    srv.start()
    check()
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        su.execute(f"RESTORE TENANT acme FROM '{bak}' WITH (resurrect)")
        su.execute(f"RESTORE TENANT copy FROM '{bak}' WITH (rename)")
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        assert "kv" in [r[0] for r in conn.execute("SHOW COLLECTIONS")]
        restored = _everything(conn)
    with psycopg.connect(srv.dsn(database="copy"), autocommit=True) as conn:
        assert conn.execute("SELECT COUNT(*) FROM users").fetchone() == (2,)
    # A restored tenant is built in memory while its checkpoint is written; booting
    # from that checkpoint must give the very same tenant, sizes included.
    srv.kill9()
    srv.start()
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        assert _everything(conn) == restored


def _everything(conn: psycopg.Connection) -> list[object]:
    return [
        conn.execute(sql).fetchall()
        for sql in (
            "SELECT * FROM users ORDER BY id",
            "SELECT id FROM users WHERE n = 2",
            "SEARCH users USING VECTOR(v, ARRAY[0.0, 1.0], 2)",
            "SELECT * FROM kv",
            "GRAPH NEIGHBORS OF 'b' IN 'users' DIRECTION in",
            "SELECT * FROM m ORDER BY ts",
            "SELECT crdt_state('notes', 'n1')",
            "SHOW COLLECTIONS",
        )
    ]


def test_a_damaged_restore_changes_nothing(backup_server) -> None:
    srv, allowed = backup_server
    bak = allowed / "d.bak"
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        conn.execute(f"BACKUP TENANT acme TO '{bak}'")
        conn.execute("INSERT INTO users { id: 'after' }")
    blob = bak.read_bytes()
    bak.write_bytes(blob[: len(blob) * 9 // 10])  # cut at 90 %
    tenants_before = sorted(p.name for p in (srv.data_dir / "tenants").iterdir())
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        with pytest.raises(psycopg.Error) as err:
            su.execute(f"RESTORE TENANT acme FROM '{bak}'")
        assert err.value.sqlstate == "22000"
    assert sorted(p.name for p in (srv.data_dir / "tenants").iterdir()) == tenants_before
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        assert conn.execute("SELECT COUNT(*) FROM users").fetchone() == (3,)


def test_copy_restore_from_stdin_through_psql(backup_server) -> None:
    srv, allowed = backup_server
    bak = allowed / "s.bak"
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        conn.execute(f"BACKUP TENANT acme TO '{bak}'")

    def psql(sql: str, data: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [
                *srv.psql("nodedb"),
                "-c",
                sql,
            ],
            input=data,
            capture_output=True,
            timeout=60,
        )

    checked = psql("COPY tenant_restore(acme) FROM STDIN DRY RUN", bak.read_bytes())
    assert checked.returncode == 0, checked.stderr
    assert b"documents 2" in checked.stderr
    damaged = psql("COPY tenant_restore(acme) FROM STDIN DRY RUN", bak.read_bytes()[:-40])
    assert damaged.returncode != 0 and b"invalid backup" in damaged.stderr
    restored = psql("COPY tenant_restore(clone) FROM STDIN WITH (rename)", bak.read_bytes())
    assert restored.returncode == 0, restored.stderr
    with psycopg.connect(srv.dsn(database="clone"), autocommit=True) as conn:
        assert [r[0] for r in conn.execute("SELECT id FROM users ORDER BY id")] == ["a", "b"]


def test_backup_under_concurrent_writes_is_one_consistent_snapshot(backup_server) -> None:
    """Writers commit a document and a counter increment together; in the backup the
    counter must equal the documents exactly: nothing half in, nothing torn."""
    import threading

    srv, allowed = backup_server
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION events")
        conn.execute("CREATE COLLECTION tally TYPE KEY_VALUE (key TEXT PRIMARY KEY, n INT8)")
        conn.execute("INSERT INTO tally (key, n) VALUES ('all', 0)")
    stop = threading.Event()
    acked_before: list[int] = []

    def writer(wid: int) -> None:
        with psycopg.connect(srv.dsn(database="acme")) as conn:
            i = 0
            while not stop.is_set():
                conn.execute("INSERT INTO events { id: %s }", (f"w{wid}-{i}",))
                conn.execute("UPDATE tally SET n = n + 1 WHERE key = 'all'")
                conn.commit()
                i += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for th in threads:
        th.start()
    time.sleep(0.5)
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        acked_before.append(conn.execute("SELECT n FROM tally WHERE key = 'all'").fetchone()[0])
        conn.execute(f"BACKUP TENANT acme TO '{allowed}/live.bak'")
    time.sleep(0.3)
    stop.set()
    for th in threads:
        th.join()
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        su.execute(f"RESTORE TENANT snap FROM '{allowed}/live.bak' WITH (rename)")
    with psycopg.connect(srv.dsn(database="snap"), autocommit=True) as conn:
        events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        tally = conn.execute("SELECT n FROM tally WHERE key = 'all'").fetchone()[0]
    assert events == tally >= acked_before[0] > 0
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] > events


def test_restoring_twice_rebuilds_the_same_catalog(backup_server) -> None:
    srv, allowed = backup_server

    def catalog() -> list:
        with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
            out = [conn.execute("SHOW COLLECTIONS").fetchall()]
            for name, *_rest in out[0]:
                out.append(conn.execute(f"DESCRIBE {name}").fetchall())
            return out

    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        su.execute(f"BACKUP TENANT acme TO '{allowed}/twice.bak'")
        su.execute(f"RESTORE TENANT acme FROM '{allowed}/twice.bak'")
        first = catalog()
        su.execute(f"RESTORE TENANT acme FROM '{allowed}/twice.bak'")
        assert catalog() == first


def test_kill9_during_restore_leaves_old_or_new_never_a_mix(backup_server) -> None:
    srv, allowed = backup_server
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION big")
        for i in range(0, 30_000, 1000):
            body = ", ".join(f"{{ id: 'b{j}', pad: '{'x' * 200}' }}" for j in range(i, i + 1000))
            conn.execute(f"INSERT INTO big [ {body} ]")
        conn.execute(f"BACKUP TENANT acme TO '{allowed}/big.bak'")
        conn.execute("DELETE FROM big WHERE id = 'b1'")
    proc = subprocess.Popen(
        [
            *srv.psql("nodedb"),
            "-c",
            f"RESTORE TENANT acme FROM '{allowed}/big.bak'",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.15)
    srv.kill9()
    proc.wait(10)
    srv.start()
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        count = conn.execute("SELECT COUNT(*) FROM big").fetchone()[0]
    assert count in (29_999, 30_000), "either the tenant before the restore, or the backup"
    live = {str(t) for t in range(1, 100)}
    dirs = {p.name for p in (srv.data_dir / "tenants").iterdir()}
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        ids = {str(r[1]) for r in su.execute("SHOW TENANTS").fetchall()}
    assert dirs == ids & live, f"orphan tenant directories left: {dirs - ids}"


@pytest.mark.fault
def test_fuzz_dry_run_over_mutated_real_backups(backup_server) -> None:
    """The whole decoder (envelope, sections, items, Parquet) on a real backup with random
    damage: it either decodes to the same figures or fails with EnvelopeError, nothing else."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from nodedb_server.backup.envelope import EnvelopeError
    from nodedb_server.backup.restore import dry_run
    from nodedb_server.tenants.keys import key_id

    srv, allowed = backup_server
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        expected = conn.execute(f"BACKUP TENANT acme TO '{allowed}/f.bak'").fetchone()
    blob = (allowed / "f.bak").read_bytes()
    master = (srv.data_dir / "master.key").read_bytes()
    mid = key_id(master)

    @settings(
        max_examples=int(os.environ.get("NODEDB_FUZZ_EXAMPLES", "150")),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(
        st.lists(
            st.tuples(st.integers(0, len(blob) - 1), st.integers(1, 255)), min_size=1, max_size=3
        ),
        st.booleans(),
    )
    def fuzz(flips: list[tuple[int, int]], cut: bool) -> None:
        data = bytearray(blob)
        for pos, bits in flips:
            data[pos] ^= bits
        if cut:
            del data[flips[0][0] :]
        try:
            summary = dry_run(
                io.BytesIO(bytes(data)), master, mid, "acme", False, lambda _tenant: True
            )
        except EnvelopeError:
            return
        assert summary.row() == expected

    fuzz()


def test_system_backups_lists_recent_operations(backup_server) -> None:
    srv, allowed = backup_server
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        conn.execute(f"BACKUP TENANT acme TO '{allowed}/o.bak'")
        conn.execute(f"RESTORE TENANT acme FROM '{allowed}/o.bak' DRY RUN")
        with pytest.raises(psycopg.Error):
            conn.execute(f"RESTORE TENANT acme FROM '{allowed}/missing.bak' DRY RUN")
        (allowed / "junk.bak").write_bytes(b"junk")
        with pytest.raises(psycopg.Error):
            conn.execute(f"RESTORE TENANT acme FROM '{allowed}/junk.bak' DRY RUN")
        rows = conn.execute(
            "SELECT kind, tenant, status, percent = 100, bytes > 0 FROM _system.backups ORDER BY id"
        ).fetchall()
    assert rows == [
        ("backup", "acme", "done", True, True),
        ("dry run", "acme", "done", True, True),
        ("dry run", "acme", "failed", False, True),
    ]


def test_restore_on_a_fresh_server_with_the_same_master_key(backup_server, tmp_path: Path) -> None:
    srv, allowed = backup_server
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        conn.execute(f"BACKUP TENANT acme TO '{allowed}/move.bak'")
    key = srv.data_dir / "master.key"
    fresh = ServerProcess(
        tmp_path / "fresh",
        env={"NODEDB_BACKUP_ALLOWED_DIRS": str(allowed), "NODEDB_MASTER_KEY_FILE": str(key)},
    ).start()
    try:
        with psycopg.connect(fresh.dsn(), autocommit=True) as su:
            su.execute(f"RESTORE TENANT acme FROM '{allowed}/move.bak'")
        # The tenant's users and grants came with it.
        with psycopg.connect(fresh.dsn(user="ops", database="acme"), autocommit=True) as conn:
            assert [r[0] for r in conn.execute("SELECT id FROM users ORDER BY id")] == ["a", "b"]
            conn.execute(f"BACKUP TENANT acme TO '{allowed}/again.bak'")
    finally:
        fresh.kill9()


def _wait_ended(conn: psycopg.Connection) -> str:
    """Polls a session until the server ends it; returns the SQLSTATE it was ended with."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            conn.execute("SELECT 1")
        except psycopg.Error as e:
            return e.sqlstate or "connection closed"
        time.sleep(0.02)
    raise AssertionError("the session was never ended")


def test_a_running_restore_holds_the_tenant_and_a_cancelled_one_changes_nothing(
    backup_server,
) -> None:  # type: ignore[no-untyped-def]
    """From the moment a restore starts, the tenant takes no statements (so the backup
    replaces exactly what was there, and its LSNs follow the last one written): other
    sessions end with 57P01, new ones get 57P03, a second restore is 55006. Cancelling it
    halfway through the stream leaves the tenant as it was, serving, with no staging
    left on disk."""
    srv, allowed = backup_server
    bak = allowed / "held.bak"
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        # Enough that half the backup is more than the client buffers before sending.
        conn.execute("CREATE COLLECTION bulk")
        body = ", ".join(f"{{ id: 'b{i}', pad: '{'p' * 200}' }}" for i in range(1000))
        conn.execute(f"INSERT INTO bulk [ {body} ]")
        conn.execute(f"BACKUP TENANT acme TO '{bak}'")
        conn.execute("INSERT INTO users { id: 'c', n: 3 }")  # after the backup
    data = bak.read_bytes()
    tenant_dirs = sorted(p.name for p in (srv.data_dir / "tenants").iterdir())
    bystander = psycopg.connect(srv.dsn(database="acme"), autocommit=True)
    restorer = psycopg.connect(srv.dsn(), autocommit=True)
    with (
        pytest.raises(psycopg.errors.QueryCanceled),
        restorer.cursor() as cur,
        cur.copy("COPY tenant_restore(acme) FROM STDIN") as copy,
    ):
        copy.write(data[: len(data) // 2])
        assert _wait_ended(bystander) == "57P01"
        assert connect_sqlstate(srv, database="acme") == "57P03"
        with psycopg.connect(srv.dsn(), autocommit=True) as second:
            with pytest.raises(psycopg.Error) as busy:
                second.execute(f"RESTORE TENANT acme FROM '{bak}'")
            assert busy.value.sqlstate == "55006"
            with pytest.raises(psycopg.Error) as busy:
                second.execute("DROP TENANT acme")
            assert busy.value.sqlstate == "55006"
        restorer.cancel()
        time.sleep(0.5)  # the cancel lands while the stream is still open
        copy.write(data[len(data) // 2 :])
    restorer.close()
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM users ORDER BY id")]
        assert ids == ["a", "b", "c"], "the cancelled restore changed nothing"
        conn.execute("INSERT INTO users { id: 'd', n: 4 }")  # and it takes writes again
    assert sorted(p.name for p in (srv.data_dir / "tenants").iterdir()) == tenant_dirs
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        row = su.execute(
            "SELECT status, error FROM _system.backups WHERE kind = 'restore'"
        ).fetchall()
        assert sorted(row) == [
            ("failed", 'a restore of tenant "acme" is already running'),
            ("failed", "cancelled"),
        ]
        su.execute(f"RESTORE TENANT acme FROM '{bak}'")  # a later restore goes through
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        assert [r[0] for r in conn.execute("SELECT id FROM users ORDER BY id")] == ["a", "b"]


def test_lsns_go_on_rising_after_restoring_an_older_backup(backup_server) -> None:  # type: ignore[no-untyped-def]
    """Restoring an old backup does not wind the tenant's LSNs back: the restored tenant
    continues after the last LSN the replaced one had written, before and after a
    restart, so change streams and later backups see one rising history."""
    srv, allowed = backup_server
    bak = allowed / "old.bak"
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        watermark = conn.execute(f"BACKUP TENANT acme TO '{bak}'").fetchone()[1]
        for i in range(50):
            conn.execute("INSERT INTO users { id: %s, n: %s }", (f"later{i}", i))
        reached = conn.execute("SELECT current_lsn()").fetchone()[0]
    assert reached >= watermark + 50
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        su.execute(f"RESTORE TENANT acme FROM '{bak}'")
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        after = conn.execute("SELECT current_lsn()").fetchone()[0]
        assert after > reached
        conn.execute("INSERT INTO users { id: 'next', n: 0 }")
        written = conn.execute("SELECT current_lsn()").fetchone()[0]
        assert written > after
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 3
    srv.kill9()
    srv.start()
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        assert conn.execute("SELECT current_lsn()").fetchone()[0] == written
        ids = [r[0] for r in conn.execute("SELECT id FROM users ORDER BY id")]
        assert ids == ["a", "b", "next"]
        again = conn.execute(f"BACKUP TENANT acme TO '{allowed / 'new.bak'}'").fetchone()[1]
        assert again == written


def test_point_in_time_restore_is_refused_without_wal_archiving(backup_server) -> None:  # type: ignore[no-untyped-def]
    srv, allowed = backup_server
    bak = allowed / "pitr.bak"
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        su.execute(f"BACKUP TENANT acme TO '{bak}'")
        for until in ("UNTIL LSN 5", "UNTIL TIMESTAMP '2026-04-02 10:00:00+00'"):
            with pytest.raises(psycopg.Error) as err:
                su.execute(f"RESTORE TENANT acme FROM '{bak}' {until}")
            assert err.value.sqlstate == "55000" and "[wal_archive] enabled" in str(err.value)
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        assert [r[0] for r in conn.execute("SELECT id FROM users ORDER BY id")] == ["a", "b"]


def test_copy_backup_and_restore_round_trip_through_the_extended_protocol(
    backup_server,
) -> None:
    """pg8000 sends COPY through Parse/Bind/Execute, not a Query message: the backup
    streams out and back in through that path too."""
    srv, _ = backup_server
    pg = pg8000.native.Connection("nodedb", host="127.0.0.1", port=srv.port, database="acme")
    try:
        before = pg.run("SELECT id, n FROM users ORDER BY id")
        out = io.BytesIO()
        pg.run("COPY (BACKUP TENANT acme) TO STDOUT", stream=out)
        envelope = out.getvalue()
        assert len(envelope) > 100
        pg.run("INSERT INTO users {id: 'later', n: 99}")
        assert pg.run("SELECT count(*) FROM users") == [[len(before) + 1]]
        pg.run("COPY tenant_restore(acme) FROM STDIN DRY RUN", stream=io.BytesIO(envelope))
        pg.run("COPY tenant_restore(acme) FROM STDIN", stream=io.BytesIO(envelope))
    finally:
        pg.close()
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        after = conn.execute("SELECT id, n FROM users ORDER BY id").fetchall()
    assert [list(r) for r in after] == before
