"""The backup envelope: round trips, and every kind of damage refused with EnvelopeError."""

from __future__ import annotations

import io
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodedb_server.backup.envelope import (
    CHUNK_BYTES,
    EnvelopeError,
    EnvelopeReader,
    EnvelopeWriter,
    Header,
)

KEY = b"t" * 32
FUZZ_EXAMPLES = int(os.environ.get("NODEDB_FUZZ_EXAMPLES", "150"))


def _header(tenant: str = "acme") -> Header:
    return Header(
        watermark_lsn=42,
        created_ms=1_775_000_000_000,
        tenant_id=3,
        master_key_id="0011223344556677",
        wrapped_key=b"w" * 60,
        key_salt=b"",
        tenant=tenant,
    )


def _build(sections: list[bytes], key: bytes = KEY) -> bytes:
    sink = io.BytesIO()
    writer = EnvelopeWriter(sink, key, _header())
    for data in sections:
        writer.section()
        for i in range(0, len(data), 7777):
            writer.write(data[i : i + 7777])
        writer.end_section()
    writer.finish()
    return sink.getvalue()


def _read(blob: bytes, key: bytes = KEY) -> tuple[Header, list[bytes]]:
    reader = EnvelopeReader(io.BytesIO(blob), lambda _h: key)
    return reader.header, [b"".join(chunks) for chunks in reader.sections()]


SECTIONS = [b"catalog rows", b"", os.urandom(CHUNK_BYTES * 2 + 123), b"x" * 10]


def test_round_trip_keeps_sections_and_header() -> None:
    header, sections = _read(_build(SECTIONS))
    assert sections == SECTIONS
    assert (header.tenant, header.watermark_lsn, header.tenant_id) == ("acme", 42, 3)
    assert header.master_key_id == "0011223344556677" and header.wrapped_key == b"w" * 60


def _chunk_offsets(blob: bytes) -> list[tuple[int, int]]:
    (header_len,) = struct.unpack_from("<I", blob, 8)
    off, out = header_len, []
    while off < len(blob):
        ct_len = struct.unpack_from("<I", blob, off + 16)[0]
        out.append((off, 24 + ct_len))
        off += 24 + ct_len
    return out


def _refused(blob: bytes, key: bytes = KEY) -> str:
    with pytest.raises(EnvelopeError) as err:
        _read(blob, key)
    message = str(err.value)
    assert message.isprintable() and len(message) < 200  # says what is wrong, echoes no bytes
    return message


def test_truncated_anywhere_is_refused() -> None:
    blob = _build([b"a" * 5000, b"b" * 300])
    for cut in [0, 1, 10, 117, 130, len(blob) // 2, len(blob) - 30, len(blob) - 1]:
        _refused(blob[:cut])


def test_flipped_bytes_in_header_chunk_and_trailer_are_refused() -> None:
    blob = _build(SECTIONS)
    chunks = _chunk_offsets(blob)
    for pos in (50, 110, chunks[0][0] + 30, chunks[3][0] + 100, chunks[-1][0] + 30, len(blob) - 2):
        damaged = bytearray(blob)
        damaged[pos] ^= 0x20
        _refused(bytes(damaged))


def test_swapped_duplicated_or_dropped_chunks_are_refused() -> None:
    blob = _build(SECTIONS)
    chunks = _chunk_offsets(blob)
    head = blob[: chunks[0][0]]
    parts = [blob[o : o + n] for o, n in chunks]
    assert "out of order" in _refused(head + b"".join([parts[1], parts[0], *parts[2:]]))
    assert "missing, repeated" in _refused(head + b"".join([parts[0], parts[0], *parts[1:]]))
    _refused(head + b"".join(parts[:2] + parts[3:]))
    _refused(head + b"".join(parts[:-1]))  # no trailer
    assert "follow" in _refused(blob + b"\x00")


def test_hostile_lengths_wrong_key_future_version_and_junk() -> None:
    blob = _build([b"data"])
    (off, _), *_ = _chunk_offsets(blob)
    huge = bytearray(blob)
    huge[off + 16 : off + 20] = struct.pack("<I", 0xFFFFFFFF)  # a "4 GiB" chunk
    assert "more than a chunk holds" in _refused(bytes(huge))
    for claim in (0xFFFFFFFF, 1 << 20):  # a header claiming to be 4 GiB, or 1 MiB, long
        forged = bytearray(blob)
        forged[8:12] = struct.pack("<I", claim)
        _refused(bytes(forged))
    assert "authentication" in _refused(blob, key=b"k" * 32)
    future = bytearray(blob)
    future[4:6] = struct.pack("<H", 99)
    assert "version 99" in _refused(bytes(future))
    assert "bad magic" in _refused(os.urandom(400))
    _refused(b"")


@pytest.mark.fault
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_backups_decode_exactly_or_fail_cleanly(data: st.DataObject) -> None:
    original = [b"alpha" * 50, b"", b"omega" * 300]
    blob = bytearray(_build(original))
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        pos = data.draw(st.integers(0, max(len(blob) - 1, 0)))
        if kind == "flip" and blob:
            blob[pos] ^= data.draw(st.integers(1, 255))
        elif kind == "cut":
            del blob[pos:]
        elif kind == "insert":
            blob[pos:pos] = data.draw(st.binary(min_size=1, max_size=32))
        elif blob:
            del blob[pos : pos + data.draw(st.integers(1, 32))]
    try:
        _, sections = _read(bytes(blob))
    except EnvelopeError:
        return
    assert sections == original
