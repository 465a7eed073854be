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
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nodedb_server.errors import DiskFull
from nodedb_server.objectstore.base import ObjectStoreError
from nodedb_server.storage import checkpoint as ckpt
from nodedb_server.storage import snapshot
from nodedb_server.storage.fsio import FileIO, disk_full
from nodedb_server.storage.gcpause import gc_paused
from nodedb_server.storage.quarantine import move_aside
from nodedb_server.storage.records import CorruptRecord, Record
from nodedb_server.storage.uploads import (
    ArchivedSegment,
    Storage,
    Uploader,
    archive_key,
    archived_segments,
    contiguous,
)
from nodedb_server.storage.wal import (
    FsyncMode,
    ScanResult,
    SegmentInfo,
    Wal,
    WalBroken,
    list_segments,
    repair_tail,
    scan,
    segment_name,
)

log = logging.getLogger("nodedb.recovery")

# How long closing a store waits for its last copies to reach object storage.
CLOSE_FLUSH_SECONDS = 5.0


class Unrecoverable(Exception):
    """The store cannot be brought back consistently; the message says why."""


class RecoveryAbandoned(Exception):
    """The server is stopping: a replay under way was left (``Store.abandon_recovery``)."""


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
    # [events] max_retained_bytes: the most WAL kept for consumer groups past what the
    # checkpoints need; beyond it the oldest goes and a group that needed it is told.
    retained_bytes: int = 1 << 30


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
        retain: Callable[[], int | None] | None = None,
    ):
        self.name = name
        # The oldest LSN a reader of the WAL itself still needs (consumer groups of
        # change streams), or None: segments from it on outlive checkpoints.
        self.retain = retain
        # Handed each durable batch of records by every WAL this store opens.
        self.on_durable: Callable[[list[Record]], None] | None = None
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
        self._replayed = 0  # records applied by the recovery under way
        self._abandon = False  # set from the event loop; the replay thread checks it
        self._checkpoint_lock = asyncio.Lock()
        # One prune at a time, its deletions included: a checkpoint's prune that finds
        # the uploader's under way waits for its files to be gone before it returns.
        self._prune_lock = asyncio.Lock()

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
        await self.start_uploads()
        return report

    async def start_uploads(self) -> None:
        """With object storage: archive WAL segments and store snapshots of this store."""
        if self.storage is not None and self.uploader is None:
            self.uploader = Uploader(self, self.storage, self.rel, self.owner)
            await self.uploader.start()

    async def recover(self) -> RecoveryReport:
        """Rebuild the state from disk (checkpoint + WAL), repairing a torn tail. With a
        WAL archive, segments missing locally and sealed segments found damaged are
        fetched from it (verified first), so nothing the archive holds is lost."""
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        report = RecoveryReport(self.name)
        await loop.run_in_executor(None, self._load, report)
        await self._fetch_missing(report.checkpoint_lsn)
        self._replayed = 0
        result = await loop.run_in_executor(None, self._replay, report.checkpoint_lsn)
        while result.torn is not None and await self._repair_from_archive(result):
            last = max([report.checkpoint_lsn] + [s.last_lsn for s in result.segments])
            result = await loop.run_in_executor(None, self._replay, last)
        report.replayed = self._replayed
        self._segments, self._next_lsn = await loop.run_in_executor(
            None, self._finish, report, result
        )
        report.seconds = time.monotonic() - started
        return report

    def abandon_recovery(self) -> None:
        """Make a replay under way stop at its next batch of records (shutdown): what it
        applied is dropped with the process, and the WAL is untouched."""
        self._abandon = True

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
        wal.on_durable = self.on_durable
        await wal.start()
        self.wal = wal

    def _load(self, report: RecoveryReport) -> None:
        self.fs.makedirs(self.wal_dir)
        self._remove_unfinished_checkpoints()
        with gc_paused():
            self._load_checkpoint(report)

    def _replay(self, after_lsn: int) -> ScanResult:
        """Apply every valid record above ``after_lsn``; stop at the first damage."""

        def follows_checkpoint(first: int) -> None:
            if first > after_lsn + 1:
                raise Unrecoverable(
                    f"{self.name}: the WAL starts at LSN {first} but the usable checkpoint "
                    f"ends at LSN {after_lsn}; records in between are missing"
                )

        checked = False

        def apply(seg: SegmentInfo, records: list[Record]) -> None:
            nonlocal checked
            if not checked:  # before the first record is applied
                follows_checkpoint(seg.first_lsn)
                checked = True
            if self._abandon:
                raise RecoveryAbandoned(self.name)
            self.state.replay(records)
            self._replayed += len(records)

        with gc_paused():
            result = scan(self.wal_dir, self.aead, self.tenant_id, after_lsn, apply)
        if result.segments:  # also when no record was wanted
            follows_checkpoint(result.segments[0].first_lsn)
        return result

    def _finish(self, report: RecoveryReport, result: ScanResult) -> tuple[list[SegmentInfo], int]:
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
        return result.segments, report.last_lsn + 1

    async def _archived(self) -> list[ArchivedSegment]:
        archive = self.storage.archive if self.storage is not None else None
        if archive is None:
            return []
        try:
            return await archived_segments(archive, self.rel)
        except ObjectStoreError as e:
            log.warning("%s: the WAL archive cannot be read at start (%s)", self.name, e)
            return []

    async def _fetch_missing(self, checkpoint_lsn: int) -> None:
        """Segments between the checkpoint and the first local segment (deleted once
        archived, when the newest checkpoint then turned out unusable): from the archive."""
        local = list_segments(self.wal_dir)
        if not local or int(local[0].stem) <= checkpoint_lsn + 1:
            return
        first_local = int(local[0].stem)
        for a in contiguous(await self._archived(), checkpoint_lsn):
            if a.last_lsn >= first_local:
                break
            await self._fetch(a, self.wal_dir / segment_name(a.first_lsn))
            log.warning(
                "%s: WAL segment %s was missing locally; fetched it from the archive",
                self.name,
                segment_name(a.first_lsn),
            )

    async def _repair_from_archive(self, result: ScanResult) -> bool:
        """Replace the damaged segment ``result`` stopped in by its archived copy, if the
        archive has one that verifies; True if it did."""
        torn = result.torn_path
        if torn is None or not torn.stem.isdigit():
            return False
        copy = next((a for a in await self._archived() if a.first_lsn == int(torn.stem)), None)
        if copy is None:
            return False
        try:
            await self._fetch(copy, torn)
        except (ObjectStoreError, OSError, CorruptRecord) as e:
            log.error("%s: the archived copy of %s cannot be used: %s", self.name, torn.name, e)
            return False
        log.warning(
            "%s: WAL segment %s was damaged (%s); repaired from its verified archived copy",
            self.name,
            torn.name,
            result.torn,
        )
        return True

    async def _fetch(self, copy: ArchivedSegment, target: Path) -> None:
        """Download an archived segment, check every record (CRC32C and GCM tag) against
        its note, and only then put it at ``target``."""
        assert self.storage is not None and self.storage.archive is not None
        loop = asyncio.get_running_loop()
        work = self.wal_dir / ".fetch"
        await loop.run_in_executor(None, self.fs.makedirs, work)
        tmp = work / segment_name(copy.first_lsn)
        try:
            await self.storage.archive.get_file(archive_key(self.rel, copy.first_lsn), tmp)

            def check() -> None:
                got = scan(work, self.aead, self.tenant_id)
                last = got.segments[-1].last_lsn if got.segments else -1
                if got.torn is not None or last != copy.last_lsn:
                    raise CorruptRecord(
                        f"archived {tmp.name} does not verify: {got.torn or 'wrong last LSN'}"
                    )
                os.replace(tmp, target)
                self.fs.fsync_dir(self.wal_dir)

            await loop.run_in_executor(None, check)
        finally:
            await loop.run_in_executor(None, shutil.rmtree, work, True)

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
        """Delete the WAL segments no kept checkpoint and no consumer group needs (and,
        with archiving on, that are archived)."""
        async with self._prune_lock:
            return await self._prune_wal()

    async def _prune_wal(self) -> list[Path]:
        wal = self.wal
        if wal is None:
            return []
        kept = ckpt.checkpoint_dirs(self.checkpoint_dir)
        if not kept:
            return []
        through = int(kept[-1].name)
        needed = self.retain() if self.retain is not None else None
        if needed is not None and needed - 1 < through:
            through = self._retained_through(wal, needed - 1, through)
        uploader = self.uploader
        may_remove = uploader.is_archived if uploader is not None else (lambda _s: True)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, wal.remove_segments_through, through, may_remove)

    def _retained_through(self, wal: Wal, wanted: int, through: int) -> int:
        """How far segments may go when consumer groups want the WAL after ``wanted``
        kept: not past it, unless the segments kept for them alone (those wholly at or
        below ``through``) would exceed ``retained_bytes``; then the oldest of those go
        until the rest fit (the groups that needed them learn of it when they read)."""
        extra = [s for s in wal.segments[:-1] if wanted < s.last_lsn <= through]
        total = sum(s.bytes for s in extra)
        kept_from = wanted
        for seg in extra:
            if total <= self.settings.retained_bytes:
                break
            total -= seg.bytes
            kept_from = seg.last_lsn
        if kept_from > wanted:
            log.warning(
                "%s: the WAL kept for consumer groups passed [events] max_retained_bytes "
                "(%d bytes); segments through LSN %d may go",
                self.name,
                self.settings.retained_bytes,
                kept_from,
            )
        return kept_from

    async def close(self) -> None:
        if self.uploader is not None:
            # A clean stop leaves the archive and snapshots current, if storage answers.
            if self.wal is not None and self.wal.broken is None and self.uploader.healthy():
                await self.uploader.flush(timeout=CLOSE_FLUSH_SECONDS)
            await self.uploader.stop()
            self.uploader = None
        if self.wal is not None:
            await self.wal.close()
            self.wal = None

    @property
    def broken(self) -> WalBroken | None:
        return self.wal.broken if self.wal is not None else None
