"""BACKUP TENANT and RESTORE TENANT, to and from files or the client (COPY)."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from nodedb_server import types as t
from nodedb_server.backup.envelope import EnvelopeError
from nodedb_server.backup.progress import (
    Progress,
    ProgressReader,
    in_worker,
)
from nodedb_server.backup.restore import dry_run, open_backup
from nodedb_server.backup.stream import stream_backup, stream_restore
from nodedb_server.backup.switch import replace_tenant
from nodedb_server.backup.writer import (
    COUNT_NAMES,
    backup_to_file,
    check_path,
    open_backup_file,
)
from nodedb_server.errors import (
    DataError,
    InsufficientPrivilege,
    UndefinedObject,
)
from nodedb_server.sql import ast
from nodedb_server.sql.registry import statement
from nodedb_server.sql.result import Column, CopyIn, CopyOut, Result
from nodedb_server.tenants.manager import DEFAULT_TENANT
from nodedb_server.tenants.operations import Operation, Operations
from nodedb_server.tenants.tenant import Tenant

if TYPE_CHECKING:
    from nodedb_server.sql.session import Session

log = logging.getLogger("nodedb.sql")


T = TypeVar("T")


BACKUP_COLUMNS = [("tenant", t.TEXT), ("watermark_lsn", t.INT8), ("bytes", t.INT8)] + [
    (name, t.INT8) for name in COUNT_NAMES
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
    """The figures, for the file forms; the COPY forms send data instead (NoData)."""
    return list(BACKUP_COLUMNS) if stmt.path is not None else None


@statement(
    ast.BackupTenant,
    columns=backup_columns,
    writes=False,
)
async def run_backup(s: Session, stmt: ast.BackupTenant, params: list[Any]) -> Result:
    tenant = backup_tenant(s, stmt.tenant)
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
    try:
        reader = await in_worker(
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
    tenant, staged = await replace_tenant(
        manager, stmt.tenant, reader, source, progress, stmt.resurrect, s.pid
    )
    if s.tenant.name == stmt.tenant:
        s.tenant = tenant
    notices = [staged.summary.notice()]
    if staged.skipped:
        notices.append("not restored (purged): " + ", ".join(staged.skipped))
    return Result(BACKUP_COLUMNS, [staged.summary.row()], "RESTORE", notices)


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
