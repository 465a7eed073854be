"""The backup envelope: a plaintext header, sealed chunked sections, a sealed trailer.

Layout (also in docs/FORMATS.md), integers little-endian:

    header
    0      4      6      8           12               20             28          32
    +------+------+------+-----------+----------------+--------------+-----------+
    |magic |ver   |flags |header_len | watermark_lsn  | created_ms   | tenant_id |
    |"NDBK"|u16=1 |u16=0 |u32        | u64            | u64          | u32       |
    +------+------+------+-----------+----------------+--------------+-----------+
    32          40                 100          116       118
    +-----------+------------------+------------+---------+------------------+--------+
    |master key | wrapped tenant   | key salt   |name_len | tenant name      | crc32c |
    |id 8 bytes | key 60 bytes     | 16 bytes   |u16      | name_len bytes   | u32    |
    +-----------+------------------+------------+---------+------------------+--------+
    crc32c covers every header byte before it; header_len counts the whole header.

    chunk, repeated: a 24-byte chunk header, then ct_len bytes
    +------+---------+---------+-----------+---------+-----------+-------------------+
    |magic |section  |flags    |index      |ct_len   | crc32c    | AES-256-GCM ct+tag|
    |"NDCK"|u32      |u32      |u32        |u32      | of the ct |                   |
    +------+---------+---------+-----------+---------+-----------+-------------------+
    flags bit 0: the last chunk of its section. Sections count from 0 and each
    ends with a final chunk (possibly empty); chunk indexes count from 0 within
    the file, so a missing, repeated or reordered chunk is found.

    trailer: a chunk with section 0xFFFFFFFF whose plaintext is
    msgpack [sections, chunks, plaintext bytes]; nothing may follow it.

Sealing: a per-backup key is derived from the tenant's WAL key with
HKDF-SHA256 (salt = the header's key salt, info "nodedb backup v1"), so
backup nonces can never collide with WAL nonces under the same WAL key.
Nonce = section (u32) || index (u64); associated data = the header's CRC32C
|| section || flags || index, so a chunk cannot be moved to another backup,
section or position, or have its final flag changed, without failing its tag.

Every length is checked against the limits below before anything is
allocated, and error messages say what is wrong without echoing the bytes.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from nodedb_server.storage import codec
from nodedb_server.storage.records import crc32c

MAGIC = b"NDBK"
CHUNK_MAGIC = b"NDCK"
VERSION = 1
_FIXED = struct.Struct("<4sHHIQQI8s60s16sH")  # 118 bytes, then the name and the CRC
_CHUNK = struct.Struct("<4sIIIII")  # 24 bytes
FINAL = 1
TRAILER_SECTION = 0xFFFFFFFF
MAX_NAME = 255
# Plaintext per chunk: large enough that per-chunk overhead is small, small
# enough that a reader holds little (BENCH.md W5/W6: flat memory).
CHUNK_BYTES = 1 << 20
MAX_CHUNK_CT = CHUNK_BYTES + 16
MAX_HEADER = _FIXED.size + MAX_NAME + 4
HKDF_INFO = b"nodedb backup v1"


class EnvelopeError(ValueError):
    """The bytes are not a usable backup; the message says why (never the bytes)."""


@dataclass(frozen=True)
class Header:
    watermark_lsn: int
    created_ms: int
    tenant_id: int
    master_key_id: str  # hex
    wrapped_key: bytes
    key_salt: bytes
    tenant: str
    crc: int = 0

    def encode(self) -> bytes:
        name = self.tenant.encode()
        if not 0 < len(name) <= MAX_NAME:
            raise EnvelopeError("tenant name must be 1 to 255 bytes")
        length = _FIXED.size + len(name) + 4
        body = (
            _FIXED.pack(
                MAGIC,
                VERSION,
                0,
                length,
                self.watermark_lsn,
                self.created_ms,
                self.tenant_id,
                bytes.fromhex(self.master_key_id),
                self.wrapped_key,
                self.key_salt,
                len(name),
            )
            + name
        )
        return body + struct.pack("<I", crc32c(body))


def _backup_key(tenant_key: bytes, salt: bytes) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=HKDF_INFO)
    return AESGCM(hkdf.derive(tenant_key))


def _nonce(section: int, index: int) -> bytes:
    return struct.pack("<IQ", section, index)


def _aad(header_crc: int, section: int, flags: int, index: int) -> bytes:
    return struct.pack("<IIII", header_crc, section, flags, index)


class EnvelopeWriter:
    """Streams sections into ``sink``: ``section()`` opens one, ``write`` adds bytes,
    ``end_section`` closes it, ``finish`` writes the trailer."""

    def __init__(self, sink: BinaryIO, tenant_key: bytes, header: Header):
        self._sink = sink
        salt = header.key_salt or secrets.token_bytes(16)
        raw = Header(
            header.watermark_lsn,
            header.created_ms,
            header.tenant_id,
            header.master_key_id,
            header.wrapped_key,
            salt,
            header.tenant,
        ).encode()
        self.header_crc = struct.unpack_from("<I", raw, len(raw) - 4)[0]
        self._aead = _backup_key(tenant_key, salt)
        sink.write(raw)
        self.bytes_written = len(raw)
        self.plain_bytes = 0
        self._section = -1
        self._open = False
        self._index = 0
        self._buf = bytearray()

    def section(self) -> int:
        if self._open:
            raise EnvelopeError("the previous section is still open")
        self._section += 1
        self._open = True
        return self._section

    def write(self, data: bytes) -> None:
        if not self._open:
            raise EnvelopeError("no section is open")
        self._buf += data
        self.plain_bytes += len(data)
        while len(self._buf) >= CHUNK_BYTES:
            piece = bytes(self._buf[:CHUNK_BYTES])
            del self._buf[:CHUNK_BYTES]
            self._chunk(self._section, 0, piece)

    def end_section(self) -> None:
        if not self._open:
            raise EnvelopeError("no section is open")
        self._chunk(self._section, FINAL, bytes(self._buf))
        self._buf.clear()
        self._open = False

    def finish(self) -> None:
        if self._open:
            raise EnvelopeError("the last section is still open")
        summary = codec.pack([self._section + 1, self._index, self.plain_bytes])
        self._chunk(TRAILER_SECTION, FINAL, summary)

    def _chunk(self, section: int, flags: int, plain: bytes) -> None:
        index = self._index
        ct = self._aead.encrypt(
            _nonce(section, index), plain, _aad(self.header_crc, section, flags, index)
        )
        self._sink.write(_CHUNK.pack(CHUNK_MAGIC, section, flags, index, len(ct), crc32c(ct)) + ct)
        self.bytes_written += _CHUNK.size + len(ct)
        self._index += 1


def read_header(source: BinaryIO) -> Header:
    fixed = _read_exact(source, _FIXED.size, "the header")
    magic, version, _flags, length, lsn, created, tenant_id, key_id, wrapped, salt, name_len = (
        _FIXED.unpack(fixed)
    )
    if magic != MAGIC:
        raise EnvelopeError("not a nodedb backup (bad magic number)")
    if version != VERSION:
        raise EnvelopeError(
            f"backup format version {version} is not supported by this server "
            f"(it reads version {VERSION})"
        )
    if name_len == 0 or name_len > MAX_NAME or length != _FIXED.size + name_len + 4:
        raise EnvelopeError("the backup header is damaged (bad lengths)")
    rest = _read_exact(source, name_len + 4, "the header")
    (crc,) = struct.unpack_from("<I", rest, name_len)
    if crc != crc32c(fixed, rest[:name_len]):
        raise EnvelopeError("the backup header fails its CRC32C")
    try:
        tenant = rest[:name_len].decode()
    except UnicodeDecodeError:
        raise EnvelopeError("the backup header is damaged (tenant name)") from None
    return Header(lsn, created, tenant_id, key_id.hex(), wrapped, salt, tenant, crc)


class EnvelopeReader:
    """Verifies and decrypts a backup as it streams: ``sections()`` yields each section's
    plaintext chunks in order; a damaged, missing, repeated, reordered or truncated
    chunk raises EnvelopeError at the point it is found."""

    def __init__(self, source: BinaryIO, unwrap: Callable[[Header], bytes]):
        self._source = source
        self.header = read_header(source)
        self._aead = _backup_key(unwrap(self.header), self.header.key_salt)
        self._index = 0
        self.plain_bytes = 0
        self.sections_seen = 0

    def sections(self) -> Iterator[Iterator[bytes]]:
        expect = 0
        while True:
            section, flags, plain = self._next_chunk()
            if section == TRAILER_SECTION:
                self._check_trailer(flags, plain, expect)
                return
            if section != expect:
                raise EnvelopeError(
                    f"chunk {self._index - 1} belongs to section {section}, "
                    f"expected section {expect}: chunks are missing or out of order"
                )
            yield self._section_chunks(section, flags, plain)
            expect += 1

    def _section_chunks(self, section: int, flags: int, first: bytes) -> Iterator[bytes]:
        plain = first
        while True:
            self.plain_bytes += len(plain)
            yield plain
            if flags & FINAL:
                self.sections_seen += 1
                return
            nxt, flags, plain = self._next_chunk()
            if nxt != section:
                raise EnvelopeError(f"section {section} ends without its final chunk")

    def _next_chunk(self) -> tuple[int, int, bytes]:
        raw = self._source.read(_CHUNK.size)
        if len(raw) == 0:
            raise EnvelopeError("the backup ends before its trailer: the file is truncated")
        if len(raw) < _CHUNK.size:
            raise EnvelopeError("the backup is truncated inside a chunk header")
        magic, section, flags, index, ct_len, crc = _CHUNK.unpack(raw)
        if magic != CHUNK_MAGIC:
            raise EnvelopeError(f"chunk {self._index} is damaged (bad magic number)")
        if ct_len < 16 or ct_len > MAX_CHUNK_CT:
            raise EnvelopeError(
                f"chunk {self._index} claims {ct_len} bytes, more than a chunk holds"
            )
        if index != self._index:
            raise EnvelopeError(
                f"chunk {index} found where chunk {self._index} was expected: "
                "chunks are missing, repeated or out of order"
            )
        ct = _read_exact(self._source, ct_len, f"chunk {index}")
        if crc32c(ct) != crc:
            raise EnvelopeError(f"chunk {index} fails its CRC32C")
        try:
            plain = self._aead.decrypt(
                _nonce(section, index), ct, _aad(self.header.crc, section, flags, index)
            )
        except InvalidTag:
            raise EnvelopeError(
                f"chunk {index} fails authentication (tampered, or not from this backup)"
            ) from None
        self._index += 1
        return section, flags, plain

    def _check_trailer(self, flags: int, plain: bytes, sections: int) -> None:
        try:
            count, chunks, plain_bytes = codec.unpack(plain)
        except (ValueError, TypeError):
            raise EnvelopeError("the backup trailer is damaged") from None
        if not flags & FINAL or count != sections or chunks != self._index - 1:
            raise EnvelopeError("the backup trailer does not match its contents")
        if plain_bytes != self.plain_bytes:
            raise EnvelopeError("the backup trailer does not match its contents")
        if self._source.read(1):
            raise EnvelopeError("bytes follow the backup trailer")


def _read_exact(source: BinaryIO, n: int, what: str) -> bytes:
    data = source.read(n)
    if len(data) != n:
        raise EnvelopeError(f"the backup is truncated inside {what}")
    return data
