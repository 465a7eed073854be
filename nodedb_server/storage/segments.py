"""L1 segment files: immutable, CRC32C framed, sealed chunks of one collection's rows.

Layout (also in docs/FORMATS.md), little-endian:

    header, 32 bytes
    0      4      6      8          12                   20        24        32
    +------+------+------+----------+--------------------+---------+---------+
    |magic |ver   |flags |tenant_id | nonce_prefix       | crc32c  | zero    |
    |"NDL1"|u16=1 |u16=0 |u32       | 8 random bytes     | of 0..20| 8 bytes |
    +------+------+------+----------+--------------------+---------+---------+

    then frames, each a 16-byte frame header and ``ct_len`` bytes:
    +-----------+-----------+-----------+-----------+----------------------+
    | ct_len u32| index u32 | flags u32 | crc32c u32| AES-256-GCM ct + tag |
    +-----------+-----------+-----------+-----------+----------------------+

``index`` counts frames from 0; flags bit 0 marks the final frame (always
present, possibly holding no items), so a file cut at a frame boundary is
still detected. ``crc32c`` covers the ciphertext. Nonce = nonce_prefix ||
index (u32); associated data = header bytes 0..20 || index || flags. The
plaintext is a msgpack array of items (storage/codec.py). The checkpoint
manifest also records each file's total size and whole-file CRC32C.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import google_crc32c
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nodedb_server.storage import codec
from nodedb_server.storage.fsio import FileIO
from nodedb_server.storage.records import MAX_PAYLOAD, CorruptRecord, crc32c

L1_MAGIC = b"NDL1"
L1_VERSION = 1
HEADER = struct.Struct("<4sHHI8sI8s")
FRAME = struct.Struct("<IIII")
FINAL = 1
# Items are grouped into frames of about this many plaintext bytes: large
# enough that per-frame overhead vanishes, small enough to bound memory.
FRAME_TARGET_BYTES = 1 << 20
# A frame holds about FRAME_TARGET_BYTES, or one item larger than that: an item is at
# most one WAL record's body (records.MAX_PAYLOAD), so a frame is at most that plus a
# target's worth and a batch's margin. The reader refuses a longer ct_len as damage;
# the writer refuses to make a frame it could not read back.
MAX_FRAME_BYTES = MAX_PAYLOAD + (4 << 20)


def write_l1(
    fs: FileIO, path: Path, aead: AESGCM, tenant_id: int, items: Iterable[Any] | codec.Packed
) -> tuple[int, int, int]:
    """Write ``items`` to a new L1 file and fsync it; return (bytes, crc32c, item count)."""
    prefix = secrets.token_bytes(8)
    base = HEADER.pack(L1_MAGIC, L1_VERSION, 0, tenant_id, prefix, 0, b"\0" * 8)[:20]
    head = base + struct.pack("<I", crc32c(base)) + b"\0" * 8
    fd = fs.open_new(path)
    total, crc, count, index = 0, 0, 0, 0

    def emit(data: bytes) -> None:
        nonlocal total, crc
        fs.write(fd, data)
        total += len(data)
        crc = google_crc32c.extend(crc, data)

    def frame(chunk: list[bytes], n: int, flags: int) -> None:
        nonlocal index
        plain = codec.array_head(n) + b"".join(chunk)
        if len(plain) + 16 > MAX_FRAME_BYTES:
            # Fails the checkpoint before it is published; the WAL it would have
            # replaced is kept, so nothing is lost.
            raise ValueError(f"{path.name}: a frame of {len(plain)} bytes is over the L1 limit")
        ct = aead.encrypt(
            prefix + struct.pack("<I", index), plain, head[:20] + struct.pack("<II", index, flags)
        )
        emit(FRAME.pack(len(ct), index, flags, crc32c(ct)) + ct)
        index += 1

    try:
        emit(head)
        chunk: list[bytes] = []
        size = n = 0
        # Items are packed a batch at a time (one msgpack call each); a frame closes
        # once it passes the target size, so it exceeds it by at most one batch.
        batches = items.batches if isinstance(items, codec.Packed) else codec.packed_batches(items)
        for b, k in batches:
            chunk.append(b)
            size += len(b)
            n += k
            if size >= FRAME_TARGET_BYTES:
                frame(chunk, n, 0)
                count += n
                chunk, size, n = [], 0, 0
        frame(chunk, n, FINAL)
        count += n
        fs.fsync(fd)
    finally:
        fs.close(fd)
    return total, crc, count


def file_crc(path: Path) -> tuple[int, int]:
    """(size, crc32c) of a whole file, read in bounded pieces."""
    crc, size = 0, 0
    with open(path, "rb") as f:
        while piece := f.read(1 << 20):
            crc = google_crc32c.extend(crc, piece)
            size += len(piece)
    return size, crc


def read_l1(path: Path, aead: AESGCM, tenant_id: int) -> Iterator[Any]:
    """Yield the items of an L1 file, checking every frame; raise CorruptRecord on damage."""
    with open(path, "rb") as f:
        raw = f.read(HEADER.size)
        if len(raw) < HEADER.size:
            raise CorruptRecord(f"{path.name}: header is truncated")
        magic, ver, _fl, tid, prefix, hcrc, _z = HEADER.unpack(raw)
        if magic != L1_MAGIC or hcrc != crc32c(raw[:20]):
            raise CorruptRecord(f"{path.name}: bad header")
        if ver != L1_VERSION:
            raise CorruptRecord(f"{path.name}: format version {ver} is not supported")
        if tid != tenant_id:
            raise CorruptRecord(f"{path.name}: belongs to tenant {tid}")
        expect = 0
        while True:
            fh = f.read(FRAME.size)
            if len(fh) < FRAME.size:
                raise CorruptRecord(f"{path.name}: ends before its final frame")
            ct_len, index, flags, fcrc = FRAME.unpack(fh)
            if index != expect or ct_len > MAX_FRAME_BYTES:
                raise CorruptRecord(f"{path.name}: frame {expect} is out of order or oversized")
            ct = f.read(ct_len)
            if len(ct) != ct_len or crc32c(ct) != fcrc:
                raise CorruptRecord(f"{path.name}: frame {index} fails its CRC32C")
            try:
                plain = aead.decrypt(
                    prefix + struct.pack("<I", index),
                    ct,
                    raw[:20] + struct.pack("<II", index, flags),
                )
            except InvalidTag:
                raise CorruptRecord(f"{path.name}: frame {index} fails authentication") from None
            yield from codec.unpack(plain)
            if flags & FINAL:
                if f.read(1):
                    raise CorruptRecord(f"{path.name}: bytes after the final frame")
                return
            expect += 1
