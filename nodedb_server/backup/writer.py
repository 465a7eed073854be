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

import errno
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from nodedb_server.backup.envelope import EnvelopeError, EnvelopeWriter, Header, read_header
from nodedb_server.backup.progress import Progress, in_worker
from nodedb_server.engines.base import RowCollection
from nodedb_server.engines.timeseries import TimeseriesCollection
from nodedb_server.errors import (
    DBError,
    DiskFull,
    InsufficientPrivilege,
    InvalidParameterValue,
    UndefinedFile,
    WrongObjectType,
)
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
    """An absolute path inside an allowed directory, symlinks resolved (else 42501), that
    can be read (``must_exist``) or created: see ``file_error`` for the SQLSTATEs."""
    if not os.path.isabs(raw):
        raise InsufficientPrivilege(f"backup path {raw!r} must be absolute")
    if ".." in Path(raw).parts:
        raise InsufficientPrivilege(f"backup path {raw!r} must not contain '..'")
    resolved = Path(os.path.realpath(raw))
    for base in allowed:
        root = Path(os.path.realpath(base))
        if resolved.parent == root or root in resolved.parents:
            if must_exist:
                _check_source(resolved, raw)
            else:
                _check_directory(resolved, raw)
            return resolved
    raise InsufficientPrivilege(
        f"backup path {raw!r} is outside the directories in [backup] allowed_dirs"
    )


# PostgreSQL's errcode_for_file_access, plus ENAMETOOLONG (which PostgreSQL leaves at
# XX000): a path too long for the filesystem is a bad value given by the user.
_FILE_ERRORS: dict[int, type[DBError]] = {
    errno.EPERM: InsufficientPrivilege,
    errno.EACCES: InsufficientPrivilege,
    errno.EROFS: InsufficientPrivilege,
    errno.ENOENT: UndefinedFile,
    errno.ENOTDIR: WrongObjectType,
    errno.EISDIR: WrongObjectType,
    errno.ENAMETOOLONG: InvalidParameterValue,
    errno.ENOSPC: DiskFull,
    errno.EDQUOT: DiskFull,
}


def file_error(e: OSError, doing: str) -> DBError:
    """The SQL error for an OSError met while ``doing`` (which names the path)."""
    kind = _FILE_ERRORS.get(e.errno or 0, DBError)
    return kind(f"{doing}: {e.strerror or type(e).__name__}")


def _check_source(path: Path, raw: str) -> None:
    try:
        st = os.stat(path)
    except OSError as e:
        raise file_error(e, f'could not open backup file "{raw}"') from None
    if stat.S_ISDIR(st.st_mode):
        raise WrongObjectType(f'could not open backup file "{raw}": it is a directory')
    if not stat.S_ISREG(st.st_mode):
        raise WrongObjectType(f'could not open backup file "{raw}": it is not a regular file')


def _check_directory(path: Path, raw: str) -> None:
    """The directory a backup is written into exists, and the name fits in it."""
    try:
        st = os.stat(path.parent)
    except OSError as e:
        raise file_error(e, f'could not create backup file "{raw}"') from None
    if not stat.S_ISDIR(st.st_mode):
        raise WrongObjectType(
            f'could not create backup file "{raw}": "{path.parent}" is not a directory'
        )
    try:
        name_max = os.pathconf(path.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    size = len(os.fsencode(path.name))
    if size > name_max:
        raise InvalidParameterValue(
            f'could not create backup file "{raw}": its name is {size} bytes, '
            f"more than the {name_max} this filesystem allows"
        )


def open_backup_file(path: Path, raw: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as e:
        raise file_error(e, f'could not open backup file "{raw}"') from None


def backup_of(path: Path) -> str | None:
    """The tenant an existing file is a backup of (its header says); None: not a backup."""
    try:
        with open(path, "rb") as f:
            return read_header(f).tenant
    except (OSError, EnvelopeError):
        return None


def check_target(path: Path, overwrite: bool, may_replace: Callable[[str | None], bool]) -> None:
    """Whether a backup may be written to ``path``: a directory is never replaced, an
    existing file only WITH (overwrite) and if ``may_replace`` the tenant it is a backup
    of (None: it is no backup). Read before anything is written, and again at the end."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise file_error(e, f'could not create backup file "{path}"') from None
    if stat.S_ISDIR(st.st_mode):
        raise WrongObjectType(f'could not create backup file "{path}": it is a directory')
    if not overwrite:
        raise InsufficientPrivilege(f"{path} exists; add WITH (overwrite) to replace it")
    if not stat.S_ISREG(st.st_mode):
        raise WrongObjectType(f'could not replace "{path}": it is not a regular file')
    if not may_replace(backup_of(path)):
        raise InsufficientPrivilege(
            f'permission denied to overwrite "{path}": it is not a backup of a tenant '
            "this user holds GRANT BACKUP on"
        )


def partial_name() -> str:
    """A temporary name of fixed length (it fits wherever the final name does), unique
    among concurrent backups; the pid tells a later start whose file it was."""
    return f".nodedb-backup-{secrets.token_hex(8)}.{os.getpid()}.partial"


async def backup_to_file(
    manager: TenantManager,
    tenant: Tenant,
    path: Path,
    overwrite: bool,
    may_replace: Callable[[str | None], bool],
    progress: Progress,
) -> Summary:
    """Temporary name, fsync, rename, fsync of the directory: the file appears only whole."""
    check_target(path, overwrite, may_replace)
    snapshot = await take_snapshot(manager, tenant)
    tmp = path.with_name(partial_name())

    def run() -> Summary:
        fs = manager.fs
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError as e:
                raise file_error(e, f'could not create backup file "{path}"') from None
            try:
                with os.fdopen(fd, "wb") as f:
                    summary = write_envelope(snapshot, f, progress)
                    f.flush()
                    fs.fsync(f.fileno())
                check_target(path, overwrite, may_replace)  # what appeared there meanwhile
                os.replace(tmp, path)
                fs.fsync_dir(path.parent)
            except OSError as e:  # a full disk, above all: 53100, not an internal error
                raise file_error(e, f'could not write backup file "{path}"') from None
            return summary
        finally:
            release(snapshot.parts)  # if the file could not even be opened
            tmp.unlink(missing_ok=True)

    return await in_worker(progress, run)


_PARTIAL = re.compile(r"\.nodedb-backup-[0-9a-f]+\.(\d+)\.partial")  # partial_name()


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
