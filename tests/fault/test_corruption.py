"""Real WAL files damaged on disk between a kill -9 and the restart."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from nodedb_server.storage.records import RECORD_HEADER, RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE
from tests.serverproc import ServerProcess

ROWS = 40


def _newest_segment(srv: ServerProcess) -> Path:
    wal = srv.data_dir / "tenants" / "1" / "wal"
    segs = sorted(wal.glob("*.wal"))
    with_records = [p for p in segs if p.stat().st_size > SEGMENT_HEADER_SIZE]
    return with_records[-1]


def _record_offsets(path: Path) -> list[int]:
    data = path.read_bytes()
    off, out = SEGMENT_HEADER_SIZE, []
    while off + RECORD_HEADER_SIZE <= len(data):
        plen = RECORD_HEADER.unpack_from(data, off)[6]
        out.append(off)
        off += RECORD_HEADER_SIZE + plen
    return out


def _load(srv: ServerProcess) -> None:
    with psycopg.connect(srv.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION docs")
        for i in range(ROWS):
            conn.execute("INSERT INTO docs (id, n) VALUES (%s, %s)", (f"d{i:03d}", i))


def _append_garbage(p: Path) -> None:
    with open(p, "ab") as f:
        f.write(os.urandom(333))


def _cut_last_record(p: Path) -> None:
    last = _record_offsets(p)[-1]
    size = p.stat().st_size
    os.truncate(p, last + (size - last) // 2)


def _flip_bit_in_last_record(p: Path) -> None:
    last = _record_offsets(p)[-1]
    data = bytearray(p.read_bytes())
    data[last + RECORD_HEADER_SIZE + 5] ^= 0x10
    p.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "survivors"),
    [(_append_garbage, ROWS), (_cut_last_record, ROWS - 1), (_flip_bit_in_last_record, ROWS - 1)],
    ids=["garbage-appended", "record-cut-in-half", "bit-flipped-in-last-record"],
)
def test_damaged_wal_tail_keeps_every_record_before_it(
    server: ServerProcess, damage: Callable[[Path], None], survivors: int
) -> None:
    _load(server)
    server.kill9()
    seg = _newest_segment(server)
    damage(seg)
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM docs ORDER BY id")]
        assert ids == [f"d{i:03d}" for i in range(survivors)]
        # The server goes on accepting writes after the repair, and they survive too.
        conn.execute("INSERT INTO docs (id, n) VALUES ('after', 1)")
    log = server.log()
    assert "discarded" in log and seg.name in log
    server.kill9()
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT COUNT(*) FROM docs").fetchone() == (survivors + 1,)


def test_damaged_checkpoint_falls_back_to_the_previous_one(server: ServerProcess) -> None:
    _load(server)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        conn.execute("INSERT INTO docs (id, n) VALUES ('mid', 1)")
        conn.execute("CHECKPOINT")
        conn.execute("INSERT INTO docs (id, n) VALUES ('late', 2)")
    server.kill9()
    ckpts = sorted((server.data_dir / "tenants" / "1" / "checkpoints").iterdir())
    assert len(ckpts) == 2
    l1 = sorted(ckpts[-1].glob("*.l1"))[-1]
    data = bytearray(l1.read_bytes())
    data[len(data) // 2] ^= 0xFF
    l1.write_bytes(bytes(data))
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT COUNT(*) FROM docs").fetchone() == (ROWS + 2,)
    assert "unusable" in server.log()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT tenant, file, reason, location FROM _system.quarantine"
        ).fetchall()
    assert len(rows) == 1
    tenant, file, reason, location = rows[0]
    assert tenant == "default" and file.endswith(f"checkpoint-{ckpts[-1].name}")
    assert "unusable checkpoint" in reason and l1.name in reason
    assert Path(location).is_dir() and (Path(location) / l1.name).exists()
