"""WAL segment and record layouts (also in docs/FORMATS.md; change both together).

Segment header, 32 bytes, little-endian, at offset 0 of every ``*.wal`` file:

    0      4      6      8          12         16                 24        28     32
    +------+------+------+----------+----------+------------------+---------+------+
    |magic |ver   |flags |tenant_id | epoch    | first_lsn        | crc32c  | zero |
    |"NDWS"|u16=1 |u16=0 |u32       | u32 rand | u64              | of 0..24| u32  |
    +------+------+------+----------+----------+------------------+---------+------+

Frame (record version 3), what the writer writes: one group-commit batch of
consecutive records, a 40-byte header then ``payload_len`` bytes of payload:

    0      4    5    6      8                16        20          24              32      36     40
    +------+----+----+------+----------------+---------+-----------+---------------+-------+------+
    |magic |ver |zero|count | first lsn      |tenant_id|payload_len| commit_us of  |crc32c | span |
    |"NDWR"|u8=3|u8  |u16   | u64            |u32      |u32        | the first, u64|u32    | u32  |
    +------+----+----+------+----------------+---------+-----------+---------------+-------+------+

The frame holds ``count`` records (1..65535) with LSNs ``first lsn`` .. ``first lsn +
count - 1``. ``span`` is the last record's commit_us minus the first's (commit times
never fall within a frame). ``crc32c`` covers header bytes 0..32 and 36..40 followed
by the payload (the ciphertext), so bit rot is found without the key. The payload is
AES-256-GCM ciphertext+tag, under the tenant's WAL key, nonce = segment epoch (u32
LE) || first lsn (u64 LE), associated data = header bytes 0..32 and 36..40, of the
records one after another, each a 16-byte entry then its msgpack body
(storage/codec.py):

    0    1    2      4            8                16
    +----+----+------+------------+----------------+------------------+
    |type|zero| zero | body_len   | commit_us      | body             |
    |u8  |u8  | u16  | u32        | u64 wall clock | body_len bytes   |
    +----+----+------+------------+----------------+------------------+

``commit_us`` is the wall-clock time the record was logged, in microseconds since
the epoch (point-in-time recovery stops at it). A fresh segment with a fresh random
epoch is opened on every boot and after every write failure, so an LSN reused after
a torn tail is truncated never reuses a nonce. One frame, one AEAD call and one
CRC32C for the batch: replay reads about twice as fast as with a header per record.

Record (version 2, and 1), as written before frames and still read: one record, a
40-byte header then ``payload_len`` bytes of payload:

    0      4    5    6      8                16        20          24              32      36     40
    +------+----+----+------+----------------+---------+-----------+---------------+-------+------+
    |magic |ver |type|flags | lsn            |tenant_id|payload_len| commit_us     |crc32c | zero |
    |"NDWR"|u8=2|u8  |u16=0 | u64            |u32      |u32        | u64 wall clock|u32    | u32  |
    +------+----+----+------+----------------+---------+-----------+---------------+-------+------+

``crc32c`` covers header bytes 0..32 followed by the payload; the payload is the
AES-256-GCM ciphertext+tag of the msgpack body, nonce = epoch || lsn, associated
data = header bytes 0..32. Version 1 records held milliseconds in ``commit_us``;
they are still read, as that time.

Record kinds and bodies (msgpack), ``RecordKind``:

    1 DATA     [[op, collection, key, row, expires_ms], ...]   one atomic batch
    2 CATALOG  [action, {args}]                                one catalog change

Operation kinds (``op`` of a DATA record), ``OpKind``:

    1 INSERT       a new key; row = the row
    2 UPDATE       the key existed; row = the full new row
    3 DELETE       row = the row as it was found
    4 EDGE_PUT     key = [source, target, label], row = the edge's properties
    5 EDGE_DELETE  key = [source, target, label], row = nil
    6 CRDT_APPLY   key = document id, row = the Loro update bytes
    7 TS_APPEND    key = nil, row = an Arrow IPC stream of the appended timeseries rows
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import google_crc32c
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SEGMENT_MAGIC = b"NDWS"
RECORD_MAGIC = b"NDWR"
FORMAT_VERSION = 1  # segment header
RECORD_VERSION = 2  # one record a header: read, no longer written
FRAME_VERSION = 3  # a batch of records a header: what the writer writes
SEGMENT_HEADER = struct.Struct("<4sHHIIQII")
RECORD_HEADER = struct.Struct("<4sBBHQIIQII")
SEGMENT_HEADER_SIZE = SEGMENT_HEADER.size  # 32
RECORD_HEADER_SIZE = RECORD_HEADER.size  # 40
_CRC_SPAN = 32  # header bytes the CRC and the AEAD associated data cover
GCM_TAG = 16
FRAME_ENTRY = struct.Struct("<BBHIQ")  # type, zero, zero, body_len, commit_us
FRAME_ENTRY_SIZE = FRAME_ENTRY.size  # 16
MAX_FRAME_RECORDS = 0xFFFF  # count is a u16
MAX_SPAN_US = 0xFFFFFFFF  # span is a u32
# One record holds one transaction; 256 MiB bounds what a decoder allocates
# for a header that claims more (a corrupt or hostile length).
MAX_PAYLOAD = 256 * 1024 * 1024
MAX_BODY = MAX_PAYLOAD - GCM_TAG - FRAME_ENTRY_SIZE  # the largest body a writer may log


class RecordKind(enum.IntEnum):
    """The ``type`` byte of a record header; the values are on disk."""

    DATA = 1
    CATALOG = 2


class OpKind(enum.IntEnum):
    """What one operation of a DATA record did (its ``op``); the values are on disk.

    A replayed ``op`` is the plain int msgpack decoded, never converted: replay applies
    millions. Per operation, engines test it against the sets below rather than name
    a member: on Python 3.11 ``OpKind.DELETE`` goes through ``EnumType.__getattr__``
    (about 0.1 us, measured)."""

    INSERT = 1
    UPDATE = 2
    DELETE = 3
    EDGE_PUT = 4
    EDGE_DELETE = 5
    CRDT_APPLY = 6
    TS_APPEND = 7


def _values(*kinds: enum.IntEnum) -> frozenset[int]:
    """The kinds as plain ints: a decoded int then matches by identity (small ints are
    shared); matching a member means comparing with it, twice as slow (measured)."""
    return frozenset(int(k) for k in kinds)


_RECORD_KINDS = _values(*RecordKind)
# What part of a collection each kind changes, which is how engines dispatch on it.
# Every kind is in exactly one of the four (tests/unit/test_record_kinds.py).
ROW_OPS = _values(OpKind.INSERT, OpKind.UPDATE, OpKind.DELETE)  # a row by key (and its TTL)
EDGE_OPS = _values(OpKind.EDGE_PUT, OpKind.EDGE_DELETE)  # a graph edge over the rows
CRDT_OPS = _values(OpKind.CRDT_APPLY)  # a CRDT document of the collection
TIMESERIES_OPS = _values(OpKind.TS_APPEND)  # rows of a timeseries collection
# Kinds that remove what their key names (a row, an edge) rather than write it.
REMOVING_OPS = _values(OpKind.DELETE, OpKind.EDGE_DELETE)


def crc32c(*parts: bytes | memoryview) -> int:
    c = 0
    for p in parts:
        c = google_crc32c.extend(c, p)
    return c


class CorruptRecord(Exception):
    """A record or segment that fails validation; the message says which check."""


@dataclass(frozen=True)
class SegmentHeader:
    tenant_id: int
    epoch: int
    first_lsn: int

    def encode(self) -> bytes:
        head = SEGMENT_HEADER.pack(
            SEGMENT_MAGIC, FORMAT_VERSION, 0, self.tenant_id, self.epoch, self.first_lsn, 0, 0
        )
        crc = crc32c(head[:24])
        return head[:24] + struct.pack("<II", crc, 0)

    @classmethod
    def decode(cls, data: bytes) -> SegmentHeader:
        if len(data) < SEGMENT_HEADER_SIZE:
            raise CorruptRecord("segment header is truncated")
        magic, ver, _flags, tenant_id, epoch, first_lsn, crc, _z = SEGMENT_HEADER.unpack_from(data)
        if magic != SEGMENT_MAGIC:
            raise CorruptRecord("segment header has a bad magic number")
        if crc != crc32c(data[:24]):
            raise CorruptRecord("segment header checksum mismatch")
        if ver != FORMAT_VERSION:
            raise CorruptRecord(f"segment format version {ver} is not supported")
        return cls(tenant_id, epoch, first_lsn)


class Record:
    """One WAL record, its body in plaintext; not to be changed once made. One is made
    per record replayed: a plain class, which mypyc makes a native one built in C,
    where a NamedTuple's ``__new__`` is a Python function (0.26 us a record). In
    bench.wal_micro (200,000 single-row records, frames of 16) the scan went from 1.01
    to 0.55 us a record, and their replay from 2.13 to 1.33."""

    __slots__ = ("lsn", "rtype", "commit_us", "body")

    def __init__(self, lsn: int, rtype: int, commit_us: int, body: bytes) -> None:
        self.lsn = lsn
        self.rtype = rtype
        self.commit_us = commit_us
        self.body = body  # plaintext msgpack

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return (self.lsn, self.rtype, self.commit_us, self.body) == (
            other.lsn,
            other.rtype,
            other.commit_us,
            other.body,
        )

    __hash__ = None  # type: ignore[assignment]  # equal by value, and not to be a key

    def __repr__(self) -> str:
        return f"Record(lsn={self.lsn}, rtype={self.rtype}, commit_us={self.commit_us}, body={self.body!r})"


def _nonce(epoch: int, lsn: int) -> bytes:
    return struct.pack("<IQ", epoch, lsn)


def seal_record(aead: AESGCM, epoch: int, tenant_id: int, rec: Record) -> bytes:
    """One record in the version 2 layout, which the writer no longer uses: for tests
    of reading a WAL written before frames."""
    payload_len = len(rec.body) + GCM_TAG
    head = RECORD_HEADER.pack(
        RECORD_MAGIC,
        RECORD_VERSION,
        rec.rtype,
        0,
        rec.lsn,
        tenant_id,
        payload_len,
        rec.commit_us,
        0,
        0,
    )[:_CRC_SPAN]
    payload = aead.encrypt(_nonce(epoch, rec.lsn), rec.body, head)
    crc = crc32c(head, payload)
    return b"".join((head, struct.pack("<II", crc, 0), payload))


def frame_groups(records: Sequence[Record]) -> Iterator[Sequence[Record]]:
    """``records`` (consecutive LSNs, as a group-commit batch holds them) cut into the
    runs that one frame each can hold: at most 65,535 records and ``MAX_PAYLOAD``
    bytes, commit times that do not fall and span at most ``MAX_SPAN_US``."""
    start, size = 0, 0
    for i, rec in enumerate(records):
        grow = FRAME_ENTRY_SIZE + len(rec.body)
        if i > start and (
            i - start >= MAX_FRAME_RECORDS
            or size + grow > MAX_PAYLOAD - GCM_TAG
            or rec.commit_us < records[i - 1].commit_us
            or rec.commit_us - records[start].commit_us > MAX_SPAN_US
            or rec.lsn != records[i - 1].lsn + 1
        ):
            yield records[start:i]
            start, size = i, 0
        size += grow
    if start < len(records):
        yield records[start:]


def seal_frame(aead: AESGCM, epoch: int, tenant_id: int, recs: Sequence[Record]) -> bytes:
    """One frame of ``recs``, a run ``frame_groups`` made."""
    first = recs[0]
    span = recs[-1].commit_us - first.commit_us
    entry = FRAME_ENTRY.pack
    plain = b"".join(
        [part for r in recs for part in (entry(r.rtype, 0, 0, len(r.body), r.commit_us), r.body)]
    )
    head = RECORD_HEADER.pack(
        RECORD_MAGIC,
        FRAME_VERSION,
        0,
        len(recs),
        first.lsn,
        tenant_id,
        len(plain) + GCM_TAG,
        first.commit_us,
        0,
        span,
    )
    ad = head[:_CRC_SPAN] + head[36:]
    payload = aead.encrypt(_nonce(epoch, first.lsn), plain, ad)
    crc = crc32c(ad, payload)
    return b"".join((head[:_CRC_SPAN], struct.pack("<II", crc, span), payload))


# One RecordHeader is made per frame read: a NamedTuple is fast enough there.
class RecordHeader(NamedTuple):
    rtype: int  # 0 for a frame
    lsn: int  # a frame's first
    tenant_id: int
    payload_len: int
    commit_us: int  # a frame's first record's
    crc: int
    raw: bytes  # the bytes the CRC32C and the associated data cover
    record_count: int  # 1 unless a frame
    last_us: int  # the commit time of the last record
    frame: bool

    @property
    def last_lsn(self) -> int:
        return self.lsn + self.record_count - 1


def parse_record_header(data: bytes | memoryview) -> RecordHeader:
    """Check everything the header alone can tell before the payload is read."""
    if len(data) < RECORD_HEADER_SIZE:
        raise CorruptRecord("record header is truncated")
    magic, ver, rtype, fl, lsn, tenant_id, plen, commit, crc, tail = RECORD_HEADER.unpack_from(data)
    if magic != RECORD_MAGIC:
        raise CorruptRecord("record has a bad magic number")
    if not GCM_TAG <= plen <= MAX_PAYLOAD:
        raise CorruptRecord(f"record payload length {plen} is out of range")
    if ver == FRAME_VERSION:
        if rtype != 0 or fl == 0:
            raise CorruptRecord(f"frame at LSN {lsn} has a bad type or count")
        raw = bytes(data[:_CRC_SPAN]) + bytes(data[36:40])
        return RecordHeader(0, lsn, tenant_id, plen, commit, crc, raw, fl, commit + tail, True)
    if ver == 1:
        commit *= 1000
    elif ver != RECORD_VERSION:
        raise CorruptRecord(f"record format version {ver} is not supported")
    if rtype not in _RECORD_KINDS:
        raise CorruptRecord(f"record type {rtype} is unknown")
    raw = bytes(data[:_CRC_SPAN])
    return RecordHeader(rtype, lsn, tenant_id, plen, commit, crc, raw, 1, commit, False)


def open_record(
    aead: AESGCM, epoch: int, head: RecordHeader, payload: bytes, check_crc: bool = True
) -> Record:
    """The record's plaintext, its GCM tag verified; and its CRC32C first, unless the
    caller verified these exact bytes another way (a whole-file CRC32C)."""
    return Record(
        head.lsn, head.rtype, head.commit_us, _open(aead, epoch, head, payload, check_crc)
    )


def open_records(
    aead: AESGCM, epoch: int, head: RecordHeader, payload: bytes, check_crc: bool = True
) -> list[Record]:
    """The records of a frame or of a single record, checked as ``open_record`` does."""
    if not head.frame:
        return [open_record(aead, epoch, head, payload, check_crc)]
    plain = _open(aead, epoch, head, payload, check_crc)
    # The plaintext is authenticated: a mismatch below is a writer's bug, not bit rot,
    # and is reported as damage all the same.
    out = []
    off, size, lsn = 0, len(plain), head.lsn
    for i in range(head.record_count):
        if off + FRAME_ENTRY_SIZE > size:
            raise CorruptRecord(f"frame at LSN {head.lsn} ends inside record {lsn + i}")
        # The entry's fields by byte, not FRAME_ENTRY.unpack_from: compiled, indexing
        # bytes is a C primitive, where a struct call builds a tuple of five.
        rtype = plain[off]
        blen = plain[off + 4] | plain[off + 5] << 8 | plain[off + 6] << 16 | plain[off + 7] << 24
        us = int.from_bytes(plain[off + 8 : off + 16], "little")
        off += FRAME_ENTRY_SIZE
        if off + blen > size or rtype not in _RECORD_KINDS:
            raise CorruptRecord(f"record at LSN {lsn + i} of its frame is malformed")
        out.append(Record(lsn + i, rtype, us, plain[off : off + blen]))
        off += blen
    if off != size or out[0].commit_us != head.commit_us or out[-1].commit_us != head.last_us:
        raise CorruptRecord(f"frame at LSN {head.lsn} does not match its header")
    return out


def _open(aead: AESGCM, epoch: int, head: RecordHeader, payload: bytes, check_crc: bool) -> bytes:
    what = "frame" if head.frame else "record"
    if check_crc and crc32c(head.raw, payload) != head.crc:
        raise CorruptRecord(f"{what} at LSN {head.lsn} fails its CRC32C")
    try:
        return aead.decrypt(_nonce(epoch, head.lsn), payload, head.raw)
    except InvalidTag:
        raise CorruptRecord(
            f"{what} at LSN {head.lsn} fails authentication (wrong key or tampered)"
        ) from None
