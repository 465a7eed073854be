"""Replacing a tenant by a restored one: stage the backup into a new directory, then
switch the tenant over to it in one step.

The tenant is held (it takes no statements) from the start, so its last LSN and
tombstones are final while the backup is staged; a failure before the switch
removes the staging directory and leaves the tenant as it was.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from nodedb_server.backup.envelope import EnvelopeError, EnvelopeReader
from nodedb_server.backup.progress import Progress, in_worker
from nodedb_server.backup.restore import Staged, stage_restore
from nodedb_server.errors import DataError, DiskFull
from nodedb_server.tenants.manager import TenantManager
from nodedb_server.tenants.tenant import Tenant

T = TypeVar("T")
log = logging.getLogger("nodedb.backup")


# Stages a restore into the new tenant directory: (the tenant being replaced, the
# new tenant id, the directory) -> what was staged. It may raise EnvelopeError for a
# damaged backup; anything it leaves in the directory is removed if it fails.
Stage = Callable[[Tenant | None, int, Path], Awaitable[Staged]]


async def replace_tenant(
    manager: TenantManager,
    name: str,
    reader: EnvelopeReader,
    source: BinaryIO,
    progress: Progress,
    resurrect: bool,
    pid: int,
) -> tuple[Tenant, Staged]:
    """Restore the backup ``reader`` opened as tenant ``name`` (replacing it if it
    exists); ``pid``'s session is the one kept when the tenant's others end."""

    async def stage(old: Tenant | None, new_id: int, root: Path) -> Staged:
        return await in_worker(
            progress,
            stage_restore,
            reader,
            source,
            manager.master,
            name,
            new_id,
            root,
            old.last_lsn if old is not None else 0,
            dict(old.state.tombstones) if old is not None else {},
            resurrect,
            manager.fs,
        )

    return await switch_tenant(manager, name, pid, stage)


async def switch_tenant(
    manager: TenantManager, name: str, pid: int, stage: Stage
) -> tuple[Tenant, Staged]:
    """Hold tenant ``name``, ``stage`` its replacement into a new directory, and switch
    over to it; a failure before the switch leaves the tenant as it was."""
    old = await manager.begin_restore(name, pid)
    try:
        return await _stage_and_switch(manager, name, pid, old, stage)
    except BaseException:
        manager.abort_restore(name, old)
        raise


async def _stage_and_switch(
    manager: TenantManager, name: str, pid: int, old: Tenant | None, stage: Stage
) -> tuple[Tenant, Staged]:
    loop = asyncio.get_running_loop()
    new_id = manager.reserve_tenant_id()
    root = manager.tenant_dir(new_id)
    started = time.monotonic()
    try:
        staged = await stage(old, new_id, root)
    except EnvelopeError as e:
        await loop.run_in_executor(None, shutil.rmtree, root, True)
        raise DataError(f"invalid backup: {e}; nothing was changed") from None
    except OSError as e:
        await loop.run_in_executor(None, shutil.rmtree, root, True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull("no space left to stage the restore; nothing was changed") from None
        raise
    except BaseException:
        await loop.run_in_executor(None, shutil.rmtree, root, True)
        raise
    staged_at = time.monotonic()
    tenant = await _uncancellable(
        manager.commit_restore(name, new_id, staged.tenant_key, staged.catalog, pid)
    )
    log.info(
        "restore of tenant %s: %d bytes staged in %.2fs, switched over in %.3fs",
        name,
        staged.summary.bytes,
        staged_at - started,
        time.monotonic() - staged_at,
    )
    return tenant, staged


async def _uncancellable(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to its end even if the statement is cancelled or times out meanwhile:
    past a restore's commit point there is nothing to undo, so a cancel that arrives
    then is too late and is dropped (as one arriving after COMMIT)."""
    inner = asyncio.ensure_future(work)
    dropped = 0
    while True:
        try:
            result = await asyncio.shield(inner)
            break
        except asyncio.CancelledError:
            if inner.cancelled():
                raise
            dropped += 1
    task = asyncio.current_task()
    for _ in range(dropped if task is not None else 0):
        task.uncancel()  # type: ignore[union-attr]
    return result
