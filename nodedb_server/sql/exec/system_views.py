"""The ``_system.*`` views."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from nodedb_server import types as t
from nodedb_server.engines.base import Row
from nodedb_server.errors import (
    UndefinedTable,
)
from nodedb_server.sql.result import Column
from nodedb_server.storage import quarantine
from nodedb_server.storage.checkpoint import checkpoint_dirs, read_info
from nodedb_server.tenants.tenant import Tenant

if TYPE_CHECKING:
    from nodedb_server.sql.session import Session


def visible_tenants(s: Session) -> list[Tenant]:
    if s.user["superuser"]:
        return list(s.manager.tenants.values())
    return [s.tenant]


def system_view(s: Session, name: str, rows: bool) -> tuple[list[Column], list[Row]]:
    view = name.split(".", 1)[1]
    if view == "wal":
        cols = [
            ("tenant", t.TEXT),
            ("segment", t.TEXT),
            ("first_lsn", t.INT8),
            ("last_lsn", t.INT8),
            ("bytes", t.INT8),
            ("archived", t.BOOL),
        ]
        out = []
        if rows:
            for tenant in visible_tenants(s):
                wal = tenant.store.wal
                for seg in wal.segments if wal else []:
                    out.append(
                        {
                            "tenant": tenant.name,
                            "segment": seg.path.name,
                            "first_lsn": seg.first_lsn,
                            "last_lsn": seg.last_lsn,
                            "bytes": seg.bytes,
                            "archived": False,
                        }
                    )
        return cols, out
    if view == "checkpoints":
        cols = [
            ("tenant", t.TEXT),
            ("lsn", t.INT8),
            ("at", t.TIMESTAMPTZ),
            ("files", t.INT8),
            ("bytes", t.INT8),
        ]
        out = []
        if rows:
            for tenant in visible_tenants(s):
                store = tenant.store
                for path in checkpoint_dirs(store.checkpoint_dir):
                    try:
                        info = read_info(path, store.aead, store.tenant_id)
                    except Exception:
                        continue
                    out.append(
                        {
                            "tenant": tenant.name,
                            "lsn": info.lsn,
                            "at": dt.datetime.fromtimestamp(info.created_ms / 1000, dt.UTC),
                            "files": info.files,
                            "bytes": info.bytes,
                        }
                    )
        return cols, out
    if view == "backups":
        cols = [
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
        ]
        names = {x.name for x in visible_tenants(s)}
        ops = [o for o in s.manager.operations.recent if s.user["superuser"] or o.tenant in names]
        return cols, [
            {
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
            for o in ops
        ] if rows else []
    if view == "quarantine":
        cols = [
            ("tenant", t.TEXT),
            ("file", t.TEXT),
            ("reason", t.TEXT),
            ("at", t.TIMESTAMPTZ),
            ("location", t.TEXT),
        ]
        return cols, [
            {
                "tenant": tenant.name,
                "file": entry.name,
                "reason": entry.reason,
                "at": dt.datetime.fromtimestamp(entry.at_ms / 1000, dt.UTC),
                "location": str(entry.path),
            }
            for tenant in (visible_tenants(s) if rows else [])
            for entry in quarantine.entries(tenant.store.quarantine_dir)
        ]
    if view in ("dropped_collections", "l2_cleanup_queue"):
        return _dropped_view(s, view, rows)
    raise UndefinedTable(f'system view "{name}" does not exist')


def _dropped_view(s: Session, view: str, rows: bool) -> tuple[list[Column], list[Row]]:
    """Soft-dropped collections: what UNDROP can bring back, and what PURGE will reclaim."""
    if view == "dropped_collections":
        cols = [
            ("tenant_id", t.INT8),
            ("name", t.TEXT),
            ("owner", t.TEXT),
            ("engine_type", t.TEXT),
            ("deactivated_at", t.TIMESTAMPTZ),
            ("retention_expires_at", t.TIMESTAMPTZ),
            ("size_bytes_estimate", t.INT8),
        ]
    else:
        cols = [
            ("tenant_id", t.INT8),
            ("collection", t.TEXT),
            ("bytes", t.INT8),
            ("purge_after", t.TIMESTAMPTZ),
        ]
    out: list[Row] = []
    if not rows:
        return cols, out
    retention = s.manager.retention_ms()
    for tenant in visible_tenants(s):
        for meta in sorted(tenant.state.catalog.values(), key=lambda m: m.name):
            if meta.dropped_ms is None:
                continue
            dropped = dt.datetime.fromtimestamp(meta.dropped_ms / 1000, dt.UTC)
            expires = dt.datetime.fromtimestamp((meta.dropped_ms + retention) / 1000, dt.UTC)
            size = tenant.state.engines[meta.name].size_bytes
            if view == "dropped_collections":
                out.append(
                    {
                        "tenant_id": tenant.id,
                        "name": meta.name,
                        "owner": meta.owner,
                        "engine_type": meta.engine,
                        "deactivated_at": dropped,
                        "retention_expires_at": expires,
                        "size_bytes_estimate": size,
                    }
                )
            else:
                out.append(
                    {
                        "tenant_id": tenant.id,
                        "collection": meta.name,
                        "bytes": size,
                        "purge_after": expires,
                    }
                )
    return cols, out
