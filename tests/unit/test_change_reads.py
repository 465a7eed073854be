"""Change-stream reads from segment files: batch by batch, with the frame starts an
earlier read learnt, they return exactly what one read from the beginning returns,
over frames of many records (what the writer writes) and over a WAL of single records
(written before frames)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nodedb_server.events.changes import Positions, read_changes
from nodedb_server.storage import codec
from nodedb_server.storage.records import (
    OpKind,
    Record,
    RecordKind,
    SegmentHeader,
    seal_frame,
    seal_record,
)
from nodedb_server.storage.wal import segment_name

KEY = AESGCM(b"k" * 32)


def _wal(root: Path, segments: list[int], frames: bool = True, seed: int = 3) -> int:
    """Segments of DATA records, each record one to three row operations on "a" or
    "b" (sizes vary so that offsets do), in frames of 1 to 20 records or one record a
    header; returns the last LSN."""
    rng = random.Random(seed)
    lsn = 1
    for count in segments:
        data = SegmentHeader(1, 7, lsn).encode()
        recs = []
        for _ in range(count):
            ops = [
                [
                    int(OpKind.INSERT),
                    rng.choice("ab"),
                    f"k{lsn}-{j}",
                    {"n": lsn, "pad": "x" * rng.randrange(90)},
                    None,
                ]
                for j in range(rng.randrange(1, 4))
            ]
            recs.append(Record(lsn, RecordKind.DATA, lsn, codec.pack(ops)))
            lsn += 1
        i = 0
        while i < len(recs):
            n = rng.randrange(1, 21) if frames else 1
            group = recs[i : i + n]
            data += seal_frame(KEY, 7, 1, group) if frames else seal_record(KEY, 7, 1, group[0])
            i += n
        (root / segment_name(lsn - count)).write_bytes(data)
    return lsn - 1


def _drain(root: Path, head: int, limit: int, positions: Positions | None) -> list[tuple[int, str]]:
    got, after = [], 0
    while after < head:
        batch = read_changes(root, KEY, 1, {"a"}, after, head, limit, positions=positions)
        assert batch.read_to > after, "every read makes progress"
        got += [(c.lsn, c.id) for c in batch.changes]
        after = batch.read_to
    return got


@pytest.mark.parametrize("frames", [True, False], ids=["frames", "single-records"])
def test_batched_reads_with_positions_match_one_whole_read(tmp_path: Path, frames: bool) -> None:
    head = _wal(tmp_path, [3000, 1, 2500], frames)
    whole = [(c.lsn, c.id) for c in read_changes(tmp_path, KEY, 1, {"a"}, 0, head, 10**9).changes]
    assert len(whole) > 2000
    positions = Positions()
    for limit in (1, 7, 100, 1000):
        assert _drain(tmp_path, head, limit, positions) == whole
    assert _drain(tmp_path, head, 50, None) == whole


@pytest.mark.parametrize("frames", [True, False], ids=["frames", "single-records"])
def test_a_read_from_a_learnt_position_starts_at_the_right_record(
    tmp_path: Path, frames: bool
) -> None:
    head = _wal(tmp_path, [5000], frames)
    positions = Positions()
    read_changes(tmp_path, KEY, 1, {"a", "b"}, 0, head, 10, positions=positions)
    # Marks a frame about every 1,024 records on the way, and where a batch ended.
    read_changes(tmp_path, KEY, 1, {"a", "b"}, 4000, head, 10, positions=positions)
    name = segment_name(1)
    for after in (0, 1023, 1024, 1025, 2047, 3999, 4000, 4001, head - 1):
        mark = positions.nearest(name, after + 1)
        first = read_changes(tmp_path, KEY, 1, {"a", "b"}, after, head, 1, positions=positions)
        assert first.changes[0].lsn == after + 1, (after, mark)


def test_positions_of_removed_segments_are_forgotten(tmp_path: Path) -> None:
    head = _wal(tmp_path, [2000, 2000])
    positions = Positions()
    _drain(tmp_path, head, 500, positions)
    assert positions.nearest(segment_name(1), 1500) is not None
    (tmp_path / segment_name(1)).unlink()
    read_changes(tmp_path, KEY, 1, {"a"}, 2000, head, 10, positions=positions)
    assert positions.nearest(segment_name(1), 1500) is None


def test_a_damaged_frame_count_stops_a_read_instead_of_skipping_records(tmp_path: Path) -> None:
    """A read passes frames by their headers alone; one whose count was damaged (so that
    the next frame does not follow it) ends the read there, with nothing skipped."""
    import struct

    from nodedb_server.storage.wal import scan

    def recs(a: int, b: int) -> list[Record]:
        return [
            Record(
                n, RecordKind.DATA, n, codec.pack([[int(OpKind.INSERT), "a", f"k{n}", {}, None]])
            )
            for n in range(a, b + 1)
        ]

    data = bytearray(SegmentHeader(1, 7, 1).encode())
    data += seal_frame(KEY, 7, 1, recs(1, 4))
    middle = len(data)
    data += seal_frame(KEY, 7, 1, recs(5, 12)) + seal_frame(KEY, 7, 1, recs(13, 15))
    data[middle + 6 : middle + 8] = struct.pack("<H", 2)  # count 8 -> 2: "5..6"
    (tmp_path / segment_name(1)).write_bytes(bytes(data))
    batch = read_changes(tmp_path, KEY, 1, {"a"}, 6, 15, 100)
    assert batch.changes == [] and batch.read_to == 6
    assert "CRC32C" in (scan(tmp_path, KEY, 1).torn or "")
