"""WAL records and segments: encode/decode, and scans of hand-made torn and bit-flipped files."""

from __future__ import annotations

import asyncio
import struct
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from nodedb_server.storage import codec, quarantine
from nodedb_server.storage.fsio import FileIO
from nodedb_server.storage.records import (
    MAX_BODY,
    MAX_FRAME_RECORDS,
    MAX_SPAN_US,
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    CorruptRecord,
    Record,
    SegmentHeader,
    crc32c,
    frame_groups,
    open_record,
    parse_record_header,
    seal_frame,
    seal_record,
)
from nodedb_server.storage.wal import (
    RecordTooLarge,
    Wal,
    WalBroken,
    record_times,
    repair_tail,
    scan,
    segment_name,
)

KEY = AESGCM(b"k" * 32)


def test_record_round_trip_and_tamper_detection() -> None:
    rec = Record(7, 1, 1_700_000_000_123_456, codec.pack([[1, "c", "k", {"a": 1}, None]]))
    raw = seal_record(KEY, 99, 3, rec)
    head = parse_record_header(raw)
    assert (head.lsn, head.tenant_id, head.commit_us) == (7, 3, 1_700_000_000_123_456)
    assert open_record(KEY, 99, head, raw[RECORD_HEADER_SIZE:]) == rec
    flipped = bytearray(raw)
    flipped[-1] ^= 1
    with pytest.raises(CorruptRecord, match="CRC32C"):
        open_record(KEY, 99, parse_record_header(flipped), bytes(flipped[RECORD_HEADER_SIZE:]))
    with pytest.raises(CorruptRecord, match="authentication"):
        open_record(AESGCM(b"x" * 32), 99, head, raw[RECORD_HEADER_SIZE:])
    with pytest.raises(CorruptRecord, match="authentication"):
        open_record(KEY, 98, head, raw[RECORD_HEADER_SIZE:])  # another epoch: another nonce


def test_a_version_1_record_is_read_with_its_millisecond_time() -> None:
    # Version 1 headers held the commit time in milliseconds; a WAL written then
    # still replays, and its times read as the same moment in microseconds.
    body = codec.pack([[1, "c", "k", {"a": 1}, None]])
    head = RECORD_HEADER.pack(b"NDWR", 1, 1, 0, 5, 3, len(body) + 16, 1_700_000_000_123, 0, 0)
    head = head[:32]
    payload = KEY.encrypt(struct.pack("<IQ", 9, 5), body, head)
    raw = head + struct.pack("<II", crc32c(head, payload), 0) + payload
    parsed = parse_record_header(raw)
    assert parsed.commit_us == 1_700_000_000_123_000
    assert open_record(KEY, 9, parsed, raw[RECORD_HEADER_SIZE:]) == Record(
        5, 1, 1_700_000_000_123_000, body
    )


def test_hostile_header_length_is_refused_before_reading() -> None:
    rec = seal_record(KEY, 1, 1, Record(1, 1, 0, b"x"))
    bad = bytearray(rec)
    bad[20:24] = (2**31).to_bytes(4, "little")
    with pytest.raises(CorruptRecord, match="out of range"):
        parse_record_header(bad)


@settings(max_examples=50, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**63 - 1)
        | st.floats(allow_nan=False)
        | st.text()
        | st.binary()
        | st.datetimes(),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_codec_round_trips_stored_values(value: object) -> None:
    import datetime as dt

    def norm(v: object) -> object:
        if isinstance(v, dt.datetime):
            return v.replace(tzinfo=dt.UTC) if v.tzinfo is None else v
        if isinstance(v, list):
            return [norm(x) for x in v]
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        return v

    assert codec.unpack(codec.pack(value)) == norm(value)


def _segment(path: Path, first: int, count: int, epoch: int = 5) -> list[int]:
    """Write ``count`` records; return the offset of each."""
    data = SegmentHeader(1, epoch, first).encode()
    offsets = []
    for i in range(count):
        offsets.append(len(data))
        data += seal_record(KEY, epoch, 1, Record(first + i, 1, 0, codec.pack([i])))
    path.write_bytes(data)
    return offsets


def test_scan_reads_every_valid_record_across_segments(tmp_path: Path) -> None:
    _segment(tmp_path / segment_name(1), 1, 5)
    _segment(tmp_path / segment_name(6), 6, 3, epoch=8)
    result = scan(tmp_path, KEY, 1)
    assert [r.lsn for r in result.records] == list(range(1, 9)) and result.torn is None
    assert [r.lsn for r in scan(tmp_path, KEY, 1, after_lsn=6).records] == [7, 8]


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_scan_stops_at_torn_tail_and_repair_truncates(tmp_path: Path, damage: str) -> None:
    path = tmp_path / segment_name(1)
    offsets = _segment(path, 1, 6)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: offsets[5] + 20]
    elif damage == "flip":
        data[offsets[5] + RECORD_HEADER_SIZE + 3] ^= 0x04
    else:
        data += b"\x00garbage" * 9
    path.write_bytes(bytes(data))
    result = scan(tmp_path, KEY, 1)
    expected = 6 if damage == "garbage" else 5
    assert [r.lsn for r in result.records] == list(range(1, expected + 1))
    assert result.torn is not None and result.discarded_bytes > 0
    repair_tail(FileIO(), tmp_path, result, tmp_path / "quarantine", "t")
    assert path.stat().st_size == (offsets[5] if expected == 5 else len(data) - 72)
    again = scan(tmp_path, KEY, 1)
    assert again.torn is None and len(again.records) == expected


def test_damage_in_an_older_segment_quarantines_the_later_ones(tmp_path: Path) -> None:
    offsets = _segment(tmp_path / segment_name(1), 1, 4)
    _segment(tmp_path / segment_name(5), 5, 2)
    first = tmp_path / segment_name(1)
    data = bytearray(first.read_bytes())
    data[offsets[2] + 50] ^= 1
    first.write_bytes(bytes(data))
    result = scan(tmp_path, KEY, 1)
    assert [r.lsn for r in result.records] == [1, 2]
    repair_tail(FileIO(), tmp_path, result, tmp_path / "q", "t")
    assert not (tmp_path / segment_name(5)).exists()
    [entry] = quarantine.entries(tmp_path / "q")  # the segment, with why it was set aside
    assert entry.name == segment_name(5) and entry.path.read_bytes()
    assert f"follows damage in {segment_name(1)}" in entry.reason and "CRC32C" in entry.reason


def test_segment_header_damage_is_detected(tmp_path: Path) -> None:
    path = tmp_path / segment_name(1)
    _segment(path, 1, 2)
    data = bytearray(path.read_bytes())
    data[13] ^= 0xFF
    path.write_bytes(bytes(data))
    result = scan(tmp_path, KEY, 1)
    assert result.records == [] and "segment header" in (result.torn or "")


def _wal(path: Path, fs: FileIO, segment_bytes: int = 1 << 20) -> Wal:
    """A WAL starting at LSN 1 in an empty directory, fsync always."""
    return Wal(
        path,
        1,
        KEY,
        fs,
        next_lsn=1,
        segment_bytes=segment_bytes,
        fsync="always",
        batch_ms=1,
        segments=[],
    )


class HeldFsync(FileIO):
    """A file layer whose fsyncs wait while ``held`` is clear: the writer is busy."""

    def __init__(self) -> None:
        self.held = threading.Event()
        self.held.set()
        self.waiting = threading.Event()  # an fsync waits for ``held``
        self.fsyncs = 0

    def fsync(self, fd: int) -> None:
        if not self.held.is_set():
            self.waiting.set()
            self.held.wait(10)
        self.fsyncs += 1
        super().fsync(fd)


async def test_group_commit_appends_are_durable_and_rotate_segments(tmp_path: Path) -> None:
    fs = HeldFsync()
    wal = _wal(tmp_path, fs, segment_bytes=4096)
    await wal.start()
    fs.held.clear()
    first = wal.append(1, codec.pack(["x" * 300, 0]))[1]
    assert await asyncio.to_thread(fs.waiting.wait, 10)  # the writer is in its fsync
    # What is appended while the writer is busy shares one write and fsync (group
    # commit) ...
    futures = [wal.append(1, codec.pack(["x" * 300, i]))[1] for i in range(1, 21)]
    synced = fs.fsyncs
    fs.held.set()
    assert await asyncio.gather(first, *futures) == list(range(1, 22))
    assert fs.fsyncs == synced + 2
    # ... and a batch never straddles two segments; the next batch starts a new one.
    for i in range(21, 40):
        await wal.append(1, codec.pack(["x" * 300, i]))[1]
    await wal.close()
    segs = sorted(tmp_path.glob("*.wal"))
    assert len(segs) > 1, "4 KiB segments must have rotated"
    result = scan(tmp_path, KEY, 1)
    assert [codec.unpack(r.body)[1] for r in result.records] == list(range(40))
    assert all(s.stat().st_size > SEGMENT_HEADER_SIZE for s in segs)
    # Each batch is one frame: one header, one AEAD seal, one CRC32C.
    data = segs[0].read_bytes()
    one = parse_record_header(data[SEGMENT_HEADER_SIZE:])
    assert (one.frame, one.lsn, one.record_count) == (True, 1, 1)
    at = SEGMENT_HEADER_SIZE + RECORD_HEADER_SIZE + one.payload_len
    twenty = parse_record_header(data[at:])
    assert (twenty.frame, twenty.lsn, twenty.record_count) == (True, 2, 20)
    assert len(data) == at + RECORD_HEADER_SIZE + twenty.payload_len


class BrokenWrite(FileIO):
    def write(self, fd: int, data: bytes | memoryview) -> None:
        if len(data) > 100:  # records, not the segment header
            raise ValueError("a bug in the file layer")
        super().write(fd, data)


async def test_an_unexpected_error_in_the_writer_breaks_the_wal_instead_of_hanging(
    tmp_path: Path,
) -> None:
    wal = _wal(tmp_path, BrokenWrite())
    await wal.start()
    with pytest.raises(WalBroken):
        await asyncio.wait_for(wal.append(1, b"x" * 200)[1], 10)
    with pytest.raises(WalBroken):
        wal.append(1, b"y" * 200)
    await wal.close()


def _frames(path: Path, first: int, sizes: list[int], epoch: int = 5) -> list[int]:
    """Write frames of ``sizes`` records (bodies [lsn], commit times 1,000 + lsn);
    return the offset of each frame."""
    data = SegmentHeader(1, epoch, first).encode()
    offsets, lsn = [], first
    for n in sizes:
        offsets.append(len(data))
        recs = [Record(lsn + i, 1, 1000 + lsn + i, codec.pack([lsn + i])) for i in range(n)]
        data += seal_frame(KEY, epoch, 1, recs)
        lsn += n
    path.write_bytes(data)
    return offsets


def test_a_frame_gives_back_each_record_with_its_kind_and_time(tmp_path: Path) -> None:
    recs = [
        Record(1, 1, 1_000, codec.pack([[1, "c", "k", {"a": 1}, None]])),
        Record(2, 2, 1_000, codec.pack(["create_index", {"name": "i"}])),
        Record(3, 1, 1_750, b""),
    ]
    path = tmp_path / segment_name(1)
    path.write_bytes(SegmentHeader(1, 5, 1).encode() + seal_frame(KEY, 5, 1, recs))
    assert scan(tmp_path, KEY, 1).records == recs
    assert scan(tmp_path, KEY, 1, after_lsn=2).records == recs[2:]
    # First and last LSN and commit time from the header alone, as the archive notes them.
    assert record_times(path) == (1, 3, 1_000, 1_750)
    wrong_key = scan(tmp_path, AESGCM(b"x" * 32), 1)
    assert wrong_key.records == [] and "authentication" in (wrong_key.torn or "")


@pytest.mark.parametrize("byte", range(RECORD_HEADER_SIZE))
def test_every_byte_of_a_frame_header_is_checked(tmp_path: Path, byte: int) -> None:
    path = tmp_path / segment_name(1)
    offsets = _frames(path, 1, [2, 3])
    data = bytearray(path.read_bytes())
    data[offsets[1] + byte] ^= 0x01
    path.write_bytes(bytes(data))
    result = scan(tmp_path, KEY, 1)
    assert [r.lsn for r in result.records] == [1, 2]
    assert result.torn is not None and result.torn_offset == offsets[1]


def test_a_wal_of_single_records_reads_on_into_frames(tmp_path: Path) -> None:
    """A data directory written before frames replays, and goes on in frames."""
    _segment(tmp_path / segment_name(1), 1, 3)
    _frames(tmp_path / segment_name(4), 4, [2, 1, 4])
    assert [r.lsn for r in scan(tmp_path, KEY, 1).records] == list(range(1, 11))
    assert [r.lsn for r in scan(tmp_path, KEY, 1, after_lsn=5).records] == list(range(6, 11))
    assert record_times(tmp_path / segment_name(4)) == (4, 10, 1_004, 1_010)


def test_frame_groups_end_a_frame_where_its_header_could_hold_no_more() -> None:
    def lsns(recs: list[Record]) -> list[list[int]]:
        return [[r.lsn for r in g] for g in frame_groups(recs)]

    times = [10, 10, 20, 5, 6, 6 + MAX_SPAN_US + 1, 7 + MAX_SPAN_US]
    recs = [Record(i + 1, 1, us, b"") for i, us in enumerate(times)]
    # A commit time that falls, or one past the span a u32 holds, starts a new frame.
    assert lsns(recs) == [[1, 2, 3], [4, 5], [6, 7]]
    # So does an LSN that does not follow (a batch is consecutive; this guards it).
    assert lsns([Record(1, 1, 0, b""), Record(3, 1, 0, b"")]) == [[1], [3]]
    many = [Record(i + 1, 1, 0, b"") for i in range(MAX_FRAME_RECORDS + 1)]
    assert [len(g) for g in frame_groups(many)] == [MAX_FRAME_RECORDS, 1]


async def test_a_record_too_large_to_replay_is_refused_before_it_is_logged(tmp_path: Path) -> None:
    """A scan takes a record over MAX_PAYLOAD for damage and cuts the WAL there, so an
    append that large must fail at once, taking no LSN, with the WAL still usable."""
    wal = _wal(tmp_path, FileIO())
    await wal.start()
    assert await wal.append(1, b"before")[1] == 1
    with pytest.raises(RecordTooLarge):
        wal.append(1, bytes(MAX_BODY + 1))
    assert await wal.append(1, b"after")[1] == 2
    await wal.close()
    assert [r.body for r in scan(tmp_path, KEY, 1).records] == [b"before", b"after"]


def test_nesting_depth_is_measured_through_lists_dicts_and_tuples() -> None:
    """The check before logging a value: a vector of plain floats (one pass in C) and
    containers mixing scalars with deeper ones are measured alike."""
    import datetime as dt
    import decimal

    def nest(depth: int, leaf: object) -> object:
        value = leaf
        for i in range(depth - 1):
            value = [1.5, "x", value] if i % 3 == 0 else {"k": value} if i % 3 == 1 else (value,)
        return value

    flat = {"emb": [0.5] * 128, "n": 1, "t": dt.datetime(2026, 1, 1), "d": decimal.Decimal(1)}
    assert not codec.nests_deeper(flat, 2)
    assert codec.nests_deeper({"a": {"b": 1}}, 1)
    for depth in (3, 10, 40):
        value = {"v": nest(depth, [2.0, 3.0])}  # depth + 1 levels with the row
        assert codec.nests_deeper(value, depth), depth
        assert not codec.nests_deeper(value, depth + 1), depth

    class Sub(list):  # a subclass of a container is still looked into
        pass

    assert codec.nests_deeper({"s": Sub([[1.0]])}, 2)
