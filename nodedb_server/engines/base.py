"""What every row-shaped engine shares: rows by primary key, field order and types, size."""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from nodedb_server.engines import EngineKind
from nodedb_server.engines.crdt import CrdtError, CrdtStore
from nodedb_server.engines.graph import EdgeStore
from nodedb_server.engines.index import FieldIndex
from nodedb_server.engines.vector import VectorIndex, as_vector
from nodedb_server.storage import codec
from nodedb_server.storage.records import CRDT_OPS, EDGE_OPS, REMOVING_OPS, ROW_OPS
from nodedb_server.storage.snapshot import SnapshotItems, Views

Row = dict[str, Any]
# One committed operation as an engine applies it: (op, key, row, expires_ms). The row
# is an edge's properties for an edge op and a CRDT update's bytes for a CRDT op.
RowOp = tuple[int, Any, Any, int | None]
log = logging.getLogger("nodedb.engines")


def type_tag(value: Any) -> str:
    """The value-type name a field records for ``value`` (see SQL.md, result column types)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float | decimal.Decimal):
        return "float"
    if isinstance(value, str):
        return "text"
    if isinstance(value, bytes):
        return "bytea"
    if isinstance(value, dt.datetime):
        return "timestamp"
    if isinstance(value, list):
        return "vector" if as_vector(value) is not None else "array"
    return "object"


# type_tag for the exact built-in types, without its chain of isinstance tests.
_TAGS: dict[type, str] = {
    type(None): "null",
    bool: "bool",
    int: "int",
    float: "float",
    str: "text",
    bytes: "bytea",
    dt.datetime: "timestamp",
    dict: "object",
}  # lists go through type_tag: a list of numbers is a "vector"


def _packed_size(rows: list[Row]) -> int:
    """The sum of the rows' encoded sizes, packed in one call."""
    if not rows:
        return 0
    return len(codec.pack(rows)) - len(codec.array_head(len(rows)))


class RowCollection:
    """Rows keyed by primary key. Row dicts are never mutated once stored: an update
    replaces the dict, so a snapshot's pre-image of a row is the old dict itself."""

    engine: EngineKind = "document"
    key_field = "id"
    # A table's declared schema (engines/document.py); schemaless collections have none.
    table: Any = None
    hidden_key = False  # the key is not a column of the table (SELECT * leaves it out)
    int_key = False  # keys are integers (a table's integer primary key), else text

    def __init__(self, name: str):
        self.name = name
        self.rows: dict[Any, Row] = {}
        self.field_types: dict[str, set[str]] = {self.key_field: {"text"}}
        self.size_bytes = 0
        self.indexes: dict[str, FieldIndex] = {}  # by field
        self.edges = EdgeStore()  # graph edges overlaying this collection
        self.crdt = CrdtStore()  # CRDT documents of this collection
        self.vectors: dict[str, VectorIndex] = {}  # by index name
        self.views = Views()  # open snapshots of ``rows`` (storage/snapshot.py)
        # Keys changed while a vector index is built off the loop (see watch_changes).
        self.watchers: list[set[Any]] = []
        self._noted: set[tuple[str, type]] = set()  # (field, type) pairs note_fields saw
        self._first_type: dict[str, type] = {}  # the first non-list type noted of a field

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, key: Any, now_ms: int = 0) -> Row | None:
        return self.rows.get(key)

    def scan(self, now_ms: int = 0) -> Iterator[Row]:
        return iter(list(self.rows.values()))

    def _apply_edge(self, op: int, key: list[str], props: dict[str, Any]) -> None:
        src, dst, label = key
        old = self.edges.get(src, dst, label)
        if old is not None:
            self.size_bytes -= len(codec.pack([key, old]))
        if op in REMOVING_OPS:
            self.edges.delete(src, dst, label)
        else:
            self.edges.put(src, dst, label, props)
            self.size_bytes += len(codec.pack([key, props]))

    def _apply_crdt(self, doc_id: str, data: Any) -> None:
        before = len(self.crdt.snapshot(doc_id) or b"")
        try:
            self.crdt.apply(doc_id, data)
        except CrdtError:
            # Updates are checked before they are logged; one that still fails
            # must not stop replay of everything after it.
            log.error(
                "collection %s: skipped a CRDT update of %s that does not decode", self.name, doc_id
            )
            return
        self.size_bytes += len(self.crdt.snapshot(doc_id) or b"") - before

    def load_crdt(self, item: list[Any]) -> None:
        try:
            self.crdt.apply(item[0], item[1])
        except CrdtError:
            log.error("collection %s: a checkpointed CRDT document does not decode", self.name)

    def load_edge(self, item: list[Any]) -> None:
        self.edges.put(item[0], item[1], item[2], item[3])

    def add_index(self, name: str, field: str) -> FieldIndex:
        index = FieldIndex(name, field)
        index.build(self.rows.items())
        self.indexes[field] = index
        return index

    def drop_index(self, field: str) -> None:
        self.indexes.pop(field, None)

    def new_vector_index(
        self,
        name: str,
        field: str | None,
        metric: str,
        dim: int,
        options: dict[str, int] | None = None,
    ) -> VectorIndex:
        """An empty vector index, not installed; unbound, it takes the first field
        already holding vectors."""
        vindex = VectorIndex(name, field, metric, dim, options)
        if field is None:
            vindex.field = next(
                (f for f, tags in self.field_types.items() if "vector" in tags), None
            )
        return vindex

    def add_vector_index(
        self,
        name: str,
        field: str | None,
        metric: str,
        dim: int,
        options: dict[str, int] | None = None,
    ) -> VectorIndex:
        """Create a vector index and build it from the rows, here and now."""
        vindex = self.new_vector_index(name, field, metric, dim, options)
        if vindex.field is not None:
            field = vindex.field
            vindex.build((key, row.get(field)) for key, row in self.rows.items())
        self.vectors[name] = vindex
        return vindex

    def watch_changes(self) -> set[Any]:
        """A set that from now on collects the key of every row written or deleted,
        until ``unwatch``: what an index built from a copy of the rows must catch up on."""
        keys: set[Any] = set()
        self.watchers.append(keys)
        return keys

    def unwatch(self, keys: set[Any]) -> None:
        self.watchers = [w for w in self.watchers if w is not keys]

    def catch_up(self, vindex: VectorIndex, keys: Iterable[Any]) -> None:
        """Bring ``vindex`` up to date with the rows of ``keys`` as they are now."""
        assert vindex.field is not None
        for key in keys:
            row = self.rows.get(key)
            if row is None:
                vindex.remove(key)
            else:
                vindex.put(key, row.get(vindex.field))

    def vector_index_on(self, field: str) -> VectorIndex | None:
        return next((v for v in self.vectors.values() if v.field == field), None)

    def expires_at(self, key: Any) -> int | None:
        """When a key expires (Unix ms); only key-value rows have a TTL."""
        return None

    def fields(self) -> list[str]:
        return list(self.field_types)

    def column_oid(self, name: str) -> int | None:
        """The declared type of a field (a KV value field, a table column), else None."""
        return None

    def note_fields(self, rows: list[Row]) -> None:
        """Add the value type of every field of ``rows`` to ``field_types``, in the order
        the fields first appear (``SELECT *`` lists them so). Rows mostly repeat the same
        fields holding the same types, so each field's first type is kept apart and
        checked with one lookup and no tuple made; other types go through the
        (field, Python type) pairs seen. A list's tag depends on what it holds, so lists
        are looked at each time. (The set of all pairs of a run, tested at once, took
        0.29 us a 3-field row; this loop 0.1 us compiled.)"""
        noted, first = self._noted, self._first_type
        ft = self.field_types
        for row in rows:
            for name, value in row.items():
                kind = type(value)
                if first.get(name) is kind or (name, kind) in noted:
                    continue
                tag = _TAGS.get(kind) or type_tag(value)
                tags = ft.get(name)
                if tags is None:
                    ft[name] = {tag}
                else:
                    tags.add(tag)
                if kind is not list:
                    noted.add((name, kind))
                    first.setdefault(name, kind)

    def apply(self, op: int, key: Any, row: Any, expires_ms: int | None) -> None:
        """Apply one committed operation (see ``apply_run``; ``row`` as in ``RowOp``)."""
        self.apply_run(((op, key, row, expires_ms),))

    def apply_run(self, ops: Sequence[RowOp]) -> None:
        """Apply committed operations, in order: (op, key, row, expires_ms) each, live or
        replayed (both count sizes alike). ``op`` is an OpKind value, a plain int when
        replayed. Replay hands over runs of many at once, so the lookups of this loop are
        made once a run (with the other changes of that commit, applying 200,000
        single-row records went from 2.5 to 2.0 us a record). ``size_bytes`` counts each
        row's encoded size: the rows written, less the rows they replace or remove, are
        each packed as one list at the end (0.12 us a row, against 0.36 packed one by
        one; a list's encoding is its header and its items' encodings)."""
        rows, views, watchers = self.rows, self.views, self.watchers
        indexes, vectors = self.indexes, self.vectors
        written: list[Row] = []  # counted and their field types noted at the end
        gone: list[Row] = []  # the rows replaced or removed, counted at the end
        try:
            for op, key, row, _expires in ops:
                if op not in ROW_OPS:  # edges and CRDT documents overlay the rows
                    if op in EDGE_OPS:
                        self._apply_edge(op, key, row or {})
                    elif op in CRDT_OPS:
                        self._apply_crdt(key, row)
                    continue
                if views.open:
                    views.before_change(key, functools.partial(self._pre_image, key))
                for keys in watchers:
                    keys.add(key)
                old = rows.get(key)
                if old is not None:
                    gone.append(old)
                    for f, index in indexes.items():
                        index.remove(old.get(f), key)
                if op in REMOVING_OPS:
                    rows.pop(key, None)
                    for vindex in vectors.values():
                        vindex.remove(key)
                    continue
                assert row is not None
                rows[key] = row
                if indexes:
                    for f, index in indexes.items():
                        index.add(row.get(f), key)
                if vectors:
                    for vindex in vectors.values():
                        vindex.bind_from(row, row)
                        if vindex.field is not None:
                            vindex.put(key, row.get(vindex.field))
                written.append(row)
        finally:
            self.size_bytes += _packed_size(written) - _packed_size(gone)
            if written:
                self.note_fields(written)

    # ---- checkpoint ---------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        return {"field_types": {k: sorted(v) for k, v in self.field_types.items()}}

    def load_meta(self, meta: dict[str, Any]) -> None:
        self.field_types = {k: set(v) for k, v in meta.get("field_types", {}).items()}
        self._noted = set()
        self._first_type = {}
        self.field_types.setdefault(self.key_field, {"text"})

    def checkpoint_parts(self, prefix: str) -> list[tuple[str, Iterable[Any]]]:
        """What a checkpoint stores, as (part name, items), as of now: opened on the event
        loop, read on a worker thread through copy-on-write views (storage/snapshot.py).
        The caller must ``snapshot.release`` the parts when done with them."""
        parts: list[tuple[str, Iterable[Any]]] = [(prefix, self.snapshot_items())]
        if self.edges.count:
            parts.append((f"{prefix}.edges", self.edges.snapshot()))
        if len(self.crdt):
            parts.append((f"{prefix}.crdt", self.crdt.snapshot_items()))
        return parts

    def load_parts(self, prefix: str, read_part: Callable[[str], Iterator[Any]]) -> None:
        self.load_items(read_part(prefix))
        for edge in read_part(f"{prefix}.edges"):
            self.load_edge(edge)
        for doc in read_part(f"{prefix}.crdt"):
            self.load_crdt(doc)

    def _pre_image(self, key: Any) -> Any:
        """What a snapshot keeps of ``key`` before it changes (see snapshot_items)."""
        return self.rows.get(key)

    def snapshot_items(self) -> SnapshotItems:
        """[key, row] items as of now; opened on the event loop, read on a worker."""
        view = self.views.new(list(self.rows))
        return SnapshotItems(view, view.read(self.rows.get))

    def load_items(self, items: Iterable[Any]) -> None:
        """Checkpointed [key, row] items; ``size_bytes`` is set afterwards (see load_size)."""
        self.rows.update(items)  # one C loop: loading is most of a restart or restore

    def load_size(self, estimate: int | None) -> None:
        """After a checkpoint load: the size it recorded, counted again only if absent
        (packing every row again would cost as much as reading it)."""
        if estimate is not None:
            self.size_bytes = estimate
            return
        self.size_bytes = sum(len(codec.pack(row)) for row in self.rows.values())
        self.size_bytes += sum(
            len(codec.pack([[src, dst, label], props]))
            for src, outs in self.edges.out.items()
            for (dst, label), props in outs.items()
        )
        self.size_bytes += sum(len(self.crdt.snapshot(d) or b"") for d in self.crdt.docs)
