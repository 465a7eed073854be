"""The key-value engine: rows keyed by ``key``, optional typed value fields, TTL.

A key with an expiry time is invisible from that moment on; the tenant's
sweeper later writes a DELETE for it through the WAL, so replay and
checkpoints agree on when it went away.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from nodedb_server import types as t
from nodedb_server.engines.base import Row, RowCollection, RowOp
from nodedb_server.storage.records import REMOVING_OPS, ROW_OPS
from nodedb_server.storage.snapshot import ABSENT, SnapshotItems

# The types a KEY_VALUE collection's value fields declare (CREATE COLLECTION .. TYPE
# KEY_VALUE (key TEXT PRIMARY KEY, hits INT8)); "timestamp" holds a time zone.
KV_TYPE_OIDS = {
    "text": t.TEXT,
    "int8": t.INT8,
    "float8": t.FLOAT8,
    "bool": t.BOOL,
    "bytea": t.BYTEA,
    "timestamp": t.TIMESTAMPTZ,
    "jsonb": t.JSONB,
}


class KvCollection(RowCollection):
    engine = "kv"
    key_field = "key"

    def __init__(self, name: str, typed_fields: dict[str, str] | None = None):
        super().__init__(name)
        self.typed_fields: dict[str, str] = dict(typed_fields or {})
        self.expiry: dict[Any, int] = {}

    def column_oid(self, name: str) -> int | None:
        kind = self.typed_fields.get(name)
        return KV_TYPE_OIDS[kind] if kind is not None else None

    def get(self, key: Any, now_ms: int = 0) -> Row | None:
        exp = self.expiry.get(key)
        if exp is not None and now_ms and exp <= now_ms:
            return None
        return self.rows.get(key)

    def scan(self, now_ms: int = 0) -> Iterator[Row]:
        if not self.expiry or not now_ms:
            return iter(list(self.rows.values()))
        expiry = self.expiry
        return iter([r for k, r in self.rows.items() if expiry.get(k, now_ms + 1) > now_ms])

    def expired(self, now_ms: int) -> list[Any]:
        return [k for k, exp in self.expiry.items() if exp <= now_ms]

    def expires_at(self, key: Any) -> int | None:
        return self.expiry.get(key)

    def apply_run(self, ops: Sequence[RowOp]) -> None:
        super().apply_run(ops)
        expiry = self.expiry
        for op, key, _row, expires_ms in ops:
            if op not in ROW_OPS:  # edges and CRDT documents have no expiry
                continue
            if op in REMOVING_OPS or expires_ms is None:
                expiry.pop(key, None)
            else:
                expiry[key] = expires_ms

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "typed_fields": self.typed_fields}

    def load_meta(self, meta: dict[str, Any]) -> None:
        super().load_meta(meta)
        self.typed_fields = dict(meta.get("typed_fields", {}))

    def _pre_image(self, key: Any) -> Any:
        row = self.rows.get(key)
        return ABSENT if row is None else (row, self.expiry.get(key))

    def snapshot_items(self) -> SnapshotItems:
        """[key, row, expires_ms] items as of now (see RowCollection.snapshot_items)."""
        view = self.views.new(list(self.rows))
        return SnapshotItems(view, _with_key(view.read(self._pre_image)))

    def load_items(self, items: Iterable[Any]) -> None:
        """Checkpointed [key, row, expires_ms or None] items."""
        rows, expiry = self.rows, self.expiry
        for key, row, expires in items:
            rows[key] = row
            if expires is not None:
                expiry[key] = expires


def _with_key(pairs: Iterator[tuple[Any, Any]]) -> Iterator[tuple[Any, Row, int | None]]:
    for key, (row, expires) in pairs:
        yield key, row, expires
