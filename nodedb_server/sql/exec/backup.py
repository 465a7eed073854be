"""BACKUP TENANT and RESTORE TENANT, to and from files or the client (COPY)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import logging
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nodedb_server import types as t
from nodedb_server.backup import pitr
from nodedb_server.backup.envelope import EnvelopeError, EnvelopeReader
from nodedb_server.backup.progress import (
    Progress,
    ProgressReader,
    in_worker,
)
from nodedb_server.backup.restore import Staged, dry_run, open_backup, stage_restore, verify_backup
from nodedb_server.backup.stream import stream_backup, stream_restore
from nodedb_server.backup.switch import replace_tenant, switch_tenant
from nodedb_server.backup.writer import (
    COUNT_NAMES,
    Summary,
    backup_to_file,
    check_path,
    open_backup_file,
)
from nodedb_server.errors import (
    DataError,
    InsufficientPrivilege,
    InvalidParameterValue,
    ObjectInUse,
    UndefinedObject,
)
from nodedb_server.sql import ast
from nodedb_server.sql.registry import statement
from nodedb_server.sql.result import Column, CopyIn, CopyOut, Result
from nodedb_server.tenants import keys
from nodedb_server.tenants.manager import DEFAULT_TENANT, TenantManager
from nodedb_server.tenants.operations import Operation, Operations
from nodedb_server.tenants.tenant import Tenant

if TYPE_CHECKING:
    from nodedb_server.sql.session import Session

log = logging.getLogger("nodedb.sql")


T = TypeVar("T")


BACKUP_COLUMNS = [("tenant", t.TEXT), ("watermark_lsn", t.INT8), ("bytes", t.INT8)] + [
    (name, t.INT8) for name in COUNT_NAMES
]
# RESTORE .. UNTIL: the figures, then the source LSN and commit time of the last record
# replayed (the watermark, and no time, when none was) and how many were replayed.
PITR_COLUMNS = BACKUP_COLUMNS + [
    ("until_lsn", t.INT8),
    ("until_time", t.TIMESTAMPTZ),
    ("records_replayed", t.INT8),
]
RESTORE_RANGE_COLUMNS = [
    ("tenant", t.TEXT),
    ("source", t.TEXT),
    ("from_lsn", t.INT8),
    ("to_lsn", t.INT8),
    ("from_time", t.TIMESTAMPTZ),
    ("to_time", t.TIMESTAMPTZ),
]


def backup_tenant(s: Session, name: str, restore: bool = False) -> Tenant:
    """The tenant a BACKUP or DRY RUN names, if this user may act on it (else 42501)."""
    name = s.manager.tenant_name(name)
    user = s.user
    if not user["superuser"] and (restore or not s.manager.has_grant(user["name"], "backup", name)):
        what = "RESTORE" if restore else "BACKUP"
        raise InsufficientPrivilege(
            f'{what} of tenant "{name}" needs the superuser'
            + ("" if restore else " or GRANT BACKUP ON TENANT")
        )
    tenant = s.manager.tenants.get(name)
    if tenant is None:
        raise UndefinedObject(f'tenant "{name}" does not exist')
    return tenant


def may_use_backup_of(s: Session, tenant: str | None) -> bool:
    """Whether this user may read, or overwrite, a backup of ``tenant`` (None: a file
    that is no backup, which only the superuser may overwrite)."""
    if s.user["superuser"]:
        return True
    return tenant is not None and s.manager.has_grant(s.user["name"], "backup", tenant)


def start_operation(
    s: Session, kind: str, tenant: str, target: str, total: int | None
) -> tuple[Operation, Progress]:
    """Record a backup or restore in _system.backups; its Progress sends NOTICEs."""
    op = s.manager.operations.start(kind, tenant, target, total)
    return op, Progress(op, s.notify, s.manager.cfg["backup.progress_seconds"])


def backup_columns(
    s: Session, stmt: ast.BackupTenant | ast.RestoreTenant, param_oids: list[int]
) -> list[Column] | None:
    """The figures, for the file and snapshot forms; the COPY forms send data instead
    (NoData)."""
    if isinstance(stmt, ast.RestoreTenant) and stmt.until:
        return list(PITR_COLUMNS) if stmt.path is not None or stmt.snapshot else None
    return list(BACKUP_COLUMNS) if stmt.path is not None else None


@statement(
    ast.BackupTenant,
    columns=backup_columns,
    writes=False,
)
async def run_backup(s: Session, stmt: ast.BackupTenant, params: list[Any]) -> Result:
    tenant = backup_tenant(s, stmt.tenant)
    if tenant.status != "online":  # recovering, failed or being restored: no state to copy
        raise ObjectInUse(f'tenant "{tenant.name}" is not available ({tenant.status})')
    if stmt.path is None:
        return Result(None, [], "COPY", copy=BackupToClient(s, tenant))
    path = check_path(stmt.path, s.manager.cfg.backup_dirs, must_exist=False)
    op, progress = start_operation(s, "backup", tenant.name, str(path), tenant_size(tenant))
    try:
        summary = await backup_to_file(
            s.manager,
            tenant,
            path,
            stmt.overwrite,
            functools.partial(may_use_backup_of, s),
            progress,
        )
    except BaseException as e:
        Operations.finish(op, e)
        raise
    Operations.finish(op)
    return Result(BACKUP_COLUMNS, [summary.row()], "BACKUP")


@statement(
    ast.RestoreTenant,
    columns=backup_columns,
    writes=False,
)
async def run_restore(s: Session, stmt: ast.RestoreTenant, params: list[Any]) -> Result:
    stmt = check_restore(s, stmt)
    if stmt.snapshot:
        return await restore_snapshot(s, stmt)
    if stmt.path is None:
        return Result(None, [], "COPY", copy=RestoreFromClient(s, stmt))
    path = check_path(stmt.path, s.manager.cfg.backup_dirs, must_exist=True)
    with open_backup_file(path, stmt.path) as source:
        return await restore_from(s, stmt, source, os.fstat(source.fileno()).st_size)


def check_restore(s: Session, stmt: ast.RestoreTenant) -> ast.RestoreTenant:
    """RESTORE needs the superuser; DRY RUN also a holder of GRANT BACKUP, and WITH
    (rename) the superuser, since it reads a backup of another tenant (else 42501).
    Returns the statement with the tenant's own name."""
    stmt = dataclasses.replace(stmt, tenant=s.manager.tenant_name(stmt.tenant))
    if not stmt.dry_run:
        s.require_superuser("restore a tenant")
        if stmt.tenant == DEFAULT_TENANT:
            raise InsufficientPrivilege("the default tenant cannot be replaced by a restore")
    elif not may_use_backup_of(s, stmt.tenant):
        raise InsufficientPrivilege(
            f'DRY RUN of tenant "{stmt.tenant}" needs the superuser or GRANT BACKUP ON TENANT'
        )
    elif stmt.rename:
        s.require_superuser("read a backup WITH (rename)")
    return stmt


async def open_checked(
    s: Session, stmt: ast.RestoreTenant, source: BinaryIO, progress: Progress
) -> EnvelopeReader:
    """The backup's reader, once its header shows it can be restored here as the
    statement's tenant (master key, tenant name, privilege): a wrong file is refused
    before the tenant is touched."""
    manager = s.manager
    try:
        return await in_worker(
            progress,
            open_backup,
            source,
            manager.master,
            manager.master_key_id,
            stmt.tenant,
            stmt.rename,
            functools.partial(may_use_backup_of, s),
        )
    except EnvelopeError as e:
        raise DataError(f"invalid backup: {e}; nothing was changed") from None


async def restore_from(
    s: Session, stmt: ast.RestoreTenant, source: BinaryIO, total: int | None = None
) -> Result:
    """Verify (DRY RUN) or restore a backup read from ``source`` on a worker thread,
    recorded in _system.backups with progress NOTICEs."""
    op, progress = start_operation(
        s, "dry run" if stmt.dry_run else "restore", stmt.tenant, stmt.path or "stdin", total
    )
    try:
        result = await _restore_from(s, stmt, ProgressReader(source, progress), progress)  # type: ignore[arg-type]
    except BaseException as e:
        Operations.finish(op, e)
        raise
    Operations.finish(op)
    return result


async def _restore_from(
    s: Session, stmt: ast.RestoreTenant, source: BinaryIO, progress: Progress
) -> Result:
    manager = s.manager
    if stmt.until:
        return await restore_backup_until(s, stmt, source, progress)
    if stmt.dry_run:
        try:
            summary = await in_worker(
                progress,
                dry_run,
                source,
                manager.master,
                manager.master_key_id,
                stmt.tenant,
                stmt.rename,
                functools.partial(may_use_backup_of, s),
            )
        except EnvelopeError as e:
            raise DataError(f"invalid backup: {e}") from None
        return Result(BACKUP_COLUMNS, [summary.row()], "RESTORE DRY RUN", [summary.notice()])
    # Whether this backup can be restored here at all (master key, tenant name) is
    # known from its header: a wrong file is refused before the tenant is touched.
    reader = await open_checked(s, stmt, source, progress)
    tenant, staged = await replace_tenant(
        manager, stmt.tenant, reader, source, progress, stmt.resurrect, s.pid
    )
    if s.tenant.name == stmt.tenant:
        s.tenant = tenant
    notices = [staged.summary.notice()]
    if staged.skipped:
        notices.append("not restored (purged): " + ", ".join(staged.skipped))
    return Result(BACKUP_COLUMNS, [staged.summary.row()], "RESTORE", notices)


# ---- point-in-time restore ------------------------------------------------------------


def pitr_row(summary: Summary, replayed: pitr.Replayed) -> tuple[Any, ...]:
    until_time = _at_us(replayed.until_us) if replayed.records else None
    return (*summary.row(), replayed.until_lsn, until_time, replayed.records)


def pitr_notice(tenant: str, replayed: pitr.Replayed, dry_run: bool) -> str:
    verb = "would replay" if dry_run else "replayed"
    return (
        f"tenant {tenant}: {verb} {replayed.records} archived WAL records, "
        f"up to source LSN {replayed.until_lsn}"
    )


def _at_us(us: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(us / 1e6, dt.UTC)


async def restore_backup_until(
    s: Session, stmt: ast.RestoreTenant, source: BinaryIO, progress: Progress
) -> Result:
    """RESTORE .. FROM '<backup>' UNTIL ..: the backup, then its tenant's archived WAL."""
    manager = s.manager
    archive = pitr.require_archive(manager.storage)
    reader = await open_checked(s, stmt, source, progress)
    header = reader.header
    target = pitr.Target(stmt.until_lsn, stmt.until_us)
    span = await pitr.backup_range(manager, header, f"backup {stmt.path or 'stdin'}")
    needed = pitr.needed_segments(span, target, stmt.tenant)
    key = keys.unwrap(manager.master, header.wrapped_key)
    source_aead = AESGCM(key)
    if stmt.dry_run:
        try:
            summary = await in_worker(progress, verify_backup, reader, source)
        except EnvelopeError as e:
            raise DataError(f"invalid backup: {e}") from None
        replayed = await pitr.replay(
            archive,
            header.tenant_id,
            needed,
            source_aead,
            header.watermark_lsn,
            target,
            None,
            progress,
        )
        notices = [summary.notice(), pitr_notice(stmt.tenant, replayed, True)]
        return Result(PITR_COLUMNS, [pitr_row(summary, replayed)], "RESTORE DRY RUN", notices)
    replayed = pitr.Replayed(0, header.watermark_lsn, 0)

    async def stage(old: Tenant | None, new_id: int, root: Path) -> Staged:
        nonlocal replayed
        # No "purged after the watermark" rule: the replay applies the purges before
        # the target, and a collection purged after it existed at the target.
        staged = await in_worker(
            progress,
            stage_restore,
            reader,
            source,
            manager.master,
            stmt.tenant,
            new_id,
            root,
            old.last_lsn if old is not None else 0,
            {},
            True,
            manager.fs,
        )
        replayed = await pitr.replay_into(
            manager,
            staged,
            root,
            header.tenant_id,
            needed,
            source_aead,
            header.watermark_lsn,
            target,
            progress,
        )
        return staged

    tenant, staged = await switch_tenant(manager, stmt.tenant, s.pid, stage)
    return _restored(s, stmt, tenant, staged, replayed)


def _restored(
    s: Session, stmt: ast.RestoreTenant, tenant: Tenant, staged: Staged, replayed: pitr.Replayed
) -> Result:
    if s.tenant.name == stmt.tenant:
        s.tenant = tenant
    notices = [staged.summary.notice(), pitr_notice(stmt.tenant, replayed, False)]
    if staged.skipped:
        notices.append("not restored (purged): " + ", ".join(staged.skipped))
    return Result(PITR_COLUMNS, [pitr_row(staged.summary, replayed)], "RESTORE", notices)


def _tenant_catalog(manager: TenantManager, name: str) -> dict[str, Any]:
    """The tenant's users and grants as they are: a snapshot holds none, and the switch
    would otherwise drop them."""
    users = [u for u in manager.system.users.values() if u["tenant"] == name]
    return {
        "users": users,
        "grants": {u["name"]: manager.system.grants.get(u["name"], []) for u in users},
    }


async def restore_snapshot(s: Session, stmt: ast.RestoreTenant) -> Result:
    """RESTORE TENANT t FROM SNAPSHOT UNTIL ..: the newest stored snapshot of the tenant
    at or before the target, then its archived WAL."""
    manager = s.manager
    name = stmt.tenant
    live = manager.tenants.get(name)
    if live is None:
        raise UndefinedObject(f'tenant "{name}" does not exist')
    storage = manager.storage
    archive = pitr.require_archive(storage)
    assert storage is not None
    target = pitr.Target(stmt.until_lsn, stmt.until_us)
    op, progress = start_operation(
        s, "dry run" if stmt.dry_run else "restore", name, "snapshot", None
    )
    scratch = pitr.scratch_dir(manager)
    try:
        ranges = await pitr.snapshot_ranges(manager, live, scratch)
        chosen = next(
            ((snap, span) for snap, span in ranges if pitr.pick_snapshot([snap], target)), None
        )
        if chosen is None:
            oldest = (
                f"the oldest stored snapshot is at LSN {ranges[-1][0].lsn} "
                f"({pitr.format_us(ranges[-1][0].created_us)})"
                if ranges
                else "snapshot storage holds no snapshot of it"
            )
            raise InvalidParameterValue(
                f"tenant {name} cannot be restored to {target} from a snapshot: {oldest}; "
                "nothing was changed"
            )
        snap, span = chosen
        needed = pitr.needed_segments(span, target, name)
        key = pitr.tenant_key(manager, name)
        source_id = live.id
        replayed = pitr.Replayed(0, snap.lsn, 0)

        async def stage_from(root: Path, new_id: int, base_lsn: int) -> Staged:
            fetched = root / "snapshot"
            await pitr.fetch_snapshot(storage, source_id, snap.lsn, fetched)
            staged = await in_worker(
                progress,
                pitr.stage_snapshot,
                fetched,
                source_id,
                key,
                name,
                new_id,
                root,
                base_lsn,
                _tenant_catalog(manager, name),
                manager.fs,
            )
            await in_worker(progress, shutil.rmtree, fetched, True)
            return staged

        async def stage(old: Tenant | None, new_id: int, root: Path) -> Staged:
            nonlocal replayed
            if old is None or old.id != source_id:
                raise ObjectInUse(f'tenant "{name}" was replaced meanwhile; nothing was changed')
            staged = await stage_from(root, new_id, old.last_lsn)
            replayed = await pitr.replay_into(
                manager, staged, root, source_id, needed, AESGCM(key), snap.lsn, target, progress
            )
            return staged

        if stmt.dry_run:
            # Rewritten into the scratch directory (removed below): every file is read and
            # checked; the records are only counted.
            staged = await stage_from(scratch / "staged", source_id, live.last_lsn)
            replayed = await pitr.replay(
                archive,
                source_id,
                needed,
                AESGCM(key),
                snap.lsn,
                target,
                None,
                progress,
            )
            row = pitr_row(staged.summary, replayed)
            notices = [staged.summary.notice(), pitr_notice(name, replayed, True)]
            result = Result(PITR_COLUMNS, [row], "RESTORE DRY RUN", notices)
        else:
            tenant, staged = await switch_tenant(manager, name, s.pid, stage)
            result = _restored(s, stmt, tenant, staged, replayed)
    except BaseException as e:
        Operations.finish(op, e)
        raise
    finally:
        await asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, scratch, True)
    Operations.finish(op)
    return result


def restore_range_columns(
    s: Session, stmt: ast.ShowRestoreRange, param_oids: list[int]
) -> list[Column]:
    return list(RESTORE_RANGE_COLUMNS)


@statement(ast.ShowRestoreRange, columns=restore_range_columns, writes=False)
async def run_show_restore_range(
    s: Session, stmt: ast.ShowRestoreRange, params: list[Any]
) -> Result:
    name = s.manager.tenant_name(stmt.tenant)
    if not may_use_backup_of(s, name):
        raise InsufficientPrivilege(
            f'SHOW RESTORE RANGE of tenant "{name}" needs the superuser or GRANT BACKUP ON TENANT'
        )
    rows = [
        (
            name,
            span.source,
            span.start_lsn,
            span.end_lsn,
            _at_us(span.start_us),
            _at_us(span.end_us),
        )
        for span in await pitr.restore_points(s.manager, name)
    ]
    return Result(list(RESTORE_RANGE_COLUMNS), rows, f"SHOW {len(rows)}")


def tenant_size(tenant: Tenant) -> int:
    """The size_bytes_estimate of all a tenant's collections (what a backup will hold)."""
    return sum(engine.size_bytes for engine in tenant.state.engines.values())


class BackupToClient(CopyOut):
    """COPY (BACKUP TENANT t) TO STDOUT: the envelope as binary COPY data (format 1, so
    psql writes it out byte for byte)."""

    def __init__(self, session: Session, tenant: Tenant):
        self.session = session
        self.tenant = tenant

    async def run(self, send: Callable[[bytes], Awaitable[None]]) -> Result:
        tenant = self.tenant
        op, progress = start_operation(
            self.session, "backup", tenant.name, "stdout", tenant_size(tenant)
        )
        try:
            summary = await stream_backup(self.session.manager, tenant, progress, send)
        except BaseException as e:
            Operations.finish(op, e)
            raise
        Operations.finish(op)
        return Result(None, [], f"COPY {summary.bytes}", [summary.notice()])


class RestoreFromClient(CopyIn):
    """COPY tenant_restore(t) FROM STDIN [DRY RUN]: the backup arrives as binary COPY
    data and is verified (and restored) as it streams."""

    binary = True

    def __init__(self, session: Session, stmt: ast.RestoreTenant):
        self.session = session
        self.stmt = stmt

    async def run(self, chunks: AsyncIterator[bytes]) -> Result:
        result, read = await stream_restore(
            chunks, lambda source: restore_from(self.session, self.stmt, source)
        )
        # The COPY form ends with its COPY tag; the figures travel as the NOTICE.
        return Result(None, [], f"COPY {read}", result.notices)
