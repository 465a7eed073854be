"""BACKUP TENANT: one consistent snapshot of a tenant, streamed into a sealed envelope.

The snapshot is opened on the event loop in one step (the same copy-on-write
views a checkpoint reads, storage/snapshot.py: no row is copied), at the
tenant's last LSN, which becomes the watermark:
every write acknowledged before it is in the backup, none after it, none
half. Encoding, sealing and writing then run on a worker thread while
writes go on. Sections, in order:

    0  catalog: {tenant, tenant_id, meta (the checkpoint metadata: collections
       with size_bytes_estimate, indexes, tombstones), users, grants}
    1  tombstones: {collection: purge LSN}
    2… one per checkpoint part (a collection's rows, edges, CRDT documents or
       timeseries partitions): a {"part": name} item, then the part's items
Items are msgpack values written back to back (storage/codec.py).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from nodedb_server.backup.envelope import EnvelopeWriter, Header
from nodedb_server.backup.progress import Progress, in_worker
from nodedb_server.engines.base import RowCollection
from nodedb_server.engines.timeseries import TimeseriesCollection
from nodedb_server.errors import InsufficientPrivilege
from nodedb_server.storage import codec
from nodedb_server.storage.snapshot import prepare, release
from nodedb_server.tenants import keys
from nodedb_server.tenants.manager import TenantManager
from nodedb_server.tenants.tenant import Tenant

log = logging.getLogger("nodedb.backup")

COUNT_NAMES = ("documents", "indexes", "vectors", "edges", "kv", "timeseries", "crdt")


@dataclass
class Summary:
    tenant: str
    watermark_lsn: int
    bytes: int
    counts: dict[str, int]

    def row(self) -> tuple[Any, ...]:
        return (self.tenant, self.watermark_lsn, self.bytes, *(self.counts[c] for c in COUNT_NAMES))

    def notice(self) -> str:
        counts = ", ".join(f"{c} {self.counts[c]}" for c in COUNT_NAMES)
        return (
            f"tenant {self.tenant}: watermark LSN {self.watermark_lsn}, {self.bytes} bytes; "
            f"{counts}"
        )


@dataclass
class Snapshot:
    header: Header
    tenant_key: bytes
    catalog: dict[str, Any]
    tombstones: dict[str, int]
    parts: list[tuple[str, Iterable[Any]]]
    counts: dict[str, int]


async def take_snapshot(manager: TenantManager, tenant: Tenant) -> Snapshot:
    """Everything a backup holds, copied at one LSN on the event loop."""
    state = tenant.state
    wal = tenant.store.wal
    watermark = tenant.last_lsn
    meta, parts = state.checkpoint_parts()
    counts = dict.fromkeys(COUNT_NAMES, 0)
    for m in state.catalog.values():
        engine = state.engines[m.name]
        if isinstance(engine, TimeseriesCollection):
            counts["timeseries"] += len(engine)
            continue
        assert isinstance(engine, RowCollection)
        counts["kv" if engine.engine == "kv" else "documents"] += len(engine)
        counts["edges"] += engine.edges.count
        counts["crdt"] += len(engine.crdt)
        counts["vectors"] += sum(len(v) for v in engine.vectors.values())
    counts["indexes"] = len(state.indexes)
    info = manager.system.tenants[tenant.name]
    users = [u for u in manager.system.users.values() if u["tenant"] == tenant.name]
    grants = {u["name"]: manager.system.grants.get(u["name"], []) for u in users}
    if wal is not None:
        try:
            await wal.wait_durable(watermark)  # never back up what is not durable
        except BaseException:
            release(parts)
            raise
    header = Header(
        watermark_lsn=watermark,
        created_ms=int(time.time() * 1000),
        tenant_id=tenant.id,
        master_key_id=manager.master_key_id,
        wrapped_key=info["wrapped_key"],
        key_salt=os.urandom(16),
        tenant=tenant.name,
    )
    catalog = {
        "tenant": tenant.name,
        "tenant_id": tenant.id,
        "meta": meta,
        "users": users,
        "grants": grants,
    }
    return Snapshot(
        header,
        keys.unwrap(manager.master, info["wrapped_key"]),
        catalog,
        dict(state.tombstones),
        parts,
        counts,
    )


def write_envelope(
    snapshot: Snapshot, sink: BinaryIO, progress: Callable[[int], None] | None = None
) -> Summary:
    """Seal the snapshot into ``sink`` (on a worker thread); returns the figures.
    The snapshot's views are released whether or not this completes."""
    try:
        prepare(snapshot.parts)
        writer = EnvelopeWriter(sink, snapshot.tenant_key, snapshot.header)
        writer.section()
        writer.write(codec.pack(snapshot.catalog))
        writer.end_section()
        writer.section()
        writer.write(codec.pack(snapshot.tombstones))
        writer.end_section()
        for part, items in snapshot.parts:
            writer.section()
            writer.write(codec.pack({"part": part}))
            for data, _n in codec.packed_batches(items):
                writer.write(data)
                if progress is not None:
                    progress(writer.bytes_written)
            writer.end_section()
        writer.finish()
        if progress is not None:
            progress(writer.bytes_written)  # the final count, trailer included
    finally:
        release(snapshot.parts)
    return Summary(
        snapshot.header.tenant, snapshot.header.watermark_lsn, writer.bytes_written, snapshot.counts
    )


def check_path(raw: str, allowed: list[Path], must_exist: bool) -> Path:
    """An absolute path inside an allowed directory, symlinks resolved (else 42501)."""
    if not os.path.isabs(raw):
        raise InsufficientPrivilege(f"backup path {raw!r} must be absolute")
    if ".." in Path(raw).parts:
        raise InsufficientPrivilege(f"backup path {raw!r} must not contain '..'")
    resolved = Path(os.path.realpath(raw))
    for base in allowed:
        root = Path(os.path.realpath(base))
        if resolved.parent == root or root in resolved.parents:
            if must_exist and not resolved.is_file():
                raise InsufficientPrivilege(f"backup file {raw!r} does not exist")
            return resolved
    raise InsufficientPrivilege(
        f"backup path {raw!r} is outside the directories in [backup] allowed_dirs"
    )


async def backup_to_file(
    manager: TenantManager,
    tenant: Tenant,
    path: Path,
    overwrite: bool,
    progress: Progress,
) -> Summary:
    """Temporary name, fsync, rename, fsync of the directory: the file appears only whole."""
    if path.exists() and not overwrite:
        raise InsufficientPrivilege(f"{path} exists; add WITH (overwrite) to replace it")
    snapshot = await take_snapshot(manager, tenant)
    tmp = path.with_name(_partial_name(path.name, os.getpid()))

    def run() -> Summary:
        fs = manager.fs
        try:
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                summary = write_envelope(snapshot, f, progress)
                f.flush()
                fs.fsync(f.fileno())
            os.replace(tmp, path)
            fs.fsync_dir(path.parent)
            return summary
        finally:
            release(snapshot.parts)  # if the file could not even be opened
            tmp.unlink(missing_ok=True)

    return await in_worker(progress, run)


def _partial_name(name: str, pid: int) -> str:
    return f".{name}.{pid}.partial"


_PARTIAL = re.compile(r"\..+\.(\d+)\.partial")


def remove_partials(allowed: list[Path]) -> None:
    """At start: the temporary files of backups whose server was killed mid-write.

    Allowed directories may be shared by servers on other data directories, so a
    file whose pid is another live process is left to it."""
    for base in allowed:
        for folder, _dirs, files in os.walk(base):
            for name in files:
                m = _PARTIAL.fullmatch(name)
                if m and not _alive_other(int(m.group(1))):
                    log.warning("removing %s, left by a backup that did not finish", name)
                    (Path(folder) / name).unlink(missing_ok=True)


def _alive_other(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a live process of another user
        return True
    return True
