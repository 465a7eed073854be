"""Statements as the executor receives them. Parsed once per statement text and cached,
so nothing here is mutated after parsing (a SELECT's plan cache aside, see plan.py)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from nodedb_server.sql.expr import Agg, Expr, Func


@dataclass(frozen=True)
class SelectItem:
    expr: Expr
    name: str


@dataclass(frozen=True)
class OrderItem:
    expr: Expr | None  # None when ``position`` names an output column
    position: int | None
    desc: bool


@dataclass(frozen=True)
class Select:
    items: list[SelectItem]
    star: bool
    source: str | None  # collection name, or "_system.<view>"
    where: Expr | None = None
    group_by: list[Expr] = field(default_factory=list)
    order_by: list[OrderItem] = field(default_factory=list)
    limit: Expr | None = None
    offset: Expr | None = None
    # Facts derived once, when the statement is parsed (it is cached and run again):
    # the aggregate calls of the output and ORDER BY, the functions called anywhere,
    # and the plans made for it (sql/plan.py), one per shape of the collection.
    aggregates: tuple[Agg, ...] = field(init=False, repr=False, compare=False)
    functions: frozenset[str] = field(init=False, repr=False, compare=False)
    plans: dict[Any, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        out_roots = [it.expr for it in self.items] + [o.expr for o in self.order_by if o.expr]
        other_roots = [e for e in (self.where, *self.group_by) if e is not None]
        output = [n for r in out_roots for n in r.walk()]
        every = output + [n for r in other_roots for n in r.walk()]
        object.__setattr__(self, "aggregates", tuple(n for n in output if isinstance(n, Agg)))
        object.__setattr__(
            self, "functions", frozenset(n.name for n in every if isinstance(n, Func))
        )
        object.__setattr__(self, "plans", {})


@dataclass(frozen=True)
class OnConflict:
    action: str  # "nothing" | "update"
    assignments: list[tuple[str, Expr]] = field(default_factory=list)


@dataclass(frozen=True)
class Insert:
    collection: str
    rows: list[list[tuple[str, Expr]]]
    on_conflict: OnConflict | None = None
    upsert: bool = False
    object_form: bool = False  # ``{...}`` literals, where ``ttl`` is the KV expiry
    returning: list[SelectItem] = field(default_factory=list)  # empty: no RETURNING
    # INSERT INTO t VALUES (..) without a column list: the names in ``rows`` are "",
    # the table's columns in their order (exec/rows.py insert_rows)
    positional: bool = False
    # INSERT INTO t [(cols)] SELECT ..: the query whose rows are inserted (``rows`` is
    # empty), into ``columns`` (empty: the table's columns in their order)
    query: Statement | None = None
    columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Update:
    collection: str
    assignments: list[tuple[str, Expr]]
    where: Expr | None
    returning: list[SelectItem] = field(default_factory=list)
    plans: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)


@dataclass(frozen=True)
class Delete:
    collection: str
    where: Expr | None
    returning: list[SelectItem] = field(default_factory=list)  # of the deleted rows
    plans: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)


@dataclass(frozen=True)
class CreateCollection:
    name: str
    engine: str  # "document" | "kv" | "timeseries"
    typed_fields: dict[str, str]
    if_not_exists: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeclareCursor:
    """DECLARE name [[NO] SCROLL] CURSOR [WITH | WITHOUT HOLD] FOR select."""

    name: str
    select: Select
    hold: bool


@dataclass(frozen=True)
class FetchCursor:
    """FETCH / MOVE [NEXT | FORWARD [n | ALL] | n | ALL] [FROM | IN] name."""

    name: str
    count: int | None  # None: ALL
    move: bool


@dataclass(frozen=True)
class CloseCursor:
    name: str | None  # None: CLOSE ALL


@dataclass(frozen=True)
class CopyTo:
    """COPY c [(cols)] TO STDOUT / COPY (SELECT ..) TO STDOUT, as text or csv."""

    select: Select
    format: str  # "text" or "csv"
    header: bool
    delimiter: str
    null: str
    quote: str


@dataclass(frozen=True)
class CopyFrom:
    """COPY c [(cols)] FROM STDIN [WITH (FORMAT csv|text, HEADER, DELIMITER 'x')]."""

    collection: str
    columns: list[str] | None
    format: str = "text"
    header: bool = False
    delimiter: str | None = None


@dataclass(frozen=True)
class DropCollection:
    name: str
    purge: bool = False
    if_exists: bool = False
    tag: str = "DROP COLLECTION"  # DROP TABLE is DROP COLLECTION .. PURGE, so tagged


@dataclass(frozen=True)
class AddColumns:
    """ALTER TABLE [IF EXISTS] t ADD [COLUMN] [IF NOT EXISTS] c type [...], ..."""

    collection: str
    # [name, type, not_null, default] each (engines/document.py TableColumn), and
    # whether it said IF NOT EXISTS
    columns: tuple[tuple[list[Any], bool], ...]
    if_exists: bool = False


@dataclass(frozen=True)
class CreateIndex:
    name: str | None
    collection: str
    field: str
    if_not_exists: bool = False


@dataclass(frozen=True)
class CreateVectorIndex:
    name: str
    collection: str
    field: str | None  # None: bind to the first field holding numeric arrays
    metric: str
    dim: int
    options: dict[str, int] = dataclasses.field(
        default_factory=dict
    )  # m, ef_construction, ef_search


@dataclass(frozen=True)
class VectorSearch:
    """SEARCH c USING VECTOR(field, query, k): id and distance, nearest first."""

    collection: str
    field: str
    query: Expr
    k: Expr


@dataclass(frozen=True)
class DropIndex:
    name: str
    if_exists: bool = False


@dataclass(frozen=True)
class UndropCollection:
    name: str


@dataclass(frozen=True)
class CreateTenant:
    name: str


@dataclass(frozen=True)
class DropTenant:
    name: str


@dataclass(frozen=True)
class PurgeTenant:
    name: str


@dataclass(frozen=True)
class CreateUser:
    name: str
    password: str
    tenant: str | None


@dataclass(frozen=True)
class DropUser:
    name: str


@dataclass(frozen=True)
class Grant:
    privilege: str
    tenant: str
    user: str


@dataclass(frozen=True)
class ShowCollections:
    pass


@dataclass(frozen=True)
class ShowTenants:
    pass


@dataclass(frozen=True)
class Show:
    name: str


@dataclass(frozen=True)
class SetVar:
    name: str
    value: str | None  # None: RESET / DEFAULT


@dataclass(frozen=True)
class DescribeCollection:
    name: str


@dataclass(frozen=True)
class Begin:
    pass


@dataclass(frozen=True)
class Commit:
    pass


@dataclass(frozen=True)
class Rollback:
    pass


@dataclass(frozen=True)
class SetTransaction:
    """SET [SESSION CHARACTERISTICS AS] TRANSACTION modes (changes nothing)."""


@dataclass(frozen=True)
class Savepoint:
    name: str


@dataclass(frozen=True)
class ReleaseSavepoint:
    name: str


@dataclass(frozen=True)
class RollbackTo:
    """ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name."""

    name: str


@dataclass(frozen=True)
class Checkpoint:
    pass


@dataclass(frozen=True)
class Explain:
    statement: Select | Update | Delete
    analyze: bool = False


@dataclass(frozen=True)
class GraphEdgeWrite:
    """GRAPH INSERT EDGE / GRAPH DELETE EDGE."""

    delete: bool
    collection: str
    source: Expr
    target: Expr
    label: Expr
    properties: Expr | None = None


@dataclass(frozen=True)
class GraphQuery:
    """GRAPH NEIGHBORS / TRAVERSE / PATH: ``kind`` says which."""

    kind: str  # "neighbors" | "traverse" | "path"
    collection: str
    start: Expr
    target: Expr | None = None
    depth: Expr | None = None
    label: Expr | None = None
    direction: str = "out"


@dataclass(frozen=True)
class CrdtApply:
    """``SELECT crdt_apply(collection, doc_id, update)``: a write, though spelled as a SELECT."""

    collection: Expr
    doc_id: Expr
    data: Expr


@dataclass(frozen=True)
class GraphAlgo:
    algorithm: str  # "pagerank" | "wcc"
    collection: str
    damping: Expr | None = None
    iterations: Expr | None = None


@dataclass(frozen=True)
class BackupTenant:
    """BACKUP TENANT t TO 'path' [WITH (overwrite)]; path None: COPY (BACKUP ..) TO STDOUT."""

    tenant: str
    path: str | None
    overwrite: bool = False


@dataclass(frozen=True)
class RestoreTenant:
    """RESTORE TENANT t FROM 'path' | SNAPSHOT [UNTIL LSN n | UNTIL TIMESTAMP '..']
    [DRY RUN] [WITH (rename, resurrect)]. ``path`` None and not ``snapshot``: COPY
    tenant_restore(t) FROM STDIN. ``until_us``: the target in microseconds (UTC)."""

    tenant: str
    path: str | None
    dry_run: bool
    rename: bool = False
    resurrect: bool = False
    snapshot: bool = False
    until_lsn: int | None = None
    until_us: int | None = None

    @property
    def until(self) -> bool:
        return self.until_lsn is not None or self.until_us is not None


@dataclass(frozen=True)
class ShowRestoreRange:
    """SHOW RESTORE RANGE FOR TENANT t."""

    tenant: str


@dataclass(frozen=True)
class AlterSystem:
    name: str
    value: str


@dataclass(frozen=True)
class CatalogQuery:
    """A query over pg_catalog (drivers' type introspection): see sql/catalog_query.py."""

    query: Any


@dataclass(frozen=True)
class RelationalQuery:
    """A read the native planner does not take (JOIN, DISTINCT, CASE, CTEs, set
    operations, window functions...), run by DataFusion: see sql/relational.py."""

    query: Any


@dataclass(frozen=True)
class Prepare:
    """PREPARE name [(type, ..)] AS statement. Its name lives in the one namespace the
    session shares with statements prepared through the protocol (Parse)."""

    name: str
    param_oids: tuple[int, ...]  # declared types; 0 or missing: inferred
    statement: Statement
    sql: str


@dataclass(frozen=True)
class ExecutePrepared:
    """EXECUTE name [(arg, ..)]."""

    name: str
    args: list[Expr]


@dataclass(frozen=True)
class Deallocate:
    name: str | None  # None: ALL


@dataclass(frozen=True)
class Truncate:
    """TRUNCATE [TABLE] [ONLY] name [, ...] [RESTART | CONTINUE IDENTITY] [CASCADE | RESTRICT]."""

    collections: tuple[str, ...]


@dataclass(frozen=True)
class Discard:
    what: str  # "all" | "plans" | "temp" | "sequences"


@dataclass(frozen=True)
class Empty:
    pass


# ---- change streams (the Event Plane) ------------------------------------------------


@dataclass(frozen=True)
class CreateChangeStream:
    name: str
    collection: str
    compaction: str = ""  # "" or "key"
    if_not_exists: bool = False


@dataclass(frozen=True)
class DropChangeStream:
    name: str
    if_exists: bool = False


@dataclass(frozen=True)
class ShowChangeStreams:
    pass


@dataclass(frozen=True)
class CreateConsumerGroup:
    name: str
    stream: str
    if_not_exists: bool = False


@dataclass(frozen=True)
class DropConsumerGroup:
    name: str
    stream: str
    if_exists: bool = False


@dataclass(frozen=True)
class ReadStream:
    """SELECT * FROM STREAM s CONSUMER GROUP g [LIMIT n]."""

    stream: str
    group: str
    limit: int | None = None


@dataclass(frozen=True)
class LiveSelect:
    """LIVE SELECT * FROM coll [WHERE ..] [SINCE LSN n]."""

    select: Select
    since_lsn: int | None = None


@dataclass(frozen=True)
class KillLive:
    query_id: str


@dataclass(frozen=True)
class Listen:
    channel: str


@dataclass(frozen=True)
class Unlisten:
    channel: str | None  # None: UNLISTEN *


@dataclass(frozen=True)
class Notify:
    channel: str
    payload: str = ""


@dataclass(frozen=True)
class ShowChanges:
    """SHOW CHANGES FOR coll SINCE LSN n | SINCE '<timestamp>' [LIMIT n]."""

    collection: str
    since_lsn: int | None = None
    since_us: int | None = None  # microseconds since the epoch
    limit: int | None = None


@dataclass(frozen=True)
class CommitOffsets:
    """COMMIT OFFSETS ON s CONSUMER GROUP g (``lsn`` None: what this session last read)
    or COMMIT OFFSET AT n ON s CONSUMER GROUP g."""

    stream: str
    group: str
    lsn: int | None = None


Statement = (
    Select
    | Insert
    | Update
    | Delete
    | CreateCollection
    | DropCollection
    | AddColumns
    | UndropCollection
    | CreateIndex
    | CreateVectorIndex
    | VectorSearch
    | DropIndex
    | CreateTenant
    | DropTenant
    | PurgeTenant
    | CreateUser
    | DropUser
    | Grant
    | ShowCollections
    | ShowTenants
    | Show
    | SetVar
    | DescribeCollection
    | Begin
    | Commit
    | Rollback
    | Savepoint
    | CopyTo
    | DeclareCursor
    | FetchCursor
    | CloseCursor
    | SetTransaction
    | ReleaseSavepoint
    | RollbackTo
    | Checkpoint
    | Explain
    | GraphEdgeWrite
    | GraphQuery
    | GraphAlgo
    | CrdtApply
    | CopyFrom
    | CatalogQuery
    | Truncate
    | RelationalQuery
    | AlterSystem
    | BackupTenant
    | RestoreTenant
    | ShowRestoreRange
    | Prepare
    | ExecutePrepared
    | Deallocate
    | Discard
    | CreateChangeStream
    | DropChangeStream
    | ShowChangeStreams
    | CreateConsumerGroup
    | DropConsumerGroup
    | ReadStream
    | CommitOffsets
    | ShowChanges
    | Listen
    | Unlisten
    | Notify
    | LiveSelect
    | KillLive
    | Empty
)
