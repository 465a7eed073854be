"""Point-in-time restore against a real server archiving its WAL to a local directory."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import google_crc32c
import psycopg
import pytest

from nodedb_server.storage.records import RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE
from tests.serverproc import ServerProcess

PAD = "x" * 400  # a few rows fill a 4096-byte segment, so a history spans many


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    root = tmp_path_factory.mktemp("pitr")
    allowed = root / "backups"
    allowed.mkdir()
    srv = ServerProcess(
        root / "data",
        env={
            "NODEDB_BACKUP_ALLOWED_DIRS": str(allowed),
            "NODEDB_WAL_ARCHIVE_ENABLED": "true",
            "NODEDB_WAL_SEGMENT_BYTES": "4096",
            "NODEDB_WAL_ARCHIVE_MAX_DELAY_SECONDS": "0.2",
        },
    ).start()
    yield srv, allowed
    srv.kill9()


def state(srv: ServerProcess, tenant: str) -> dict[str, Any]:
    """Everything the tests write, read back in full."""
    with psycopg.connect(srv.dsn(database=tenant), autocommit=True) as conn:
        names = [r[0] for r in conn.execute("SHOW COLLECTIONS").fetchall()]
        out: dict[str, Any] = {"collections": sorted(names)}
        for name in sorted(names):
            out[name] = conn.execute(f"SELECT id, n FROM {name} ORDER BY id").fetchall()
        return out


def tenant_id(su: psycopg.Connection[Any], tenant: str) -> int:
    rows = su.execute("SHOW TENANTS").fetchall()
    cols = [c.name for c in su.execute("SHOW TENANTS").description or []]
    for row in rows:
        d = dict(zip(cols, row, strict=True))
        if d.get("name") == tenant:
            return int(d["id"])
    raise AssertionError(f"no tenant {tenant}")


def history(
    srv: ServerProcess, allowed: Path, tenant: str
) -> tuple[Path, list[tuple[int, dt.datetime, dict[str, Any]]]]:
    """A backup of ``tenant``, then a series of changes after it; each change's LSN, a
    time between it and the next, and the state then."""
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        su.execute(f"CREATE TENANT {tenant}")
    bak = allowed / f"{tenant}.bak"
    points = []
    with psycopg.connect(srv.dsn(database=tenant), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION items")
        conn.execute("CREATE COLLECTION gone")
        conn.execute(f"INSERT INTO gone {{id: 'g', n: 0, pad: '{PAD}'}}")
        for i in range(3):
            conn.execute(f"INSERT INTO items {{id: 'a{i}', n: {i}, pad: '{PAD}'}}")
        conn.execute(f"BACKUP TENANT {tenant} TO '{bak}'")
        steps = [
            *(f"INSERT INTO items {{id: 'b{i}', n: {i}, pad: '{PAD}'}}" for i in range(4)),
            "UPDATE items SET n = 100 WHERE id = 'a1'",
            "DELETE FROM items WHERE id = 'b0'",
            "DROP COLLECTION gone PURGE",
            *(f"INSERT INTO items {{id: 'c{i}', n: {i}, pad: '{PAD}'}}" for i in range(4)),
        ]
        for sql in steps:
            conn.execute(sql)
            lsn = conn.execute("SELECT current_lsn()").fetchone()[0]
            time.sleep(0.02)
            at = dt.datetime.now(dt.UTC)
            time.sleep(0.02)
            points.append((lsn, at, state(srv, tenant)))
    return bak, points


def restore(su: psycopg.Connection[Any], sql: str) -> dict[str, Any]:
    cur = su.execute(sql)
    cols = [c.name for c in cur.description or []]
    return dict(zip(cols, cur.fetchone() or (), strict=True))


def refused(su: psycopg.Connection[Any], sql: str) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as err:
        su.execute(sql)
    return err.value


def test_restore_to_recorded_lsns_and_a_timestamp_gives_the_state_then(server) -> None:  # type: ignore[no-untyped-def]
    srv, allowed = server
    bak, points = history(srv, allowed, "hist")
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        # After the purge (index 6), before it, and the very first change.
        for i in (0, 5, 8):
            lsn, _, expected = points[i]
            row = restore(su, f"RESTORE TENANT hist FROM '{bak}' UNTIL LSN {lsn}")
            assert row["until_lsn"] == lsn and row["records_replayed"] > 0
            assert state(srv, "hist") == expected, i
        assert "gone" in points[5][2]["collections"]  # purged after the target: restored
        assert "gone" not in points[8][2]["collections"]
        _, at, expected = points[3]
        row = restore(su, f"RESTORE TENANT hist FROM '{bak}' UNTIL TIMESTAMP '{at.isoformat()}'")
        assert row["until_lsn"] == points[3][0] and row["until_time"] <= at
        assert state(srv, "hist") == expected
        # Without a zone the literal is UTC; fractional seconds count.
        naive = at.replace(tzinfo=None).isoformat(sep=" ")
        restore(su, f"RESTORE TENANT hist FROM '{bak}' UNTIL TIMESTAMP '{naive}'")
        assert state(srv, "hist") == expected
    # The streamed form replays too; its figures come as NOTICEs.
    lsn, _, expected = points[7]
    with open(bak, "rb") as f:
        run = subprocess.run(
            [*srv.psql(), "-c", f"COPY tenant_restore(hist) FROM STDIN UNTIL LSN {lsn}"],
            stdin=f,
            capture_output=True,
            timeout=60,
        )
    assert run.returncode == 0, run.stderr
    assert f"up to source LSN {lsn}".encode() in run.stderr
    assert state(srv, "hist") == expected


def test_a_target_outside_the_range_is_refused_with_the_range(server) -> None:  # type: ignore[no-untyped-def]
    srv, allowed = server
    bak, points = history(srv, allowed, "range")
    before = state(srv, "range")
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        watermark = restore(su, f"RESTORE TENANT range FROM '{bak}' DRY RUN")["watermark_lsn"]
        last = points[-1][0]
        for target in (f"LSN {watermark - 1}", f"LSN {last + 1000}"):
            err = refused(su, f"RESTORE TENANT range FROM '{bak}' UNTIL {target}")
            assert err.sqlstate == "22023", err
            assert f"LSN {watermark} to {last}" in str(err)
        err = refused(
            su, f"RESTORE TENANT range FROM '{bak}' UNTIL TIMESTAMP '2001-01-01 00:00:00'"
        )
        assert err.sqlstate == "22023" and "+00 to " in str(err)
        ranges = su.execute("SHOW RESTORE RANGE FOR TENANT range").fetchall()
        from_backup = [r for r in ranges if r[1] == f"backup {bak}"]
        assert [(r[2], r[3]) for r in from_backup] == [(watermark, last)]
    assert state(srv, "range") == before


def test_dry_run_counts_the_records_and_changes_nothing(server) -> None:  # type: ignore[no-untyped-def]
    srv, allowed = server
    bak, points = history(srv, allowed, "dry")
    before = state(srv, "dry")
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        lsn = points[4][0]
        watermark = restore(su, f"RESTORE TENANT dry FROM '{bak}' DRY RUN")["watermark_lsn"]
        row = restore(su, f"RESTORE TENANT dry FROM '{bak}' UNTIL LSN {lsn} DRY RUN")
        assert row["until_lsn"] == lsn and row["records_replayed"] == lsn - watermark
        assert not [p for p in allowed.iterdir() if not p.name.endswith(".bak")]
    assert state(srv, "dry") == before
    with psycopg.connect(srv.dsn(database="dry"), autocommit=True) as conn:
        assert conn.execute("SELECT current_lsn()").fetchone()[0] == points[-1][0]


def archive_dir(srv: ServerProcess, su: psycopg.Connection[Any], tenant: str) -> Path:
    return srv.data_dir / "wal_archive" / "tenants" / str(tenant_id(su, tenant)) / "wal"


def test_a_missing_or_damaged_segment_fails_and_changes_nothing(server) -> None:  # type: ignore[no-untyped-def]
    srv, allowed = server
    bak, points = history(srv, allowed, "gap")
    before = state(srv, "gap")
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        su.execute(f"RESTORE TENANT gap FROM '{bak}' DRY RUN")
        segments = sorted(archive_dir(srv, su, "gap").glob("*.wal"))
        middle = segments[len(segments) // 2]
        first_missing = int(middle.stem)
        before_gap = max(p[0] for p in points if p[0] < first_missing)
        middle.unlink()
        err = refused(su, f"RESTORE TENANT gap FROM '{bak}' UNTIL LSN {points[-1][0]}")
        assert err.sqlstate == "22023" and f"gap at LSN {first_missing}" in str(err)
        assert state(srv, "gap") == before
        dirs = sorted(p.name for p in (srv.data_dir / "tenants").iterdir())
        # A segment before the gap, damaged with its size kept: XX001 naming it.
        damaged = max(p for p in segments if int(p.stem) <= before_gap)  # holds before_gap
        data = bytearray(damaged.read_bytes())
        data[-5] ^= 0xFF
        damaged.write_bytes(bytes(data))
        err = refused(su, f"RESTORE TENANT gap FROM '{bak}' UNTIL LSN {before_gap}")
        assert err.sqlstate == "XX001" and damaged.name in str(err), err
        assert sorted(p.name for p in (srv.data_dir / "tenants").iterdir()) == dirs
        assert state(srv, "gap") == before
        data[-5] ^= 0xFF
        # A forged copy: one record's payload changed and the note rewritten to match.
        # The live tenant's uploader still knows the true note, so the copy is told
        # apart at once (tests/unit/test_pitr_range.py: a matching note, caught by the
        # record's GCM tag). Still XX001, and nothing changes.
        note = damaged.with_name(damaged.name + ".json")
        kept_note = note.read_text()
        forged = bytearray(data)
        forged[SEGMENT_HEADER_SIZE + RECORD_HEADER_SIZE + 1] ^= 0x01
        damaged.write_bytes(bytes(forged))
        meta = json.loads(kept_note) | {"crc32c": google_crc32c.value(bytes(forged))}
        note.write_text(json.dumps(meta))
        err = refused(su, f"RESTORE TENANT gap FROM '{bak}' UNTIL LSN {before_gap}")
        assert err.sqlstate == "XX001" and damaged.name in str(err), err
        assert sorted(p.name for p in (srv.data_dir / "tenants").iterdir()) == dirs
        assert state(srv, "gap") == before
        note.write_text(kept_note)
        damaged.write_bytes(bytes(data))
        restore(su, f"RESTORE TENANT gap FROM '{bak}' UNTIL LSN {before_gap}")
        assert state(srv, "gap") == next(p[2] for p in points if p[0] == before_gap)


def test_from_snapshot_until_and_the_range_agree(server) -> None:  # type: ignore[no-untyped-def]
    srv, _ = server
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        su.execute("CREATE TENANT snap")

    def writes(prefix: str) -> list[tuple[int, dt.datetime, dict[str, Any]]]:
        marks = []
        with psycopg.connect(srv.dsn(database="snap"), autocommit=True) as conn:
            conn.execute("CHECKPOINT")
            for i in range(5):
                conn.execute(f"INSERT INTO items {{id: '{prefix}{i}', n: {i}, pad: '{PAD}'}}")
                lsn = conn.execute("SELECT current_lsn()").fetchone()[0]
                time.sleep(0.02)
                marks.append((lsn, dt.datetime.now(dt.UTC), state(srv, "snap")))
                time.sleep(0.02)
        return marks

    with psycopg.connect(srv.dsn(database="snap"), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION items")
        for i in range(3):
            conn.execute(f"INSERT INTO items {{id: 'a{i}', n: {i}, pad: '{PAD}'}}")
    marks = writes("b")
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        ranges = su.execute("SHOW RESTORE RANGE FOR TENANT snap").fetchall()
        view = su.execute(
            "SELECT tenant, source, from_lsn, to_lsn, from_time, to_time "
            "FROM _system.restore_points WHERE tenant = 'snap'"
        ).fetchall()
        assert view == ranges
        snaps = [r for r in ranges if r[1].startswith("snapshot ")]
        assert snaps and snaps[0][3] == marks[-1][0]
        lsn, at, expected = marks[2]
        row = restore(su, f"RESTORE TENANT snap FROM SNAPSHOT UNTIL LSN {lsn} DRY RUN")
        assert row["records_replayed"] == lsn - snaps[0][2]
        assert state(srv, "snap") == marks[-1][2]
        row = restore(su, f"RESTORE TENANT snap FROM SNAPSHOT UNTIL TIMESTAMP '{at.isoformat()}'")
        assert row["until_lsn"] == lsn
        assert state(srv, "snap") == expected
        err = refused(su, "RESTORE TENANT snap FROM SNAPSHOT UNTIL LSN 1")
        assert err.sqlstate == "22023"
    # The restored tenant (a new id) goes on from its own snapshots and archive.
    marks = writes("c")
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        lsn, _, expected = marks[3]
        row = restore(su, f"RESTORE TENANT snap FROM SNAPSHOT UNTIL LSN {lsn}")
        assert row["until_lsn"] == lsn
        assert state(srv, "snap") == expected


def test_without_wal_archiving_pitr_is_55000(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data").start()
    try:
        with psycopg.connect(srv.dsn(), autocommit=True) as su:
            err = refused(su, "SHOW RESTORE RANGE FOR TENANT nodedb")
            assert err.sqlstate == "55000" and "[wal_archive] enabled" in str(err)
    finally:
        srv.kill9()
