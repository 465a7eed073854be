"""WAL segment and record layouts (also in docs/FORMATS.md; change both together).

Segment header, 32 bytes, little-endian, at offset 0 of every ``*.wal`` file:

    0      4      6      8          12         16                 24        28     32
    +------+------+------+----------+----------+------------------+---------+------+
    |magic |ver   |flags |tenant_id | epoch    | first_lsn        | crc32c  | zero |
    |"NDWS"|u16=1 |u16=0 |u32       | u32 rand | u64              | of 0..24| u32  |
    +------+------+------+----------+----------+------------------+---------+------+

Record, a 40-byte header then ``payload_len`` bytes of payload:

    0      4    5    6      8                16        20          24              32      36     40
    +------+----+----+------+----------------+---------+-----------+---------------+-------+------+
    |magic |ver |type|flags | lsn            |tenant_id|payload_len| commit_us     |crc32c | zero |
    |"NDWR"|u8=2|u8  |u16=0 | u64            |u32      |u32        | u64 wall clock|u32    | u32  |
    +------+----+----+------+----------------+---------+-----------+---------------+-------+------+

``commit_us`` is the wall-clock time the record was logged, in microseconds since
the epoch (point-in-time recovery stops at it). Version 1 records held
milliseconds there; they are still read, as that time.

``crc32c`` covers header bytes 0..32 followed by the payload (the ciphertext),
so bit rot is found without the key. The payload is AES-256-GCM
ciphertext+tag of a msgpack body (storage/codec.py), under the tenant's WAL
key, nonce = segment epoch (u32 LE) || lsn (u64 LE), associated data =
header bytes 0..32. A fresh segment with a fresh random epoch is opened on
every boot and after every write failure, so an LSN reused after a torn tail
is truncated never reuses a nonce.

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
from dataclasses import dataclass
from typing import NamedTuple

import google_crc32c
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SEGMENT_MAGIC = b"NDWS"
RECORD_MAGIC = b"NDWR"
FORMAT_VERSION = 1  # segment header
RECORD_VERSION = 2
SEGMENT_HEADER = struct.Struct("<4sHHIIQII")
RECORD_HEADER = struct.Struct("<4sBBHQIIQII")
SEGMENT_HEADER_SIZE = SEGMENT_HEADER.size  # 32
RECORD_HEADER_SIZE = RECORD_HEADER.size  # 40
_CRC_SPAN = 32  # header bytes the CRC and the AEAD associated data cover
GCM_TAG = 16
# One record holds one transaction; 256 MiB bounds what a decoder allocates
# for a header that claims more (a corrupt or hostile length).
MAX_PAYLOAD = 256 * 1024 * 1024
MAX_BODY = MAX_PAYLOAD - GCM_TAG  # the largest record body a writer may log


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


# Record and RecordHeader are NamedTuples: one of each is made per record replayed, and
# a tuple is made in a fraction of a frozen dataclass's time.
class Record(NamedTuple):
    lsn: int
    rtype: int
    commit_us: int
    body: bytes  # plaintext msgpack


def _nonce(epoch: int, lsn: int) -> bytes:
    return struct.pack("<IQ", epoch, lsn)


def seal_record(aead: AESGCM, epoch: int, tenant_id: int, rec: Record) -> bytes:
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


class RecordHeader(NamedTuple):
    rtype: int
    lsn: int
    tenant_id: int
    payload_len: int
    commit_us: int
    crc: int
    raw: bytes


def parse_record_header(data: bytes | memoryview) -> RecordHeader:
    """Check everything the header alone can tell before the payload is read."""
    if len(data) < RECORD_HEADER_SIZE:
        raise CorruptRecord("record header is truncated")
    magic, ver, rtype, _fl, lsn, tenant_id, plen, commit, crc, _z = RECORD_HEADER.unpack_from(data)
    if magic != RECORD_MAGIC:
        raise CorruptRecord("record has a bad magic number")
    if ver == 1:
        commit *= 1000
    elif ver != RECORD_VERSION:
        raise CorruptRecord(f"record format version {ver} is not supported")
    if rtype not in _RECORD_KINDS:
        raise CorruptRecord(f"record type {rtype} is unknown")
    if not GCM_TAG <= plen <= MAX_PAYLOAD:
        raise CorruptRecord(f"record payload length {plen} is out of range")
    return RecordHeader(rtype, lsn, tenant_id, plen, commit, crc, bytes(data[:_CRC_SPAN]))


def open_record(
    aead: AESGCM, epoch: int, head: RecordHeader, payload: bytes, check_crc: bool = True
) -> Record:
    """The record's plaintext, its GCM tag verified; and its CRC32C first, unless the
    caller verified these exact bytes another way (a whole-file CRC32C)."""
    if check_crc and crc32c(head.raw, payload) != head.crc:
        raise CorruptRecord(f"record at LSN {head.lsn} fails its CRC32C")
    try:
        body = aead.decrypt(_nonce(epoch, head.lsn), payload, head.raw)
    except InvalidTag:
        raise CorruptRecord(
            f"record at LSN {head.lsn} fails authentication (wrong key or tampered)"
        ) from None
    return Record(head.lsn, head.rtype, head.commit_us, body)
