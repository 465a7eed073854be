"""The restorable range of a source and the segments a replay to a target reads."""

from __future__ import annotations

import google_crc32c
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nodedb_server.backup.pitr import Target, needed_segments, restore_range, segment_records
from nodedb_server.errors import DBError, InvalidParameterValue
from nodedb_server.storage.records import (
    RECORD_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    Record,
    RecordKind,
    SegmentHeader,
    seal_record,
)
from nodedb_server.storage.uploads import ArchivedSegment


def seg(first: int, last: int) -> ArchivedSegment:
    # Record n was committed at n seconds (in microseconds).
    return ArchivedSegment(first, last, first * 1_000_000, last * 1_000_000, 100, 0)


def test_the_range_runs_from_the_watermark_to_the_first_gap() -> None:
    segments = [seg(1, 10), seg(11, 20), seg(21, 30), seg(41, 50)]
    r = restore_range("backup b", segments, 15, 15_500_000)
    assert (r.start_lsn, r.end_lsn, r.gap_at) == (15, 30, 31)
    assert r.run == (seg(11, 20), seg(21, 30))
    assert r.end_us == 30_000_000
    assert "gap at LSN 31" in r.describe(times=False)


def test_without_segments_after_it_a_source_restores_only_to_itself() -> None:
    r = restore_range("backup b", [seg(1, 10)], 10, 10_200_000)
    assert (r.end_lsn, r.end_us, r.gap_at, r.run) == (10, 10_200_000, None, ())
    assert needed_segments(r, Target(lsn=10), "t") == []


def test_an_lsn_target_reads_the_segments_up_to_it() -> None:
    r = restore_range("backup b", [seg(1, 10), seg(11, 20), seg(21, 30)], 5, 5_000_000)
    assert needed_segments(r, Target(lsn=12), "t") == [seg(1, 10), seg(11, 20)]
    assert needed_segments(r, Target(lsn=30), "t") == [seg(1, 10), seg(11, 20), seg(21, 30)]


def test_a_timestamp_target_reads_the_segments_begun_at_or_before_it() -> None:
    r = restore_range("backup b", [seg(1, 10), seg(11, 20), seg(21, 30)], 5, 5_000_000)
    assert needed_segments(r, Target(us=20_999_999), "t") == [seg(1, 10), seg(11, 20)]
    assert needed_segments(r, Target(us=21_000_000), "t") == [seg(1, 10), seg(11, 20), seg(21, 30)]


@pytest.mark.parametrize(
    "target",
    [Target(lsn=4), Target(lsn=31), Target(us=4_999_999), Target(us=30_000_001)],
)
def test_a_target_outside_the_range_is_22023_naming_the_range(target: Target) -> None:
    r = restore_range("backup b", [seg(1, 10), seg(11, 20), seg(21, 30), seg(35, 40)], 5, 5_000_000)
    with pytest.raises(InvalidParameterValue) as err:
        needed_segments(r, target, "acme")
    assert "LSN 5 to 30" in err.value.message and "gap at LSN 31" in err.value.message
    assert ("+00 to " in err.value.message) == (target.us is not None)


def sealed_segment(aead: AESGCM, tenant_id: int, first: int, n: int) -> bytes:
    epoch = 7
    records = [
        seal_record(aead, epoch, tenant_id, Record(lsn, RecordKind.DATA, lsn * 1000, b"\x90"))
        for lsn in range(first, first + n)
    ]
    return SegmentHeader(tenant_id, epoch, first).encode() + b"".join(records)


def note(data: bytes, first: int, n: int) -> ArchivedSegment:
    return ArchivedSegment(
        first,
        first + n - 1,
        first * 1000,
        (first + n - 1) * 1000,
        len(data),
        google_crc32c.value(data),
    )


def test_a_segment_reads_from_after_the_watermark_up_to_the_target() -> None:
    aead = AESGCM(b"k" * 32)
    data = sealed_segment(aead, 5, 10, 6)  # LSNs 10..15
    got = segment_records(data, "s", note(data, 10, 6), aead, 5, 11, Target(lsn=14))
    assert [r.lsn for r in got] == [12, 13, 14]


FIRST_PAYLOAD = SEGMENT_HEADER_SIZE + RECORD_HEADER_SIZE


def flip_a_payload_byte(d: bytearray) -> None:
    d[FIRST_PAYLOAD + 1] ^= 1


def cut_the_last_record(d: bytearray) -> None:
    del d[-3:]


# Each change comes with the note rewritten to match the changed copy.
@pytest.mark.parametrize(
    "why, change",
    [("fails authentication", flip_a_payload_byte), ("cut short", cut_the_last_record)],
)
def test_a_forged_segment_with_a_matching_note_is_refused(why, change) -> None:  # type: ignore[no-untyped-def]
    aead = AESGCM(b"k" * 32)
    good = sealed_segment(aead, 5, 10, 6)
    forged = bytearray(good)
    change(forged)
    data = bytes(forged)
    seg = note(data, 10, 6)
    with pytest.raises(DBError) as err:
        list(segment_records(data, "tenants/5/wal/x.wal", seg, aead, 5, 0, Target(lsn=99)))
    assert err.value.sqlstate == "XX001" and why in str(err.value), err.value
    assert "tenants/5/wal/x.wal" in str(err.value)


def test_a_segment_of_another_tenant_or_another_key_is_refused() -> None:
    aead = AESGCM(b"k" * 32)
    data = sealed_segment(aead, 5, 10, 3)
    for source_id, key in ((6, aead), (5, AESGCM(b"j" * 32))):
        with pytest.raises(DBError) as err:
            list(segment_records(data, "s", note(data, 10, 3), key, source_id, 0, Target(lsn=99)))
        assert err.value.sqlstate == "XX001"


def test_a_replay_stops_at_the_first_record_past_the_target() -> None:
    recs = [
        Record(lsn, RecordKind.DATA, us, b"") for lsn, us in ((5, 10), (6, 20), (7, 50), (8, 30))
    ]
    assert Target(lsn=6).cut(recs) == 2
    assert Target(lsn=8).cut(recs) == 4
    assert Target(lsn=4).cut(recs) == 0
    # A clock that stepped back: the record at 30 came after one at 50, past the target.
    assert Target(us=40).cut(recs) == 2
    assert Target(us=50).cut(recs) == 4
