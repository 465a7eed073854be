"""The ``_system.*`` views: one table, each view its columns and a function of its rows.

A view shows what the session's user may see: the superuser every tenant, any
other user their own tenant. Adding a view is one entry of ``VIEWS``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nodedb_server import types as t
from nodedb_server.backup import pitr
from nodedb_server.engines.base import Row
from nodedb_server.errors import UndefinedTable
from nodedb_server.events.changes import commit_time
from nodedb_server.sql.exec.backup import RESTORE_RANGE_COLUMNS
from nodedb_server.sql.result import Column
from nodedb_server.storage import quarantine
from nodedb_server.storage.checkpoint import checkpoint_dirs, read_info
from nodedb_server.storage.uploads import Uploader
from nodedb_server.tenants.catalog import CollectionMeta, GroupMeta
from nodedb_server.tenants.tenant import Tenant

if TYPE_CHECKING:
    from nodedb_server.sql.session import Session


@dataclass(frozen=True)
class View:
    columns: list[Column]
    rows: Callable[[Session], Iterator[Row]]
    # A view whose rows need object storage reads them with this instead.
    load: Callable[[Session], Awaitable[list[Row]]] | None = None


# The name _system.wal gives the system catalog's WAL (tenants, users, settings).
SYSTEM_CATALOG = "_system"


def visible_tenants(s: Session, failed_too: bool = False) -> list[Tenant]:
    """The tenants a view lists: never one still recovering (its state is being built
    on a worker thread); one that failed to recover only for the views that read its
    files (checkpoints, quarantine, restore points), which an operator needs then."""
    if s.user["superuser"]:
        shown = ("online", "failed") if failed_too else ("online",)
        return [t for t in s.manager.tenants.values() if t.status in shown]
    return [s.tenant]


def _at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def _archive_error(uploader: Uploader | None) -> str | None:
    if uploader is None or uploader.storage.archive is None:
        return None
    error = uploader.archive_error()
    if error is not None and uploader.over_local_limit():
        error += (
            f" (local WAL is {uploader.local_wal_bytes()} bytes, over "
            f"wal_archive.max_local_bytes {uploader.storage.max_local_bytes}; "
            "writes go on, nothing unarchived is deleted)"
        )
    return error


def _wal(s: Session) -> Iterator[Row]:
    """Each WAL segment of each visible tenant; the superuser also sees the system
    catalog's (tenant ``_system``), which a recovery from storage needs archived too."""
    stores = [(tenant.name, tenant.store) for tenant in visible_tenants(s)]
    if s.user["superuser"] and s.manager.store is not None:
        stores.insert(0, (SYSTEM_CATALOG, s.manager.store))
    for name, store in stores:
        wal, uploader = store.wal, store.uploader
        archiving = uploader is not None and uploader.storage.archive is not None
        error = _archive_error(uploader)
        segments = wal.segments if wal else []
        for i, seg in enumerate(segments):
            sealed = i < len(segments) - 1
            yield {
                "tenant": name,
                "segment": seg.path.name,
                "first_lsn": seg.first_lsn,
                "last_lsn": seg.last_lsn,
                "bytes": seg.bytes,
                "archived": bool(
                    archiving
                    and uploader is not None
                    and sealed
                    and seg.last_lsn >= seg.first_lsn
                    and uploader.is_archived(seg)
                ),
                "archive_error": error if archiving else None,
            }


def _checkpoints(s: Session) -> Iterator[Row]:
    for tenant in visible_tenants(s, failed_too=True):
        store = tenant.store
        for path in checkpoint_dirs(store.checkpoint_dir):
            try:
                info = read_info(path, store.aead, store.tenant_id)
            except Exception:
                continue  # damaged or half-written: recovery deals with it, not this view
            uploader = store.uploader
            stored = uploader.snapshots.get(info.lsn) if uploader is not None else None
            yield {
                "tenant": tenant.name,
                "lsn": info.lsn,
                "at": _at(info.created_ms),
                "files": info.files,
                "bytes": info.bytes,
                "stored": stored.location if stored else None,
                "stored_at": _at(int(stored.stored_at * 1000)) if stored else None,
            }


def _backups(s: Session) -> Iterator[Row]:
    names = {x.name for x in visible_tenants(s)}
    for o in s.manager.operations.recent:
        if s.user["superuser"] or o.tenant in names:
            yield {
                "id": o.id,
                "kind": o.kind,
                "tenant": o.tenant,
                "target": o.target,
                "status": o.status,
                "started_at": o.started_at,
                "finished_at": o.finished_at,
                "bytes": o.bytes,
                "percent": o.percent,
                "error": o.error,
            }


def _quarantine(s: Session) -> Iterator[Row]:
    """Files set aside: those already in quarantine storage, then those still local
    (waiting to be moved there)."""
    for tenant in visible_tenants(s, failed_too=True):
        uploader = tenant.store.uploader
        entries = [
            (e.name, e.reason, e.at_ms, e.location)
            for e in (uploader.quarantined if uploader is not None else [])
        ]
        stored = {(name, at_ms) for name, _, at_ms, _ in entries}
        entries += [
            (e.name, e.reason, e.at_ms, str(e.path))
            for e in quarantine.entries(tenant.store.quarantine_dir)
            if (e.name, e.at_ms) not in stored
        ]
        for name, reason, at_ms, location in entries:
            yield {
                "tenant": tenant.name,
                "file": name,
                "reason": reason,
                "at": _at(at_ms),
                "location": location,
            }


def _dropped(s: Session) -> Iterator[tuple[Tenant, CollectionMeta, dt.datetime, dt.datetime]]:
    """Soft-dropped collections: what UNDROP can bring back, and what PURGE will reclaim."""
    retention = s.manager.retention_ms()
    for tenant in visible_tenants(s):
        for meta in sorted(tenant.state.catalog.values(), key=lambda m: m.name):
            if meta.dropped_ms is not None:
                yield tenant, meta, _at(meta.dropped_ms), _at(meta.dropped_ms + retention)


def _dropped_collections(s: Session) -> Iterator[Row]:
    for tenant, meta, dropped, expires in _dropped(s):
        yield {
            "tenant_id": tenant.id,
            "name": meta.name,
            "owner": meta.owner,
            "engine_type": meta.engine,
            "deactivated_at": dropped,
            "retention_expires_at": expires,
            "size_bytes_estimate": tenant.state.engines[meta.name].size_bytes,
        }


def _l2_cleanup_queue(s: Session) -> Iterator[Row]:
    for tenant, meta, _, expires in _dropped(s):
        yield {
            "tenant_id": tenant.id,
            "collection": meta.name,
            "bytes": tenant.state.engines[meta.name].size_bytes,
            "purge_after": expires,
        }


async def _restore_points(s: Session) -> list[Row]:
    """What each visible tenant can be restored to (none while WAL archiving is off)."""
    if s.manager.storage is None or s.manager.storage.archive is None:
        return []
    return [
        {
            "tenant": tenant.name,
            "source": span.source,
            "from_lsn": span.start_lsn,
            "to_lsn": span.end_lsn,
            "from_time": _at_us(span.start_us),
            "to_time": _at_us(span.end_us),
        }
        for tenant in visible_tenants(s, failed_too=True)
        for span in await pitr.restore_points(s.manager, tenant.name)
    ]


async def _change_streams(s: Session) -> list[Row]:
    """Each consumer group of each visible tenant's change streams (and each stream
    with no group yet), how far behind the head it is and what it holds on disk."""
    loop = asyncio.get_running_loop()
    now_us = time.time_ns() // 1000
    rows: list[Row] = []
    for tenant in visible_tenants(s):
        st, wal = tenant.state, tenant.store.wal
        segments = list(wal.segments) if wal is not None else []
        head = wal.durable_lsn if wal is not None else st.last_lsn
        oldest = min([seg.first_lsn for seg in segments] or [head + 1])
        cap = tenant.store.settings.retained_bytes
        for name, stream in sorted(st.streams.items()):
            groups: list[GroupMeta | None] = [
                g for (sname, _), g in sorted(st.groups.items()) if sname == name
            ]
            for group in groups or [None]:
                committed = group.committed_lsn if group is not None else stream.created_lsn
                wanted = committed + 1
                retained = sum(seg.bytes for seg in segments if seg.last_lsn >= wanted)
                behind = st.last_data_lsn > committed  # else only catalog records follow
                lag_seconds: float | None = 0.0
                if behind:
                    recent = tenant.recent.after(committed, wanted)
                    at = recent[0].commit_us if recent else None
                    if at is None:
                        at = await loop.run_in_executor(
                            None, commit_time, tenant.store.wal_dir, wanted
                        )
                    lag_seconds = max(0.0, (now_us - at) / 1e6) if at is not None else None
                evicted = max(0, oldest - wanted) if head >= wanted else 0
                rows.append(
                    {
                        "tenant": tenant.name,
                        "stream": name,
                        "group": group.name if group is not None else None,
                        "committed_lsn": group.committed_lsn if group is not None else None,
                        "head_lsn": head,
                        "lag_records": head - committed if behind else 0,
                        "lag_seconds": lag_seconds,
                        "retained_bytes": retained,
                        "lagging": evicted > 0 or retained > cap,
                        "evicted": evicted,
                        "oldest_available_lsn": min(oldest, head + 1),
                        "clamped_from": group.clamped_from if group is not None else None,
                    }
                )
    return rows


def _at_us(us: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(us / 1e6, dt.UTC)


VIEWS: dict[str, View] = {
    "wal": View(
        [
            ("tenant", t.TEXT),
            ("segment", t.TEXT),
            ("first_lsn", t.INT8),
            ("last_lsn", t.INT8),
            ("bytes", t.INT8),
            ("archived", t.BOOL),
            ("archive_error", t.TEXT),
        ],
        _wal,
    ),
    "checkpoints": View(
        [
            ("tenant", t.TEXT),
            ("lsn", t.INT8),
            ("at", t.TIMESTAMPTZ),
            ("files", t.INT8),
            ("bytes", t.INT8),
            ("stored", t.TEXT),
            ("stored_at", t.TIMESTAMPTZ),
        ],
        _checkpoints,
    ),
    "backups": View(
        [
            ("id", t.INT8),
            ("kind", t.TEXT),
            ("tenant", t.TEXT),
            ("target", t.TEXT),
            ("status", t.TEXT),
            ("started_at", t.TIMESTAMPTZ),
            ("finished_at", t.TIMESTAMPTZ),
            ("bytes", t.INT8),
            ("percent", t.FLOAT8),
            ("error", t.TEXT),
        ],
        _backups,
    ),
    "quarantine": View(
        [
            ("tenant", t.TEXT),
            ("file", t.TEXT),
            ("reason", t.TEXT),
            ("at", t.TIMESTAMPTZ),
            ("location", t.TEXT),
        ],
        _quarantine,
    ),
    "change_streams": View(
        [
            ("tenant", t.TEXT),
            ("stream", t.TEXT),
            ("group", t.TEXT),
            ("committed_lsn", t.INT8),
            ("head_lsn", t.INT8),
            ("lag_records", t.INT8),
            ("lag_seconds", t.FLOAT8),
            ("retained_bytes", t.INT8),
            ("lagging", t.BOOL),
            ("evicted", t.INT8),
            ("oldest_available_lsn", t.INT8),
            ("clamped_from", t.INT8),
        ],
        lambda _s: iter(()),
        _change_streams,
    ),
    "dropped_collections": View(
        [
            ("tenant_id", t.INT8),
            ("name", t.TEXT),
            ("owner", t.TEXT),
            ("engine_type", t.TEXT),
            ("deactivated_at", t.TIMESTAMPTZ),
            ("retention_expires_at", t.TIMESTAMPTZ),
            ("size_bytes_estimate", t.INT8),
        ],
        _dropped_collections,
    ),
    "l2_cleanup_queue": View(
        [
            ("tenant_id", t.INT8),
            ("collection", t.TEXT),
            ("bytes", t.INT8),
            ("purge_after", t.TIMESTAMPTZ),
        ],
        _l2_cleanup_queue,
    ),
    "restore_points": View(
        RESTORE_RANGE_COLUMNS,
        lambda _s: iter(()),
        _restore_points,
    ),
}


def system_view(s: Session, name: str, rows: bool) -> tuple[list[Column], list[Row]]:
    """A view's columns, and (with ``rows``) its rows as this session may see them."""
    view = _view(name)
    return list(view.columns), list(view.rows(s)) if rows else []


async def system_view_rows(s: Session, name: str) -> list[Row]:
    """A view's rows as this session may see them, read from object storage if need be."""
    view = _view(name)
    return await view.load(s) if view.load is not None else list(view.rows(s))


def _view(name: str) -> View:
    view = VIEWS.get(name.split(".", 1)[1])
    if view is None:
        raise UndefinedTable(f'system view "{name}" does not exist')
    return view
