"""Checkpoints: a directory of L1 files plus a sealed MANIFEST, published by rename.

    <store>/checkpoints/<lsn:020d>/MANIFEST
    <store>/checkpoints/<lsn:020d>/<part>.l1

MANIFEST layout (also in docs/FORMATS.md), little-endian:

    0      4      6      8          12                    24        28        32
    +------+------+------+----------+---------------------+---------+---------+
    |magic |ver   |flags |tenant_id | nonce (12 bytes)    |body_len | crc32c  |
    |"NDCM"|u16=1 |u16=0 |u32       |                     |u32      |         |
    +------+------+------+----------+---------------------+---------+---------+
    then body_len bytes: AES-256-GCM(msgpack {lsn, created_ms, meta, files}),
    associated data = header bytes 0..28; crc32c covers bytes 0..28 and the body.

``files`` lists each L1 file as {name, part, bytes, crc32c, items}; a file
whose size or CRC differs from its entry fails the whole checkpoint.

A checkpoint is built in ``<lsn>.tmp``, every file fsynced, the directory
renamed to its final name and the parent directory fsynced. The two newest
complete checkpoints are kept, so if the newest fails validation at boot the
previous one (with the WAL since its LSN, which is kept too) still works.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nodedb_server.storage import codec
from nodedb_server.storage.fsio import FileIO
from nodedb_server.storage.records import CorruptRecord, Record, crc32c
from nodedb_server.storage.segments import file_crc, read_l1, write_l1

log = logging.getLogger("nodedb.checkpoint")

MANIFEST_MAGIC = b"NDCM"
MANIFEST_VERSION = 1
MANIFEST_HEADER = struct.Struct("<4sHHI12sII")
MAX_MANIFEST_BODY = 64 << 20
KEEP_CHECKPOINTS = 2


class StateMachine(Protocol):
    """What a store (a tenant, or the system catalog) checkpoints and replays."""

    def apply(self, rec: Record) -> None: ...

    def replay(self, records: Iterable[Record]) -> None:
        """``apply`` each of ``records`` in order (a state may batch them)."""
        ...

    def checkpoint_parts(self) -> tuple[dict[str, Any], list[tuple[str, Iterable[Any]]]]:
        """(metadata, [(part name, items)]): a consistent snapshot taken on the loop."""
        ...

    def load_checkpoint(
        self, meta: dict[str, Any], read_part: Callable[[str], Iterator[Any]]
    ) -> None: ...


@dataclass(frozen=True)
class CheckpointInfo:
    lsn: int
    created_ms: int
    files: int
    bytes: int
    path: Path


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoint directories, newest first."""
    if not root.exists():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), reverse=True)


def write_checkpoint(
    fs: FileIO,
    root: Path,
    aead: AESGCM,
    tenant_id: int,
    lsn: int,
    meta: dict[str, Any],
    parts: Iterable[tuple[str, Iterable[Any] | codec.Packed]],
) -> CheckpointInfo:
    """Write and publish a checkpoint at ``lsn``. Runs on a worker thread. ``parts`` may be
    a generator; each part's items are consumed before the next part is asked for."""
    fs.makedirs(root)
    final = root / f"{lsn:020d}"
    if final.exists():
        return read_info(final, aead, tenant_id)
    tmp = root / f"{lsn:020d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    os.mkdir(tmp, 0o700)
    try:
        files, total, created = _write_parts(fs, tmp, aead, tenant_id, lsn, meta, parts)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # else a full disk stays full of it
        raise
    fs.fsync_dir(root)
    for old in checkpoint_dirs(root)[KEEP_CHECKPOINTS:]:
        shutil.rmtree(old)
    return CheckpointInfo(lsn, created, len(files), total, final)


def _write_parts(
    fs: FileIO,
    tmp: Path,
    aead: AESGCM,
    tenant_id: int,
    lsn: int,
    meta: dict[str, Any],
    parts: Iterable[tuple[str, Iterable[Any] | codec.Packed]],
) -> tuple[list[dict[str, Any]], int, int]:
    """The L1 files and the MANIFEST in ``tmp``, all fsynced: (files, bytes, created_ms)."""
    files = []
    total = 0
    for i, (part, items) in enumerate(parts):
        name = f"p{i:05d}.l1"
        size, crc, count = write_l1(fs, tmp / name, aead, tenant_id, items)
        files.append({"name": name, "part": part, "bytes": size, "crc32c": crc, "items": count})
        total += size
    created = int(time.time() * 1000)
    body = codec.pack({"lsn": lsn, "created_ms": created, "meta": meta, "files": files})
    fs.write_file_atomic(tmp / "MANIFEST", _seal_manifest(aead, tenant_id, body))
    fs.fsync_dir(tmp)
    return files, total, created


def _seal_manifest(aead: AESGCM, tenant_id: int, body: bytes) -> bytes:
    nonce = secrets.token_bytes(12)
    head = MANIFEST_HEADER.pack(
        MANIFEST_MAGIC, MANIFEST_VERSION, 0, tenant_id, nonce, len(body) + 16, 0
    )[:28]
    ct = aead.encrypt(nonce, body, head)
    return head + struct.pack("<I", crc32c(head, ct)) + ct


def read_manifest(path: Path, aead: AESGCM, tenant_id: int) -> dict[str, Any]:
    data = (path / "MANIFEST").read_bytes() if (path / "MANIFEST").exists() else b""
    if len(data) < MANIFEST_HEADER.size:
        raise CorruptRecord(f"checkpoint {path.name}: MANIFEST is missing or truncated")
    magic, ver, _f, tid, nonce, blen, crc = MANIFEST_HEADER.unpack_from(data)
    if (
        magic != MANIFEST_MAGIC
        or blen > MAX_MANIFEST_BODY
        or len(data) != MANIFEST_HEADER.size + blen
    ):
        raise CorruptRecord(f"checkpoint {path.name}: MANIFEST header is damaged")
    if crc != crc32c(data[:28], data[32:]):
        raise CorruptRecord(f"checkpoint {path.name}: MANIFEST fails its CRC32C")
    if ver != MANIFEST_VERSION or tid != tenant_id:
        raise CorruptRecord(f"checkpoint {path.name}: MANIFEST version or tenant does not match")
    try:
        body = aead.decrypt(nonce, data[32:], data[:28])
    except InvalidTag:
        raise CorruptRecord(f"checkpoint {path.name}: MANIFEST fails authentication") from None
    manifest: dict[str, Any] = codec.unpack(body)
    return manifest


def read_info(path: Path, aead: AESGCM, tenant_id: int) -> CheckpointInfo:
    m = read_manifest(path, aead, tenant_id)
    return CheckpointInfo(
        m["lsn"], m["created_ms"], len(m["files"]), sum(f["bytes"] for f in m["files"]), path
    )


def validate(path: Path, aead: AESGCM, tenant_id: int) -> dict[str, Any]:
    """The manifest of a checkpoint whose every file has its recorded size and CRC."""
    manifest = read_manifest(path, aead, tenant_id)
    for f in manifest["files"]:
        p = path / f["name"]
        if not p.exists():
            raise CorruptRecord(f"checkpoint {path.name}: {f['name']} is missing")
        size, crc = file_crc(p)
        if (size, crc) != (f["bytes"], f["crc32c"]):
            raise CorruptRecord(f"checkpoint {path.name}: {f['name']} fails its CRC32C")
    return manifest


def part_reader(
    path: Path, manifest: dict[str, Any], aead: AESGCM, tenant_id: int
) -> Callable[[str], Iterator[Any]]:
    by_part = {f["part"]: f["name"] for f in manifest["files"]}

    def read_part(part: str) -> Iterator[Any]:
        name = by_part.get(part)
        if name is None:
            return iter(())
        return read_l1(path / name, aead, tenant_id)

    return read_part
