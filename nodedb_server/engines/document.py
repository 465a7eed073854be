"""The document engine: rows keyed by ``id`` holding any fields; or, made by CREATE
TABLE, a table: declared columns of declared types and a primary key of its own.

A table's schema is part of its catalog entry (``CollectionMeta.options["table"]``,
so it travels through the WAL, checkpoints and backups with the collection):

    {"columns": [[name, type, not_null, default, typmod], ...], "key": name | None}

``type`` is one of TABLE_TYPES, ``default`` None, ``{"value": v}``, ``{"now": true}`` or,
for a SERIAL or identity key, ``{"serial": true}`` (its sequence is ``<table>_<key>_seq``),
``typmod`` PostgreSQL's type modifier (varchar(n): n + 4; numeric(p, s):
(p << 16 | s) + 4) or -1 (entries written before it have four fields: -1).
A table declared without a primary key is keyed by a hidden column, ``ctid`` (as
PostgreSQL's row address is): a generated UUIDv7 that ``SELECT *`` does not show.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nodedb_server import types as t
from nodedb_server.engines.base import RowCollection, RowOp
from nodedb_server.storage.records import ROW_OPS

# The column types a table declares, by the PostgreSQL name its catalog shows.
TABLE_TYPES: dict[str, int] = {
    "int2": t.INT2,
    "int4": t.INT4,
    "int8": t.INT8,
    "float4": t.FLOAT4,
    "float8": t.FLOAT8,
    "numeric": t.NUMERIC,
    "bool": t.BOOL,
    "text": t.TEXT,
    "varchar": t.VARCHAR,
    "bytea": t.BYTEA,
    "timestamp": t.TIMESTAMP,
    "timestamptz": t.TIMESTAMPTZ,
    "json": t.JSON,
    "jsonb": t.JSONB,
}
INT_KEY_TYPES = frozenset({"int2", "int4", "int8"})
KEY_TYPES = INT_KEY_TYPES | {"text", "varchar"}
HIDDEN_KEY = "ctid"


@dataclass(frozen=True)
class TableColumn:
    name: str
    type: str  # a TABLE_TYPES name
    not_null: bool = False
    default: dict[str, Any] | None = None  # {"value": v}, {"now": True}, {"serial": True}
    typmod: int = -1  # varchar(n): n + 4; numeric(p, s): (p << 16 | s) + 4

    @classmethod
    def of(cls, fields: list[Any]) -> TableColumn:
        """A column from its catalog entry: [name, type, not_null, default, typmod]."""
        name, kind, not_null, default, *rest = fields
        return cls(name, kind, bool(not_null), default, int(rest[0]) if rest else -1)

    @property
    def oid(self) -> int:
        return TABLE_TYPES[self.type]

    @property
    def length(self) -> int | None:
        """varchar(n)'s n."""
        return self.typmod - 4 if self.type == "varchar" and self.typmod >= 4 else None

    @property
    def precision(self) -> tuple[int, int] | None:
        """numeric(p, s)'s (p, s)."""
        if self.type != "numeric" or self.typmod < 4:
            return None
        return (self.typmod - 4) >> 16, (self.typmod - 4) & 0xFFFF


@dataclass(frozen=True)
class TableSchema:
    columns: tuple[TableColumn, ...]
    key: str | None  # the primary key column; None: the hidden ctid

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TableSchema:
        return cls(tuple(TableColumn.of(c) for c in d["columns"]), d.get("key"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": [[c.name, c.type, c.not_null, c.default, c.typmod] for c in self.columns],
            "key": self.key,
        }

    @functools.cached_property
    def _by_name(self) -> dict[str, TableColumn]:
        return {c.name: c for c in self.columns}

    def column(self, name: str) -> TableColumn | None:
        """The column of that name (asked per value written: a dict, not a scan)."""
        return self._by_name.get(name)

    def with_column(self, col: TableColumn) -> TableSchema:
        return TableSchema((*self.columns, col), self.key)


class DocumentCollection(RowCollection):
    engine = "document"
    key_field = "id"

    def __init__(self, name: str, table: dict[str, Any] | None = None):
        self.table = TableSchema.from_dict(table) if table else None
        if self.table is not None:
            self.key_field = self.table.key or HIDDEN_KEY
        super().__init__(name)
        self.hidden_key = self.table is not None and self.table.key is None
        key_col = self.table.column(self.key_field) if self.table is not None else None
        self.int_key = key_col is not None and key_col.type in INT_KEY_TYPES
        self._next_serial = 1  # the next generated integer key: past every key seen
        # A SERIAL (or identity) key's sequence, by PostgreSQL's name for it
        serial = key_col is not None and (key_col.default or {}).get("serial")
        self.sequence = f"{name}_{self.key_field}_seq"[:63] if serial else None

    def fields(self) -> list[str]:
        if self.table is None:
            return super().fields()
        return [c.name for c in self.table.columns]

    def column_oid(self, name: str) -> int | None:
        if self.table is None:
            return None
        col = self.table.column(name)
        if col is not None:
            return col.oid
        return t.TEXT if name == HIDDEN_KEY and self.hidden_key else None

    def add_column(self, col: TableColumn) -> None:
        assert self.table is not None
        self.table = self.table.with_column(col)

    def next_serial(self) -> int:
        """A new integer key, as a sequence gives one: never handed out twice by this
        process, past every key stored (a key given by hand moves it on)."""
        n = self._next_serial
        self._next_serial = n + 1
        return n

    def set_serial(self, next_value: int) -> None:
        """setval: the next key generated is ``next_value`` (keys stored later, by hand,
        still move it past them)."""
        self._next_serial = next_value

    def apply_run(self, ops: Sequence[RowOp]) -> None:
        super().apply_run(ops)
        if self.int_key:
            for op, key, _row, _expires in ops:
                if op in ROW_OPS and isinstance(key, int) and key >= self._next_serial:
                    self._next_serial = key + 1

    def load_items(self, items: Any) -> None:
        super().load_items(items)
        if self.int_key and self.rows:
            self._next_serial = max(self._next_serial, max(self.rows) + 1)
