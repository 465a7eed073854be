"""Point-in-time restore: a backup (or a stored snapshot), then archived WAL up to a target.

    RESTORE TENANT t FROM '<backup>' UNTIL LSN n | UNTIL TIMESTAMP '..'
    RESTORE TENANT t FROM SNAPSHOT UNTIL ..

The source is staged as a plain restore stages it (one checkpoint at LSN C in a
new tenant directory, under a fresh tenant id N) and loaded into a new state.
Then the archived segments of the source's tenant id X that follow its
watermark W are fetched into memory, each while the one before it is applied,
and checked (size and CRC32C against the archive's note, then every record's
CRC32C and GCM tag under the source's tenant key, as it is read). The records
with W < lsn, up to and including the last one at or before the target, are
applied to the new state in order, renumbered C+1, C+2, ... (type, commit time
and body kept): that is one pass, as a crash recovery's replay is. The state is
then written as the staged directory's checkpoint, in place of C, and the
switched tenant opens from it. The switch is the plain restore's: any failure
before it removes the staging directory and leaves the tenant as it was.

While it replays, a PITR holds the restored state in memory next to the
tenant's current one (which stopped serving when the restore began).

Restorable range of a source: from its watermark (LSN W, and its creation
time) to the last record of the run of archived segments that follows W
without a gap (storage/uploads.py ``contiguous``). A target outside it is
refused with the range; nothing quietly restores "the latest".

Tombstones: a plain restore never brings back a collection the live tenant
purged after the backup's watermark. A PITR reproduces history up to the
target instead, so it starts from the source's own tombstones and lets the
replayed records apply the drops and purges that happened before the target;
a collection purged after the target existed at the target, and is restored.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import google_crc32c
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nodedb_server.backup.envelope import EnvelopeError, Header, read_header
from nodedb_server.backup.progress import Progress, in_worker
from nodedb_server.backup.restore import Staged, count_item
from nodedb_server.backup.writer import COUNT_NAMES, Summary
from nodedb_server.errors import (
    DBError,
    InvalidParameterValue,
    StorageFailure,
)
from nodedb_server.objectstore.base import ObjectNotFound, ObjectStore, ObjectStoreError
from nodedb_server.storage import checkpoint as ckpt
from nodedb_server.storage import snapshot
from nodedb_server.storage.fsio import FileIO
from nodedb_server.storage.gcpause import gc_paused
from nodedb_server.storage.records import CorruptRecord, Record
from nodedb_server.storage.uploads import (
    ArchivedSegment,
    Storage,
    archive_key,
    archived_segments,
    contiguous,
    snapshot_prefix,
)
from nodedb_server.storage.wal import SegmentScan
from nodedb_server.tenants import keys
from nodedb_server.tenants.catalog import TenantState, clamp_events
from nodedb_server.tenants.manager import TenantManager
from nodedb_server.tenants.tenant import Tenant

log = logging.getLogger("nodedb.backup")

# How long a restore waits for the live tenant's open segment to be sealed and
# archived, so that a target of a moment ago is restorable.
FLUSH_SECONDS = 10.0


def tenant_rel(tenant_id: int) -> str:
    """A tenant's key prefix in object storage (its directory in the data directory)."""
    return f"tenants/{tenant_id}"


def format_us(us: int) -> str:
    return dt.datetime.fromtimestamp(us / 1e6, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


@dataclass(frozen=True)
class Target:
    """UNTIL LSN n (``lsn``) or UNTIL TIMESTAMP (``us``, microseconds since the epoch)."""

    lsn: int | None = None
    us: int | None = None

    def __str__(self) -> str:
        return f"LSN {self.lsn}" if self.lsn is not None else format_us(self.us or 0)

    def covers(self, rec: Record) -> bool:
        """Is ``rec`` at or before the target?"""
        if self.lsn is not None:
            return rec.lsn <= self.lsn
        return rec.commit_us <= (self.us or 0)

    def cut(self, records: list[Record]) -> int:
        """How many of ``records`` (in LSN order) come before the first one past the
        target: the replay stops there."""
        if not records or (self.lsn is not None and records[-1].lsn <= self.lsn):
            return len(records)  # LSNs rise: all of them (commit times need not)
        return next((i for i, rec in enumerate(records) if not self.covers(rec)), len(records))


@dataclass(frozen=True)
class RestoreRange:
    """What one source can be restored to: from its watermark to the end of the archive
    run after it. ``gap_at`` is the first missing LSN when the archive goes on past a gap."""

    source: str
    start_lsn: int
    start_us: int
    end_lsn: int
    end_us: int
    gap_at: int | None
    run: tuple[ArchivedSegment, ...]

    def describe(self, times: bool) -> str:
        text = f"LSN {self.start_lsn} to {self.end_lsn}"
        if times:
            text += f" ({format_us(self.start_us)} to {format_us(self.end_us)})"
        if self.gap_at is not None:
            text += f"; the archive has a gap at LSN {self.gap_at}"
        return text


def restore_range(
    source: str, segments: list[ArchivedSegment], start_lsn: int, start_us: int
) -> RestoreRange:
    """The range of a source at LSN ``start_lsn`` (taken at ``start_us``), given every
    segment the archive holds whole, in LSN order."""
    run = contiguous(segments, start_lsn)
    end_lsn, end_us = (run[-1].last_lsn, run[-1].last_us) if run else (start_lsn, start_us)
    gap_at = end_lsn + 1 if any(s.last_lsn > end_lsn for s in segments) else None
    return RestoreRange(
        source, start_lsn, start_us, end_lsn, max(end_us, start_us), gap_at, tuple(run)
    )


def needed_segments(r: RestoreRange, target: Target, tenant: str) -> list[ArchivedSegment]:
    """The segments a replay to ``target`` reads, or 22023 naming the range if the target
    is outside it."""
    if target.lsn is not None:
        inside = r.start_lsn <= target.lsn <= r.end_lsn
    else:
        inside = r.start_us <= (target.us or 0) <= r.end_us
    if not inside:
        raise InvalidParameterValue(
            f"tenant {tenant} cannot be restored to {target}: {r.source} restores to "
            f"{r.describe(target.us is not None)}; nothing was changed"
        )
    if target.lsn is not None:
        return [s for s in r.run if s.first_lsn <= target.lsn]
    return [s for s in r.run if s.first_us <= (target.us or 0)]


# ---- reading the archive ------------------------------------------------------------


def require_archive(storage: Storage | None) -> ObjectStore:
    archive = storage.archive if storage is not None else None
    if archive is None:
        raise DBError(
            "point-in-time restore replays archived WAL: set [wal_archive] enabled = true "
            "(this server does not archive its WAL)",
            sqlstate="55000",
        )
    return archive


def unreachable(store: ObjectStore, e: ObjectStoreError) -> StorageFailure:
    return StorageFailure(f"[{store.section}] {store.url} cannot be read: {e}; nothing was changed")


async def archive_listing(
    manager: TenantManager, archive: ObjectStore, tenant_id: int
) -> list[ArchivedSegment]:
    """The archived segments of ``tenant_id``: one listing of the archive, and the notes
    a live tenant's uploader already holds are not fetched again."""
    known = None
    for tenant in list(manager.tenants.values()):
        uploader = tenant.store.uploader
        if tenant.id == tenant_id and uploader is not None:
            known = dict(uploader.archived)
    try:
        return await archived_segments(archive, tenant_rel(tenant_id), known)
    except ObjectStoreError as e:
        raise unreachable(archive, e) from None


@dataclass
class Replayed:
    """What a replay read: how many records, and the source LSN and time it reached."""

    records: int
    until_lsn: int
    until_us: int
    seconds: float = 0.0  # fetching, checking and applying the records
    checkpoint_seconds: float = 0.0  # writing the result as the staged checkpoint


def damaged(key: str, why: str) -> DBError:
    return DBError(
        f"archived WAL segment {key} is damaged ({why}); nothing was changed", sqlstate="XX001"
    )


def segment_records(
    data: bytes,
    key: str,
    seg: ArchivedSegment,
    aead: AESGCM,
    source_id: int,
    after_lsn: int,
    target: Target,
) -> list[Record]:
    """The records of one fetched segment above ``after_lsn`` and at or before the
    target. The whole segment is checked first; raises XX001 naming it on any damage."""
    if (len(data), google_crc32c.value(data)) != (seg.size, seg.crc32c):
        raise damaged(key, "its size or CRC32C differs from the archive's note")
    try:
        # The uploader checked every record's CRC32C before it took the note's, and the
        # note's matched just now: each record's GCM tag is what is left to verify.
        reader = SegmentScan(data, aead, source_id, check_crc=False)
    except CorruptRecord as e:
        raise damaged(key, str(e)) from None
    if reader.header.first_lsn != seg.first_lsn:
        raise damaged(
            key, f"it starts at LSN {reader.header.first_lsn}, its note says {seg.first_lsn}"
        )
    records = list(reader)
    if reader.error is not None:
        raise damaged(key, reader.error)
    if reader.last_lsn != seg.last_lsn:
        raise damaged(key, f"it ends at LSN {reader.last_lsn}, its note says {seg.last_lsn}")
    if records and records[0].lsn <= after_lsn:
        records = [rec for rec in records if rec.lsn > after_lsn]
    return records[: target.cut(records)]


async def replay(
    archive: ObjectStore,
    source_id: int,
    segments: list[ArchivedSegment],
    aead: AESGCM,
    after_lsn: int,
    target: Target,
    apply: Callable[[list[Record]], None] | None,
    progress: Progress,
) -> Replayed:
    """Hand the records of ``segments`` above ``after_lsn``, up to the target, to
    ``apply`` (on a worker thread; None: only check and count them, DRY RUN). Segments
    are read into memory, never written to disk, and the next one is fetched while
    this one is applied."""
    started = time.monotonic()
    done = Replayed(0, after_lsn, 0)

    def consume(data: bytes, key: str, seg: ArchivedSegment) -> bool:
        """True once the target is reached."""
        with gc_paused():
            # The whole segment is read, then applied (as recovery does it too): measured
            # here, about a fifth faster than applying each record as it is read.
            records = segment_records(data, key, seg, aead, source_id, done.until_lsn, target)
            if apply is not None:
                apply(records)
        if records:
            done.records += len(records)
            done.until_lsn, done.until_us = records[-1].lsn, records[-1].commit_us
        return done.until_lsn < seg.last_lsn

    async def fetch(seg: ArchivedSegment) -> bytes:
        key = archive_key(tenant_rel(source_id), seg.first_lsn)
        try:
            return await archive.get_bytes(key)
        except ObjectNotFound:
            raise DBError(
                f"archived WAL segment {key} is missing from {archive.url}; nothing was changed",
                sqlstate="58P01",
            ) from None
        except ObjectStoreError as e:
            raise unreachable(archive, e) from None

    ahead: asyncio.Task[bytes] | None = None
    try:
        for i, seg in enumerate(segments):
            data = await (ahead if ahead is not None else fetch(seg))
            ahead = None
            if i + 1 < len(segments):
                ahead = asyncio.ensure_future(fetch(segments[i + 1]))
            key = archive_key(tenant_rel(source_id), seg.first_lsn)
            if await in_worker(progress, consume, data, key, seg):
                break
    finally:
        if ahead is not None:
            ahead.cancel()
            await asyncio.wait([ahead])
            if not ahead.cancelled():
                ahead.exception()  # a failed fetch of a segment no longer wanted is no news
    done.seconds = time.monotonic() - started
    return done


def load_staged(root: Path, aead: AESGCM, tenant_id: int) -> TenantState:
    """The state of the staged tenant directory ``root``: its one checkpoint."""
    state = TenantState()
    path = ckpt.checkpoint_dirs(root / "checkpoints")[0]
    with gc_paused():
        manifest = ckpt.validate(path, aead, tenant_id)
        state.load_checkpoint(manifest["meta"], ckpt.part_reader(path, manifest, aead, tenant_id))
    return state


def checkpoint_staged(
    fs: FileIO, root: Path, aead: AESGCM, tenant_id: int, state: TenantState
) -> None:
    """Replace the staged directory's checkpoint by one of ``state`` (the replayed
    records applied), so the switched tenant opens at the target. The older checkpoint
    goes: no WAL lies between the two, so falling back to it would lose the replay."""
    older = ckpt.checkpoint_dirs(root / "checkpoints")
    state.clamp_events(state.last_lsn)  # the replayed records are in no WAL of it
    meta, parts = state.checkpoint_parts()
    snapshot.prepare(parts)
    try:
        ckpt.write_checkpoint(
            fs, root / "checkpoints", aead, tenant_id, state.last_lsn, meta, parts
        )
    finally:
        snapshot.release(parts)
    for path in older:
        shutil.rmtree(path)
    fs.fsync_dir(root / "checkpoints")


async def replay_into(
    manager: TenantManager,
    staged: Staged,
    root: Path,
    source_id: int,
    needed: list[ArchivedSegment],
    source_aead: AESGCM,
    after_lsn: int,
    target: Target,
    progress: Progress,
) -> Replayed:
    """Apply the archived records to the staged tenant (its checkpoint at ``staged.lsn``)
    and leave it as one checkpoint at the target."""
    archive = require_archive(manager.storage)
    aead = AESGCM(staged.tenant_key)
    state = await in_worker(progress, load_staged, root, aead, staged.tenant_id)
    next_lsn = staged.lsn + 1

    def apply(records: list[Record]) -> None:
        nonlocal next_lsn
        # Renumbered to follow the staged checkpoint. The archived LSNs run on without a
        # gap (each frame follows the one before, each segment the last), so this is one
        # shift; were there a gap, each record is given its number.
        if records and records[-1].lsn - records[0].lsn == len(records) - 1:
            state.replay(records, next_lsn - records[0].lsn)
        else:
            state.replay(
                Record(n, r.rtype, r.commit_us, r.body) for n, r in enumerate(records, next_lsn)
            )
        next_lsn += len(records)

    replayed = await replay(
        archive, source_id, needed, source_aead, after_lsn, target, apply, progress
    )
    started = time.monotonic()
    if replayed.records:
        await in_worker(
            progress, checkpoint_staged, manager.fs, root, aead, staged.tenant_id, state
        )
    replayed.checkpoint_seconds = time.monotonic() - started
    log.info(
        "point-in-time restore of tenant %s: %d archived records replayed (source LSN %d to "
        "%d) in %.3fs, %.0f records/s; then the checkpoint in %.3fs",
        staged.summary.tenant,
        replayed.records,
        after_lsn,
        replayed.until_lsn,
        replayed.seconds,
        replayed.records / replayed.seconds if replayed.seconds else 0.0,
        replayed.checkpoint_seconds,
    )
    return replayed


def _fresh_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


# ---- snapshots in snapshot storage ----------------------------------------------------


@dataclass(frozen=True)
class StoredCheckpoint:
    lsn: int
    created_us: int
    location: str


async def stored_checkpoints(
    storage: Storage, tenant_id: int, aead: AESGCM, work: Path
) -> list[StoredCheckpoint]:
    """The tenant's snapshots in snapshot storage, newest first, each with the creation
    time its MANIFEST records (the MANIFEST is fetched into ``work`` and authenticated)."""
    store = storage.snapshots
    rel = tenant_rel(tenant_id)
    loop = asyncio.get_running_loop()
    out = []
    try:
        lsns = sorted(
            {
                int(o.key.removeprefix(f"{rel}/checkpoints/").partition("/")[0])
                for o in await store.list(f"{rel}/checkpoints/")
                if o.key.endswith("/MANIFEST")
                and o.key.removeprefix(f"{rel}/checkpoints/").partition("/")[0].isdigit()
            },
            reverse=True,
        )
        for lsn in lsns:
            where = work / "manifest" / f"{lsn:020d}"
            await loop.run_in_executor(None, _fresh_dir, where)
            await store.get_file(snapshot_prefix(rel, lsn) + "MANIFEST", where / "MANIFEST")
            try:
                manifest = await loop.run_in_executor(
                    None, ckpt.read_manifest, where, aead, tenant_id
                )
            except Exception:
                continue  # a damaged snapshot is no restore point
            location = store.location(snapshot_prefix(rel, lsn))
            out.append(StoredCheckpoint(manifest["lsn"], manifest["created_ms"] * 1000, location))
    except ObjectStoreError as e:
        raise unreachable(store, e) from None
    finally:
        await loop.run_in_executor(None, shutil.rmtree, work / "manifest", True)
    return out


def pick_snapshot(snapshots: list[StoredCheckpoint], target: Target) -> StoredCheckpoint | None:
    """The newest snapshot at or before the target."""
    for snap in snapshots:  # newest first
        if (target.lsn is not None and snap.lsn <= target.lsn) or (
            target.us is not None and snap.created_us <= target.us
        ):
            return snap
    return None


async def fetch_snapshot(storage: Storage, tenant_id: int, lsn: int, into: Path) -> None:
    store = storage.snapshots
    prefix = snapshot_prefix(tenant_rel(tenant_id), lsn)
    await asyncio.get_running_loop().run_in_executor(None, _fresh_dir, into)
    try:
        for o in await store.list(prefix):
            name = o.key.removeprefix(prefix)
            if "/" not in name:
                await store.get_file(o.key, into / name)
    except ObjectStoreError as e:
        raise unreachable(store, e) from None


def stage_snapshot(
    fetched: Path,
    source_id: int,
    tenant_key: bytes,
    target: str,
    new_id: int,
    root: Path,
    base_lsn: int,
    catalog: dict[str, Any],
    fs: FileIO,
) -> Staged:
    """A fetched snapshot of tenant ``source_id`` rewritten as the one checkpoint of the
    new tenant directory ``root`` (its files are sealed for their tenant id). Runs on a
    worker thread; raises XX001 if the snapshot does not verify."""
    aead = AESGCM(tenant_key)
    try:
        manifest = ckpt.validate(fetched, aead, source_id)
    except Exception as e:
        raise DBError(
            f"the stored snapshot is damaged ({e}); nothing was changed", sqlstate="XX001"
        ) from None
    meta = dict(manifest["meta"])
    lsn = max(base_lsn, manifest["lsn"]) + 1
    meta["last_lsn"] = lsn
    clamp_events(meta, lsn)
    read_part = ckpt.part_reader(fetched, manifest, aead, source_id)
    counts = dict.fromkeys(COUNT_NAMES, 0)
    kinds = {f"c{c['meta']['id']}": c["meta"]["engine"] for c in meta.get("collections", [])}
    ids = {c["meta"]["name"]: f"c{c['meta']['id']}" for c in meta.get("collections", [])}
    vector_fields: dict[str, list[tuple[str, int]]] = {}
    for index in meta.get("indexes", []):
        if index.get("kind") == "vector" and index.get("field"):
            vector_fields.setdefault(ids[index["collection"]], []).append(
                (index["field"], index["dim"])
            )

    def items(part: str) -> Iterator[Any]:
        for item in read_part(part):
            count_item(counts, kinds, vector_fields, part, item)
            yield item

    parts = ((f["part"], items(f["part"])) for f in manifest["files"])
    fs.makedirs(root / "wal")
    info = ckpt.write_checkpoint(fs, root / "checkpoints", aead, new_id, lsn, meta, parts)
    counts["indexes"] = len(meta.get("indexes", []))
    summary = Summary(target, manifest["lsn"], info.bytes, counts)
    return Staged(summary, tenant_key, new_id, catalog, [], lsn)


# ---- what a tenant can be restored to --------------------------------------------------


async def flush_if_live(manager: TenantManager, tenant_id: int) -> None:
    """If ``tenant_id`` is a live tenant's, archive its open segment now, so that a
    target of a moment ago is in the archive."""
    for tenant in list(manager.tenants.values()):
        uploader = tenant.store.uploader
        if tenant.id == tenant_id and uploader is not None:
            await uploader.flush(FLUSH_SECONDS)


async def backup_range(manager: TenantManager, header: Header, source: str) -> RestoreRange:
    archive = require_archive(manager.storage)
    await flush_if_live(manager, header.tenant_id)
    segments = await archive_listing(manager, archive, header.tenant_id)
    return restore_range(source, segments, header.watermark_lsn, header.created_ms * 1000)


async def snapshot_ranges(
    manager: TenantManager, tenant: Tenant, scratch: Path
) -> list[tuple[StoredCheckpoint, RestoreRange]]:
    """Each stored snapshot of the tenant, newest first, with the range it restores to."""
    storage = manager.storage
    archive = require_archive(storage)
    assert storage is not None
    await flush_if_live(manager, tenant.id)
    aead = AESGCM(tenant_key(manager, tenant.name))
    snapshots = await stored_checkpoints(storage, tenant.id, aead, scratch)
    segments = await archive_listing(manager, archive, tenant.id)
    return [
        (snap, restore_range(f"snapshot {snap.location}", segments, snap.lsn, snap.created_us))
        for snap in snapshots
    ]


def scratch_dir(manager: TenantManager) -> Path:
    """A directory for files a statement fetches and removes again. It is under the
    data directory's tenants/ and names no tenant, so a crash leaves nothing behind: the
    next boot removes it with the other orphans."""
    return manager.data_dir / "tenants" / f"pitr-{secrets.token_hex(6)}"


def tenant_key(manager: TenantManager, name: str) -> bytes:
    return keys.unwrap(manager.master, manager.system.tenants[name]["wrapped_key"])


async def restore_points(manager: TenantManager, name: str) -> list[RestoreRange]:
    """What tenant ``name`` can be restored to: from each of its backup files under
    [backup] allowed_dirs, and from each stored snapshot of its current id."""
    require_archive(manager.storage)
    loop = asyncio.get_running_loop()
    headers = await loop.run_in_executor(
        None, lambda: list(backup_headers(manager.cfg.backup_dirs, name))
    )
    out = [await backup_range(manager, header, f"backup {path}") for path, header in headers]
    live = manager.tenants.get(name)
    if live is not None:
        scratch = scratch_dir(manager)
        try:
            out += [span for _, span in await snapshot_ranges(manager, live, scratch)]
        finally:
            await loop.run_in_executor(None, shutil.rmtree, scratch, True)
    return out


def backup_headers(dirs: list[Path], tenant: str) -> Iterator[tuple[Path, Header]]:
    """The backups of ``tenant`` directly in ``dirs`` (headers only; files that are no
    backup, or cannot be read, are passed over)."""
    for d in dirs:
        with contextlib.suppress(OSError):
            for path in sorted(d.iterdir()):
                if not path.is_file() or path.is_symlink():
                    continue
                try:
                    with open(path, "rb") as f:
                        header = read_header(f)
                except (OSError, EnvelopeError):
                    continue
                if header.tenant == tenant:
                    yield path, header
