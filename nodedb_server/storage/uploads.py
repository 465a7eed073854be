"""A store's copies in object storage: the WAL archive, checkpoint snapshots, quarantine.

One ``Uploader`` per store (a tenant, or the system catalog) runs one asyncio
task. Nothing a commit waits for passes through it: the WAL writer only sets
an event when it seals a segment, and a checkpoint only wakes the task once it
has published. A store that is slow or down delays the copies, never a write.

Object keys, under each section's prefix; ``<store>`` is the store's directory
inside the data directory (``system`` or ``tenants/<id>``), so that sections may
share one bucket and prefix without their keys meeting:

    [wal_archive]         <store>/wal/<first_lsn:020d>.wal      a sealed segment, as on disk
                          <store>/wal/<first_lsn:020d>.wal.json its note: {first_lsn, last_lsn,
                                         first_us, last_us, size, crc32c}, stored after it
    [snapshot_storage]    <store>/checkpoints/<lsn:020d>/<file>  L1 files, then MANIFEST last
                          system/KEY                             the system key, master-wrapped
    [quarantine_storage]  <store>/quarantine/<ms>/<name>         a damaged file, as found
                          <store>/quarantine/<ms>/<name>.json    why (storage/quarantine.py)

Rules the rest of the server relies on:

- A segment counts as archived once its copy was stored and read back with the
  local file's size and CRC32C, and its note stored after it: an archived
  segment is one whose object and note are both there, with the note's size. Only then may a checkpoint delete it locally
  (``is_archived``); a failed upload keeps it, and is retried with capped
  exponential backoff.
- The open segment is sealed once it has held records for about
  ``max_delay`` seconds, so the archive is never further behind than that.
- A snapshot's MANIFEST is stored after every file it names, so a manifest in
  storage always names files that are there; pruning deletes the MANIFEST first.
- A quarantined entry is copied, verified, and only then deleted locally.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from nodedb_server.config import STORAGE_SECTIONS, Config
from nodedb_server.errors import ConfigError
from nodedb_server.objectstore.base import ObjectInfo, ObjectStore, ObjectStoreError
from nodedb_server.objectstore.factory import open_store
from nodedb_server.storage import checkpoint as ckpt
from nodedb_server.storage import quarantine
from nodedb_server.storage.records import CorruptRecord
from nodedb_server.storage.segments import file_crc
from nodedb_server.storage.wal import SegmentInfo, record_times, segment_name

if TYPE_CHECKING:
    from nodedb_server.storage.recovery import Store

log = logging.getLogger("nodedb.uploads")

RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
LOUD_EVERY_SECONDS = 60.0


@dataclass
class Storage:
    """The server's object stores, one per configured section, shared by every store."""

    snapshots: ObjectStore
    quarantine: ObjectStore
    archive: ObjectStore | None  # None: WAL archiving is off
    keep_snapshots: int = 2
    max_delay: float = 60.0
    max_local_bytes: int = 1 << 30

    async def close(self) -> None:
        for store in (self.snapshots, self.quarantine, self.archive):
            if store is not None:
                await store.close()


async def open_storage(cfg: Config) -> Storage:
    """The configured stores, each checked: one that answers and refuses (no such
    bucket, bad credentials, a directory that cannot be written) stops start-up with
    a ConfigError naming its section; one that cannot be reached only logs, and the
    uploads retry until it can."""
    stores = {}
    for section in STORAGE_SECTIONS:
        if section == "wal_archive" and not cfg["wal_archive.enabled"]:
            continue
        store = open_store(cfg, section)
        try:
            await store.check()
        except ObjectStoreError as e:
            if e.refused:
                await store.close()
                raise ConfigError(f"[{section}] cannot be used: {e}") from None
            log.error(
                "[%s] %s is unreachable (%s); files stay local until it answers",
                section,
                store.url,
                e,
            )
        stores[section] = store
    return Storage(
        stores["snapshot_storage"],
        stores["quarantine_storage"],
        stores.get("wal_archive"),
        cfg["snapshot_storage.keep"],
        cfg["wal_archive.max_delay_seconds"],
        cfg["wal_archive.max_local_bytes"],
    )


@dataclass(frozen=True)
class StoredSnapshot:
    lsn: int
    location: str
    stored_at: float  # unix seconds


@dataclass(frozen=True)
class StoredEntry:
    """A quarantined file in quarantine storage."""

    name: str
    reason: str
    at_ms: int
    location: str


@dataclass
class Section:
    """How one kind of copy is going: its last error, and when to try again."""

    error: str | None = None
    failing_since: float = 0.0
    attempts: int = 0
    retry_at: float = 0.0

    def failed(self, e: Exception) -> None:
        now = time.monotonic()
        if self.error is None:
            self.failing_since = now
        self.error = str(e)
        self.attempts += 1
        delay = min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** min(self.attempts, 10))
        self.retry_at = now + random.uniform(delay / 2, delay)

    def succeeded(self) -> None:
        self.error, self.attempts, self.retry_at = None, 0, 0.0

    def due(self) -> bool:
        return time.monotonic() >= self.retry_at


@dataclass
class _Progress:
    archive: Section = field(default_factory=Section)
    snapshots: Section = field(default_factory=Section)
    quarantine: Section = field(default_factory=Section)


def archive_key(rel: str, first_lsn: int) -> str:
    return f"{rel}/wal/{segment_name(first_lsn)}"


NOTE = ".json"


@dataclass(frozen=True)
class ArchivedSegment:
    """What the archive's note says of one segment (the LSNs and commit times it holds)."""

    first_lsn: int
    last_lsn: int
    first_us: int
    last_us: int
    size: int
    crc32c: int

    def encode(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> ArchivedSegment | None:
        try:
            d = json.loads(data)
            return cls(*(int(d[f.name]) for f in dataclasses.fields(cls)))
        except (ValueError, KeyError, TypeError):
            return None


async def archived_segments(
    archive: ObjectStore, rel: str, known: dict[int, ArchivedSegment] | None = None
) -> list[ArchivedSegment]:
    """Every segment of store ``rel`` the archive holds whole (object and note agree),
    in LSN order. A segment without its note, or a note without its segment, is not
    archived: the restorable range ends before it. ``known``: notes already read (a
    live uploader's, by first LSN), used instead of fetching them again; what the
    archive holds is still its own listing."""
    sizes: dict[str, int] = {}
    notes: list[str] = []
    for o in await archive.list(f"{rel}/wal/"):
        name = o.key.rsplit("/", 1)[-1]
        if name.endswith(".wal" + NOTE):
            notes.append(o.key)
        elif name.endswith(".wal"):
            sizes[o.key] = o.size
    out = []
    for key in notes:
        name = key.rsplit("/", 1)[-1].removesuffix(".wal" + NOTE)
        seg = (known or {}).get(int(name)) if name.isdigit() else None
        if seg is None:
            seg = ArchivedSegment.decode(await archive.get_bytes(key))
        if seg is not None and sizes.get(key.removesuffix(NOTE)) == seg.size:
            out.append(seg)
    return sorted(out, key=lambda a: a.first_lsn)


def contiguous(segments: list[ArchivedSegment], after_lsn: int) -> list[ArchivedSegment]:
    """The run of archived segments holding every LSN from ``after_lsn + 1`` on, up to
    the first gap: what a replay starting after ``after_lsn`` can use."""
    run: list[ArchivedSegment] = []
    need = after_lsn + 1
    for seg in segments:
        if seg.last_lsn < need:
            continue  # wholly before the start
        if seg.first_lsn > need:
            break  # a gap
        run.append(seg)
        need = seg.last_lsn + 1
    return run


def snapshot_prefix(rel: str, lsn: int) -> str:
    return f"{rel}/checkpoints/{lsn:020d}/"


class Uploader:
    """Keeps one store's archive, snapshots and quarantine copies up to date."""

    def __init__(self, store: Store, storage: Storage, rel: str, owner: str):
        self.store = store
        self.storage = storage
        self.rel = rel  # the store's key prefix, e.g. "tenants/3"
        self.owner = owner  # for reason notes: the tenant's name, or "system"
        self.archived: dict[int, ArchivedSegment] = {}  # by first LSN: verified copies
        self.snapshots: dict[int, StoredSnapshot] = {}
        self.quarantined: list[StoredEntry] = []
        self.progress = _Progress()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loaded = False
        self._dirty_first: int | None = None  # the open segment seen holding records
        self._dirty_since = 0.0
        self._loud_at = 0.0
        self._pass_lock = asyncio.Lock()

    # ---- what the rest of the server asks -----------------------------------

    def is_archived(self, seg: SegmentInfo) -> bool:
        """May ``seg`` be deleted locally, as far as the archive is concerned?"""
        if self.storage.archive is None or seg.last_lsn < seg.first_lsn:
            return True
        copy = self.archived.get(seg.first_lsn)
        return copy is not None and copy.size == seg.bytes

    def healthy(self) -> bool:
        """No copy is failing just now."""
        p = self.progress
        return p.archive.error is None and p.snapshots.error is None

    def archive_error(self) -> str | None:
        return self.progress.archive.error

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"uploads-{self.rel}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def flush(self, timeout: float) -> bool:
        """Seal the open segment and copy everything now (a checkpoint, a test, a
        shutdown that wants the archive current); True if nothing is left behind."""
        wal = self.store.wal
        try:
            async with asyncio.timeout(timeout):
                if wal is not None and self.storage.archive is not None:
                    await wal.seal()
                for section in (self.progress.archive, self.progress.snapshots):
                    section.retry_at = 0.0
                await self._pass()
        except (TimeoutError, ObjectStoreError, OSError):
            return False
        return self.progress.archive.error is None and self.progress.snapshots.error is None

    # ---- the task -------------------------------------------------------------

    def _poll_seconds(self) -> float:
        return max(0.05, min(1.0, self.storage.max_delay / 10))

    async def _run(self) -> None:
        while True:
            try:
                await self._pass()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop the copies for good
                log.exception("%s: object storage pass failed", self.store.name)
            wal = self.store.wal
            waits = [asyncio.ensure_future(self._wake.wait())]
            if wal is not None:
                waits.append(asyncio.ensure_future(wal.sealed.wait()))
            try:
                await asyncio.wait(
                    waits, timeout=self._poll_seconds(), return_when="FIRST_COMPLETED"
                )
            finally:
                for w in waits:
                    w.cancel()
            self._wake.clear()
            if wal is not None:
                wal.sealed.clear()

    async def _pass(self) -> None:
        # One pass at a time: ``flush`` runs one beside the task's.
        async with self._pass_lock:
            await self._one_pass()

    async def _one_pass(self) -> None:
        if not self._loaded:
            if not self.progress.archive.due():
                return
            await self._load()
        if self.storage.archive is not None:
            await self._seal_if_due()
            if self.progress.archive.due():
                await self._archive()
        if self.progress.snapshots.due():
            await self._snapshots()
        if self.progress.quarantine.due():
            await self._quarantine()
        await self.store.prune_wal()
        self._say_so_if_behind()

    async def _load(self) -> None:
        """What storage already holds (a restart): which segments are archived, which
        snapshots and quarantined files exist. An unreachable store is tried again."""
        archive = self.storage.archive
        try:
            if archive is not None:
                for a in await archived_segments(archive, self.rel):
                    self.archived[a.first_lsn] = a
            for o in await self.storage.snapshots.list(f"{self.rel}/checkpoints/"):
                lsn_text, _, file = o.key.removeprefix(f"{self.rel}/checkpoints/").partition("/")
                if file == "MANIFEST" and lsn_text.isdigit():
                    lsn = int(lsn_text)
                    where = self.storage.snapshots.location(snapshot_prefix(self.rel, lsn))
                    self.snapshots[lsn] = StoredSnapshot(lsn, where, o.modified)
            q = self.storage.quarantine
            for o in await q.list(f"{self.rel}/quarantine/"):
                rest = o.key.removeprefix(f"{self.rel}/quarantine/")
                stamp, _, name = rest.partition("/")
                if not (stamp.isdigit() and name.endswith(quarantine.NOTE_SUFFIX)):
                    continue
                if "/" in name:
                    continue
                reason = quarantine.read_note(await q.get_bytes(o.key))
                file = name.removesuffix(quarantine.NOTE_SUFFIX)
                where = q.location(f"{self.rel}/quarantine/{stamp}/{file}")
                self.quarantined.append(StoredEntry(file, reason, int(stamp), where))
        except ObjectStoreError as e:
            self.archived.clear()
            self.snapshots.clear()
            self.quarantined.clear()
            for section in (self.progress.archive, self.progress.snapshots):
                section.failed(e)
            return
        self._loaded = True

    async def _seal_if_due(self) -> None:
        wal = self.store.wal
        if wal is None or wal.broken is not None:
            return
        if not wal.open_segment_has_records:
            self._dirty_first = None
            return
        first = wal.segments[-1].first_lsn
        now = time.monotonic()
        if self._dirty_first != first:
            self._dirty_first, self._dirty_since = first, now
        # Sealed early enough that the upload also fits in the promised delay.
        if now - self._dirty_since >= self.storage.max_delay - 2 * self._poll_seconds():
            await wal.seal()
            self._dirty_first = None

    async def _archive(self) -> None:
        wal, archive = self.store.wal, self.storage.archive
        if wal is None or archive is None or not self._loaded:
            return
        loop = asyncio.get_running_loop()
        section = self.progress.archive
        for seg in list(wal.segments[:-1]):
            if self.is_archived(seg):
                continue
            key = archive_key(self.rel, seg.first_lsn)
            try:
                size, crc = await loop.run_in_executor(None, file_crc, seg.path)
                first, last, first_us, last_us = await loop.run_in_executor(
                    None, record_times, seg.path
                )
                stored = await archive.put_file(key, seg.path)
                await self._verify(archive, key, stored, size, crc)
                copy = ArchivedSegment(first, last, first_us, last_us, size, crc)
                await archive.put_bytes(key + NOTE, copy.encode())
            except (ObjectStoreError, OSError, CorruptRecord) as e:
                if section.error is None:
                    log.warning(
                        "%s: archiving WAL segment %s failed (%s); it stays local and is retried",
                        self.store.name,
                        seg.path.name,
                        e,
                    )
                section.failed(e)
                return
            self.archived[seg.first_lsn] = copy
            log.debug("%s: archived %s", self.store.name, seg.path.name)
        if section.error is not None:
            log.info("%s: WAL archiving caught up", self.store.name)
        section.succeeded()

    async def _verify(
        self, store: ObjectStore, key: str, stored: ObjectInfo, size: int, crc: int
    ) -> None:
        info = await store.head(key)
        if info is None or info.size != size or stored.size != size:
            raise ObjectStoreError(f"[{store.section}] {key}: the stored copy has the wrong size")
        for got in (stored.crc32c, info.crc32c):
            if got is not None and got != crc:
                raise ObjectStoreError(f"[{store.section}] {key}: the stored copy fails its CRC32C")

    async def _snapshots(self) -> None:
        store = self.storage.snapshots
        section = self.progress.snapshots
        newest = max(self.snapshots, default=0)
        try:
            for path in reversed(ckpt.checkpoint_dirs(self.store.checkpoint_dir)):
                lsn = int(path.name)
                if lsn > newest:
                    await self._upload_snapshot(store, path, lsn)
                    newest = lsn
            await self._prune_snapshots(store)
        except (ObjectStoreError, OSError) as e:
            if section.error is None:
                log.warning("%s: storing a snapshot failed (%s); retrying", self.store.name, e)
            section.failed(e)
            return
        section.succeeded()

    async def _upload_snapshot(self, store: ObjectStore, path: Path, lsn: int) -> None:
        loop = asyncio.get_running_loop()
        prefix = snapshot_prefix(self.rel, lsn)
        try:
            names = sorted(p.name for p in path.iterdir() if p.name != "MANIFEST")
        except FileNotFoundError:
            return  # a newer checkpoint replaced it meanwhile
        for name in [*names, "MANIFEST"]:
            try:
                size, crc = await loop.run_in_executor(None, file_crc, path / name)
            except FileNotFoundError:
                return
            stored = await store.put_file(prefix + name, path / name)
            await self._verify(store, prefix + name, stored, size, crc)
        self.snapshots[lsn] = StoredSnapshot(lsn, store.location(prefix), time.time())
        log.info("%s: snapshot at LSN %d stored in %s", self.store.name, lsn, store.url)

    async def _prune_snapshots(self, store: ObjectStore) -> None:
        keep = sorted(self.snapshots, reverse=True)[: self.storage.keep_snapshots]
        for lsn in sorted(self.snapshots):
            if lsn in keep:
                continue
            prefix = snapshot_prefix(self.rel, lsn)
            await store.delete(prefix + "MANIFEST")  # first: what is left is no snapshot
            del self.snapshots[lsn]
            for o in await store.list(prefix):
                await store.delete(o.key)
        # Files of an upload cut short (no MANIFEST), older than the newest snapshot.
        if keep:
            for o in await store.list(f"{self.rel}/checkpoints/"):
                lsn_text = o.key.removeprefix(f"{self.rel}/checkpoints/").partition("/")[0]
                if lsn_text.isdigit() and int(lsn_text) < keep[-1] and int(lsn_text) not in keep:
                    await store.delete(o.key)

    async def _quarantine(self) -> None:
        store = self.storage.quarantine
        section = self.progress.quarantine
        loop = asyncio.get_running_loop()
        try:
            for entry in await loop.run_in_executor(
                None, quarantine.entries, self.store.quarantine_dir
            ):
                await self._move_entry(store, entry)
        except (ObjectStoreError, OSError) as e:
            if section.error is None:
                log.warning(
                    "%s: moving a file to quarantine storage failed (%s)", self.store.name, e
                )
            section.failed(e)
            return
        section.succeeded()

    async def _move_entry(self, store: ObjectStore, entry: quarantine.Entry) -> None:
        loop = asyncio.get_running_loop()
        base = f"{self.rel}/quarantine/{entry.stamp}/{entry.name}"
        files: list[tuple[str, Path]]
        if entry.path.is_dir():
            files = [
                (f"{base}/{p.relative_to(entry.path).as_posix()}", p)
                for p in sorted(entry.path.rglob("*"))
                if p.is_file()
            ]
        else:
            files = [(base, entry.path)]
        note_path = entry.path.with_name(entry.name + quarantine.NOTE_SUFFIX)
        if note_path.exists():
            files.append((base + quarantine.NOTE_SUFFIX, note_path))
        else:
            note = quarantine.note(self.owner, entry.name, entry.reason, entry.at_ms)
            await store.put_bytes(base + quarantine.NOTE_SUFFIX, note)
        for key, path in files:
            size, crc = await loop.run_in_executor(None, file_crc, path)
            stored = await store.put_file(key, path)
            await self._verify(store, key, stored, size, crc)

        def remove_local() -> None:
            if entry.path.is_dir():
                shutil.rmtree(entry.path)
            else:
                entry.path.unlink(missing_ok=True)
            note_path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                entry.path.parent.rmdir()  # only once the stamp directory is empty

        # Listed as stored before the local copy goes, so that _system.quarantine
        # always names a place that holds it.
        self.quarantined.append(
            StoredEntry(entry.name, entry.reason, entry.at_ms, store.location(base))
        )
        await loop.run_in_executor(None, remove_local)
        log.warning(
            "%s: quarantined %s is now in %s", self.store.name, entry.name, store.location(base)
        )

    def _say_so_if_behind(self) -> None:
        """Local WAL past max_local_bytes because the archive is failing: say so, loudly."""
        wal, section = self.store.wal, self.progress.archive
        if wal is None or section.error is None:
            return
        local = self.local_wal_bytes()
        if local <= self.storage.max_local_bytes:
            return
        now = time.monotonic()
        if now - self._loud_at >= LOUD_EVERY_SECONDS:
            self._loud_at = now
            log.error(
                "%s: %d bytes of WAL are kept locally, over wal_archive.max_local_bytes (%d), "
                "because the WAL archive has failed for %.0f s (%s); writes go on, and no "
                "unarchived segment is deleted",
                self.store.name,
                local,
                self.storage.max_local_bytes,
                now - section.failing_since,
                section.error,
            )

    def local_wal_bytes(self) -> int:
        wal = self.store.wal
        return sum(s.bytes for s in wal.segments) if wal is not None else 0

    def over_local_limit(self) -> bool:
        return (
            self.progress.archive.error is not None
            and self.local_wal_bytes() > self.storage.max_local_bytes
        )
