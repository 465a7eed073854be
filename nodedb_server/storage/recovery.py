"""A store: one state machine made durable by a WAL and checkpoints, and its recovery.

Recovery, per store (a tenant, or the system catalog):
 1. take the newest checkpoint whose MANIFEST and L1 files all validate;
    a failing one is moved to quarantine and the previous one is tried;
 2. scan the WAL segments, checking each record's CRC32C and GCM tag, and
    replay every record above the checkpoint LSN in LSN order;
 3. at the first damaged record, truncate that segment there (the torn tail)
    and quarantine any later segment;
 4. open a fresh segment (fresh nonce epoch) for new writes; on a full disk
    the store serves reads and each write tries again (53100 until there is room).
What was replayed, discarded and quarantined is logged and kept in a report.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nodedb_server.errors import DiskFull
from nodedb_server.storage import checkpoint as ckpt
from nodedb_server.storage import snapshot
from nodedb_server.storage.fsio import FileIO, disk_full
from nodedb_server.storage.gcpause import gc_paused
from nodedb_server.storage.quarantine import move_aside
from nodedb_server.storage.records import CorruptRecord
from nodedb_server.storage.uploads import Storage, Uploader
from nodedb_server.storage.wal import FsyncMode, SegmentInfo, Wal, WalBroken, repair_tail, scan

log = logging.getLogger("nodedb.recovery")


class Unrecoverable(Exception):
    """The store cannot be brought back consistently; the message says why."""


@dataclass
class RecoveryReport:
    name: str
    checkpoint_lsn: int = 0
    replayed: int = 0
    last_lsn: int = 0
    discarded_bytes: int = 0
    quarantined: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class WalSettings:
    segment_bytes: int
    fsync: FsyncMode
    batch_ms: int


class Store:
    """A directory holding ``wal/``, ``checkpoints/`` and ``quarantine/`` for one state machine."""

    def __init__(
        self,
        name: str,
        root: Path,
        tenant_id: int,
        aead: AESGCM,
        fs: FileIO,
        settings: WalSettings,
        state: ckpt.StateMachine,
        *,
        owner: str = "",
        rel: str = "",
        storage: Storage | None = None,
    ):
        self.name = name
        self.owner = owner or name  # the tenant's name, or "system", for reason notes
        self.rel = rel  # this store's directory in the data directory: its object-key prefix
        self.storage = storage
        self.uploader: Uploader | None = None
        self.root = root
        self.tenant_id = tenant_id
        self.aead = aead
        self.fs = fs
        self.settings = settings
        self.state = state
        self.wal: Wal | None = None
        self.last_checkpoint: ckpt.CheckpointInfo | None = None
        self._segments: list[SegmentInfo] = []
        self._next_lsn = 1
        self._checkpoint_lock = asyncio.Lock()

    @property
    def wal_dir(self) -> Path:
        return self.root / "wal"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    async def open(self) -> RecoveryReport:
        report = await self.recover()
        try:
            await self.open_wal()
        except OSError as e:
            if not disk_full(e):
                raise
            log.error(
                "%s: no space for a new WAL segment (%s); serving reads, "
                "writes fail with 53100 until there is room",
                self.name,
                e.strerror,
            )
        if self.storage is not None and self.uploader is None:
            self.uploader = Uploader(self, self.storage, self.rel, self.owner)
            await self.uploader.start()
        return report

    async def recover(self) -> RecoveryReport:
        """Rebuild the state from disk (checkpoint + WAL), repairing a torn tail."""
        loop = asyncio.get_running_loop()
        report, self._segments, self._next_lsn = await loop.run_in_executor(None, self._recover)
        return report

    async def open_wal(self) -> None:
        """Start a fresh segment for new writes (fails with OSError on a full disk)."""
        wal = Wal(
            self.wal_dir,
            self.tenant_id,
            self.aead,
            self.fs,
            next_lsn=self._next_lsn,
            segment_bytes=self.settings.segment_bytes,
            fsync=self.settings.fsync,
            batch_ms=self.settings.batch_ms,
            segments=self._segments,
        )
        await wal.start()
        self.wal = wal

    def _recover(self) -> tuple[RecoveryReport, list[SegmentInfo], int]:
        started = time.monotonic()
        report = RecoveryReport(self.name)
        self.fs.makedirs(self.wal_dir)
        self._remove_unfinished_checkpoints()
        with gc_paused():
            self._load_checkpoint(report)
            result = scan(self.wal_dir, self.aead, self.tenant_id, after_lsn=report.checkpoint_lsn)
            first = result.segments[0].first_lsn if result.segments else None
            if first is not None and first > report.checkpoint_lsn + 1:
                raise Unrecoverable(
                    f"{self.name}: the WAL starts at LSN {first} but the usable checkpoint ends "
                    f"at LSN {report.checkpoint_lsn}; records in between are missing"
                )
            for rec in result.records:
                self.state.apply(rec)
        report.replayed = len(result.records)
        report.last_lsn = max([report.checkpoint_lsn] + [s.last_lsn for s in result.segments])
        if result.torn is not None:
            report.discarded_bytes = result.discarded_bytes
            report.quarantined += [p.name for p in result.later_segments]
            log.warning(
                "%s: discarded %d bytes from the WAL tail of %s at offset %d: %s",
                self.name,
                result.discarded_bytes,
                result.torn_path.name if result.torn_path else "?",
                result.torn_offset,
                result.torn,
            )
            repair_tail(self.fs, self.wal_dir, result, self.quarantine_dir, self.owner)
            result.segments = [s for s in result.segments if s.path.exists()]
        report.seconds = time.monotonic() - started
        return report, result.segments, report.last_lsn + 1

    def _remove_unfinished_checkpoints(self) -> None:
        """``<lsn>.tmp`` directories of checkpoints a kill or a full disk interrupted."""
        if not self.checkpoint_dir.exists():
            return
        for path in self.checkpoint_dir.glob("*.tmp"):
            log.warning("%s: removing unfinished checkpoint %s", self.name, path.name)
            shutil.rmtree(path, ignore_errors=True)

    def _load_checkpoint(self, report: RecoveryReport) -> dict | None:
        for path in ckpt.checkpoint_dirs(self.checkpoint_dir):
            try:
                manifest = ckpt.validate(path, self.aead, self.tenant_id)
                self.state.load_checkpoint(
                    manifest["meta"], ckpt.part_reader(path, manifest, self.aead, self.tenant_id)
                )
            except (CorruptRecord, OSError, KeyError, ValueError) as e:
                log.error(
                    "%s: checkpoint %s is unusable (%s); moving it to quarantine",
                    self.name,
                    path.name,
                    e,
                )
                move_aside(
                    path,
                    self.quarantine_dir,
                    f"unusable checkpoint: {e}",
                    self.owner,
                    f"checkpoint-{path.name}",
                )
                report.quarantined.append(path.name)
                self.state.load_checkpoint({}, lambda _p: iter(()))
                continue
            report.checkpoint_lsn = manifest["lsn"]
            self.last_checkpoint = ckpt.CheckpointInfo(
                manifest["lsn"],
                manifest["created_ms"],
                len(manifest["files"]),
                sum(f["bytes"] for f in manifest["files"]),
                path,
            )
            return manifest
        return None

    async def checkpoint(self) -> ckpt.CheckpointInfo | None:
        """Snapshot the state, write L1 files, publish, then drop WAL no longer needed."""
        wal = self.wal
        if wal is None:
            return None
        async with self._checkpoint_lock:
            lsn = wal.last_lsn
            if self.last_checkpoint is not None and self.last_checkpoint.lsn == lsn:
                return self.last_checkpoint
            meta, parts = self.state.checkpoint_parts()
            loop = asyncio.get_running_loop()
            try:
                # Never publish state the WAL has not made durable.
                await wal.wait_durable(lsn)
                snapshot.prepare(parts)
                info = await loop.run_in_executor(
                    None,
                    ckpt.write_checkpoint,
                    self.fs,
                    self.checkpoint_dir,
                    self.aead,
                    self.tenant_id,
                    lsn,
                    meta,
                    parts,
                )
            except OSError as e:
                if not disk_full(e):
                    raise
                raise DiskFull("could not write the checkpoint: no space left on device") from None
            finally:
                snapshot.release(parts)
            self.last_checkpoint = info
            wal.bytes_since_checkpoint = 0
            removed = await self.prune_wal()
            if self.uploader is not None:
                self.uploader.wake()
            log.info(
                "%s: checkpoint at LSN %d (%d files, %d bytes); removed %d WAL segments",
                self.name,
                info.lsn,
                info.files,
                info.bytes,
                len(removed),
            )
            return info

    async def prune_wal(self) -> list[Path]:
        """Delete the WAL segments no kept checkpoint needs (and, with archiving on,
        that are archived)."""
        wal = self.wal
        if wal is None:
            return []
        kept = ckpt.checkpoint_dirs(self.checkpoint_dir)
        if not kept:
            return []
        oldest_kept = int(kept[-1].name)
        uploader = self.uploader
        may_remove = uploader.is_archived if uploader is not None else (lambda _s: True)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, wal.remove_segments_through, oldest_kept, may_remove
        )

    async def close(self) -> None:
        if self.uploader is not None:
            await self.uploader.stop()
            self.uploader = None
        if self.wal is not None:
            await self.wal.close()
            self.wal = None

    @property
    def broken(self) -> WalBroken | None:
        return self.wal.broken if self.wal is not None else None
