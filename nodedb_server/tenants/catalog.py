"""A tenant's state: its catalog of collections and each collection's engine.

This is the state machine the tenant's store checkpoints and replays. Every
change arrives as a committed WAL record: DATA records carry row operations,
CATALOG records carry one catalog change (create, drop, undrop, purge).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from nodedb_server.engines import EngineKind
from nodedb_server.engines.base import RowCollection, RowOp
from nodedb_server.engines.document import DocumentCollection, TableColumn
from nodedb_server.engines.kv import KvCollection
from nodedb_server.engines.timeseries import TimeseriesCollection
from nodedb_server.engines.vector import VectorIndex
from nodedb_server.storage import codec
from nodedb_server.storage.records import OpKind, Record, RecordKind

# Bound once, as plain ints: apply() runs per replayed record, and on Python 3.11
# naming a member (RecordKind.DATA) costs about 0.1 us through EnumType.__getattr__,
# and comparing with one is slower than int with int (measured).
_DATA, _CATALOG = int(RecordKind.DATA), int(RecordKind.CATALOG)

# One row operation as the WAL stores it: (op, collection, key, row, expires_ms).
Op = tuple[OpKind, str, Any, dict[str, Any] | bytes | None, int | None]  # bytes: a CRDT update


@dataclass
class CollectionMeta:
    id: int
    name: str
    engine: EngineKind
    owner: str
    created_lsn: int
    created_ms: int
    typed_fields: dict[str, str]  # KV value fields, or timeseries columns (name -> kind)
    dropped_ms: int | None = None
    # timeseries: time_key, partition_us, dynamic; a table (CREATE TABLE): "table", its
    # schema (engines/document.py)
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CollectionMeta:
        return cls(**d)


Engine = RowCollection | TimeseriesCollection


def new_engine(meta: CollectionMeta) -> Engine:
    if meta.engine == "kv":
        return KvCollection(meta.name, meta.typed_fields)
    if meta.engine == "timeseries":
        o = meta.options
        return TimeseriesCollection(
            meta.name, o["time_key"], meta.typed_fields, o["partition_us"], o["dynamic"]
        )
    return DocumentCollection(meta.name, meta.options.get("table"))


# A secondary index on one field, or a vector (HNSW) index.
IndexKind = Literal["field", "vector"]


@dataclass
class IndexMeta:
    name: str
    collection: str
    field: str | None  # a vector index may be unbound until a vector arrives
    created_lsn: int
    kind: IndexKind = "field"
    metric: str = ""
    dim: int = 0
    options: dict[str, int] = dataclasses.field(default_factory=dict)  # HNSW parameters


@dataclass
class StreamMeta:
    """A change stream: the committed changes of one collection, from ``created_lsn`` on."""

    name: str
    collection: str
    compaction: str  # "" or "key": a read keeps the newest change per id
    created_lsn: int


@dataclass
class GroupMeta:
    """A consumer group of a stream and its committed offset: everything at or below
    ``committed_lsn`` has been consumed. It starts at the stream's creation."""

    stream: str
    name: str
    committed_lsn: int
    created_lsn: int
    # A restore moved the offset forward to the restored state (it had been at this
    # LSN): the changes in between are in the restored data, not in the stream.
    clamped_from: int | None = None


def clamp_events(meta: dict[str, Any], lsn: int) -> None:
    """The change streams and consumer groups in the checkpoint ``meta`` of a tenant
    restored to LSN ``lsn``, which has no WAL before it: a group's offset before it
    moves to it (saying from where), and a stream's history starts there."""
    meta["streams"] = [
        {**m, "created_lsn": max(m["created_lsn"], lsn)} for m in meta.get("streams", [])
    ]
    groups = []
    for g in meta.get("groups", []):
        if g["committed_lsn"] < lsn:
            g = {**g, "committed_lsn": lsn, "clamped_from": g["committed_lsn"]}
        groups.append(g)
    meta["groups"] = groups


def let_others_run() -> None:
    """Give the GIL up for a moment: between the runs of a replay on a worker thread,
    so that the event loop goes on serving the other tenants. Compiled code
    (nodedb_server/_hot.py) never offers the GIL by itself the way the interpreter
    does every few milliseconds: replaying a 600,000-row COPY record held it for up to
    940 ms. Once another thread has waited for it, releasing it hands it over."""
    time.sleep(0)


# A DATA record body above this many bytes is decoded in pieces (codec.unpack_array).
LARGE_BODY = 1 << 20
RUN_OPS = 4096  # the most operations a run holds


class _Runs:
    """Operations gathered into runs, one engine each, applied in order (``flush``);
    at most ``RUN_OPS`` at a time, so that a long replay holds few of them. With ``pause``,
    it is called after each run is applied."""

    def __init__(self, engines: dict[str, Engine], pause: Callable[[], None] | None = None):
        self._engines = engines
        self._pause = pause
        self._coll: str | None = None
        self._engine: Engine | None = None
        self._ops: list[RowOp] = []

    def add(self, coll: str, op: RowOp) -> None:
        if coll != self._coll or len(self._ops) >= RUN_OPS:
            self.flush()
            self._coll, self._engine = coll, self._engines.get(coll)
        if self._engine is not None:  # operations on a collection since purged: none
            self._ops.append(op)

    def flush(self) -> None:
        if self._ops and self._engine is not None:
            self._engine.apply_run(self._ops)
            if self._pause is not None:
                self._pause()
        self._ops = []
        self._coll = self._engine = None


class TenantState:
    def __init__(self) -> None:
        self.catalog: dict[str, CollectionMeta] = {}
        self.streams: dict[str, StreamMeta] = {}
        self.groups: dict[tuple[str, str], GroupMeta] = {}  # by (stream, group)
        self.indexes: dict[str, IndexMeta] = {}  # by index name
        self.tombstones: dict[str, int] = {}  # purged collection -> the LSN of its purge
        self.engines: dict[str, Engine] = {}
        self.next_collection_id = 1
        self.last_lsn = 0
        # The LSN of the last DATA record (after a checkpoint load: its LSN, as nothing
        # tells the two apart there); a consumer group at or past it is caught up.
        self.last_data_lsn = 0

    # ---- reading -------------------------------------------------------------

    def clamp_events(self, lsn: int) -> None:
        """``clamp_events`` for this state's streams and groups."""
        for m in self.streams.values():
            m.created_lsn = max(m.created_lsn, lsn)
        for g in self.groups.values():
            if g.committed_lsn < lsn:
                g.clamped_from, g.committed_lsn = g.committed_lsn, lsn

    def retained_from(self) -> int | None:
        """The oldest LSN a change stream still needs, or None: the WAL from it on is
        kept past checkpoints. A stream needs what follows the committed offset of its
        slowest group; one with no group yet, what follows its creation (a group
        created later starts there)."""
        needs = []
        for stream in self.streams.values():
            offsets = [g.committed_lsn for k, g in self.groups.items() if k[0] == stream.name]
            needs.append(min(offsets) if offsets else stream.created_lsn)
        return min(needs) + 1 if needs else None

    def collection(self, name: str) -> tuple[CollectionMeta, Engine] | None:
        meta = self.catalog.get(name)
        if meta is None or meta.dropped_ms is not None:
            return None
        return meta, self.engines[name]

    def active(self) -> list[CollectionMeta]:
        return sorted(
            (m for m in self.catalog.values() if m.dropped_ms is None), key=lambda m: m.name
        )

    # ---- applying committed records ------------------------------------------

    def apply(self, rec: Record, lsn: int | None = None) -> None:
        """Apply a committed record; as LSN ``lsn`` if given (a point-in-time restore
        renumbers the records it replays), else as its own."""
        if lsn is None:
            lsn = rec.lsn
        body = codec.unpack(rec.body)
        if rec.rtype == _DATA:
            self.apply_ops(body)
            self.last_data_lsn = lsn
        elif rec.rtype == _CATALOG:
            self.apply_catalog(lsn, rec.commit_us // 1000, body[0], body[1])
        self.last_lsn = lsn

    def apply_ops(self, ops: Sequence[Op] | Sequence[list[Any]]) -> None:
        runs = _Runs(self.engines)
        for op, coll, key, row, expires in ops:
            runs.add(coll, (op, key, row, expires))
        runs.flush()

    def replay(self, records: Iterable[Record], shift: int = 0) -> None:
        """``apply`` each record, in order, as LSN ``rec.lsn + shift`` (a point-in-time
        restore renumbers the records it replays): recovery's path. The row operations
        of consecutive DATA records go to each engine as runs (``apply_run``), and a
        CATALOG record applies after the operations before it."""
        unpack = codec.unpack
        runs = _Runs(self.engines, let_others_run)
        for rec in records:
            if rec.rtype == _DATA:
                body = rec.body
                if len(body) > LARGE_BODY:
                    ops = codec.unpack_array(body, RUN_OPS, let_others_run)
                else:
                    ops = unpack(body)
                for op, coll, key, row, expires in ops:
                    runs.add(coll, (op, key, row, expires))
                self.last_lsn = self.last_data_lsn = rec.lsn + shift
            else:
                runs.flush()
                self.apply(rec, rec.lsn + shift)
        runs.flush()

    def apply_catalog(
        self,
        lsn: int,
        at_ms: int,
        action: str,
        args: dict[str, Any],
        built: VectorIndex | None = None,
    ) -> None:
        """``built``: for create_vector_index, the index already built from the rows
        (off the event loop, see Session._create_vector_index) rather than built here."""
        name = args["name"]
        if action in ("create_index", "create_vector_index"):
            meta_i = IndexMeta(name, args["collection"], args["field"], lsn)
            if action == "create_vector_index":
                meta_i.kind, meta_i.metric, meta_i.dim = "vector", args["metric"], args["dim"]
                meta_i.options = dict(args.get("options", {}))
            self.indexes[name] = meta_i
            self._build_index(meta_i, built)
        elif action == "drop_index":
            dropped = self.indexes.pop(name, None)
            engine = self.engines.get(dropped.collection) if dropped is not None else None
            if dropped is not None and isinstance(engine, RowCollection):
                if dropped.kind == "vector":
                    engine.vectors.pop(name, None)
                elif dropped.field is not None:
                    engine.drop_index(dropped.field)
        elif action == "create_collection":
            meta = CollectionMeta(
                id=self.next_collection_id,
                name=name,
                engine=args["engine"],
                owner=args.get("owner", ""),
                created_lsn=lsn,
                created_ms=at_ms,
                typed_fields=dict(args.get("typed_fields", {})),
                options=dict(args.get("options", {})),
            )
            self.next_collection_id += 1
            self.catalog[name] = meta
            self.engines[name] = new_engine(meta)
        elif action == "add_column":
            # ALTER TABLE .. ADD COLUMN: the catalog entry and the engine learn it alike.
            col = TableColumn.of(args["column"])
            engine = self.engines[name]
            assert isinstance(engine, DocumentCollection)
            engine.add_column(col)
            meta = self.catalog[name]
            meta.options = {**meta.options, "table": engine.table.to_dict()}
        elif action == "drop_collection" and name in self.catalog:
            self.catalog[name].dropped_ms = at_ms
        elif action == "undrop_collection" and name in self.catalog:
            self.catalog[name].dropped_ms = None
        elif action == "create_stream":
            self.streams[name] = StreamMeta(
                name, args["collection"], args.get("compaction", ""), lsn
            )
        elif action == "drop_stream":
            self.streams.pop(name, None)
            for key in [k for k in self.groups if k[0] == name]:
                del self.groups[key]
        elif action == "create_group":
            stream = self.streams[args["stream"]]
            self.groups[(stream.name, name)] = GroupMeta(stream.name, name, stream.created_lsn, lsn)
        elif action == "drop_group":
            self.groups.pop((args["stream"], name), None)
        elif action == "commit_offset":
            group = self.groups.get((args["stream"], name))
            if group is not None:  # offsets never move backwards
                group.committed_lsn = max(group.committed_lsn, args["lsn"])
        elif action == "purge_collection":
            self.catalog.pop(name, None)
            self.engines.pop(name, None)
            self.tombstones[name] = lsn
            for iname in [i for i, m in self.indexes.items() if m.collection == name]:
                del self.indexes[iname]
        else:
            raise ValueError(f"unknown catalog action {action!r}")

    def _build_index(self, meta: IndexMeta, built: VectorIndex | None = None) -> None:
        engine = self.engines[meta.collection]
        if not isinstance(engine, RowCollection):
            raise ValueError(f"collection {meta.collection} takes no index")
        if built is not None:
            engine.vectors[meta.name] = built
        elif meta.kind == "vector":
            engine.add_vector_index(meta.name, meta.field, meta.metric, meta.dim, meta.options)
        elif meta.field is not None:
            engine.add_index(meta.name, meta.field)

    def index_field(self, meta: IndexMeta) -> str | None:
        """The field an index covers now (a vector index binds on first use)."""
        if meta.kind == "vector":
            vindex = self.engines[meta.collection].vectors.get(meta.name)
            return vindex.field if vindex is not None else meta.field
        return meta.field

    # ---- checkpoint ------------------------------------------------------------

    def checkpoint_parts(self) -> tuple[dict[str, Any], list[tuple[str, Iterable[Any]]]]:
        meta: dict[str, Any] = {
            "next_collection_id": self.next_collection_id,
            "last_lsn": self.last_lsn,
            "tombstones": dict(self.tombstones),
            "collections": [
                {
                    "meta": asdict(m),
                    "engine": self.engines[m.name].meta(),
                    "size_bytes_estimate": self.engines[m.name].size_bytes,
                }
                for m in sorted(self.catalog.values(), key=lambda m: m.id)
            ],
            "indexes": [
                {**asdict(i), "field": self.index_field(i)}
                for i in sorted(self.indexes.values(), key=lambda i: i.name)
            ],
            "streams": [asdict(m) for _, m in sorted(self.streams.items())],
            "groups": [asdict(g) for _, g in sorted(self.groups.items())],
        }
        parts: list[tuple[str, Iterable[Any]]] = []
        for m in sorted(self.catalog.values(), key=lambda m: m.id):
            parts += self.engines[m.name].checkpoint_parts(f"c{m.id}")
        return meta, parts

    def load_checkpoint(
        self, meta: dict[str, Any], read_part: Callable[[str], Iterator[Any]]
    ) -> None:
        self.catalog.clear()
        self.engines.clear()
        self.next_collection_id = meta.get("next_collection_id", 1)
        self.last_lsn = self.last_data_lsn = meta.get("last_lsn", 0)
        self.tombstones = dict(meta.get("tombstones", {}))
        self.streams = {e["name"]: StreamMeta(**e) for e in meta.get("streams", [])}
        self.groups = {(e["stream"], e["name"]): GroupMeta(**e) for e in meta.get("groups", [])}
        for entry in meta.get("collections", []):
            m = CollectionMeta.from_dict(entry["meta"])
            engine = new_engine(m)
            engine.load_meta(entry["engine"])
            engine.load_parts(f"c{m.id}", read_part)
            engine.load_size(entry.get("size_bytes_estimate"))
            self.catalog[m.name] = m
            self.engines[m.name] = engine
        # Index contents are rebuilt from the rows rather than stored: see docs/FORMATS.md.
        self.indexes.clear()
        for entry in meta.get("indexes", []):
            im = IndexMeta(**entry)
            self.indexes[im.name] = im
            self._build_index(im)
