"""Executing statements for one session: reads, writes, transactions, catalog, settings.

Writes are computed against what the session sees (committed state plus its
own transaction) and become row operations. Outside a transaction they are
committed at once; inside one they are kept as intents and committed as one
WAL record at COMMIT, after their constraints are checked again against the
state at that moment (read committed, as SQL.md says).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import errno
import functools
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypeVar

from nodedb_server import __version__
from nodedb_server import types as t
from nodedb_server.backup.envelope import EnvelopeError, EnvelopeReader
from nodedb_server.backup.progress import (
    Operation,
    Operations,
    Progress,
    ProgressReader,
    in_worker,
)
from nodedb_server.backup.restore import dry_run, open_backup, stage_restore
from nodedb_server.backup.stream import stream_backup, stream_restore
from nodedb_server.backup.writer import (
    COUNT_NAMES,
    backup_to_file,
    check_path,
    open_backup_file,
)
from nodedb_server.engines.base import Row, RowCollection, type_tag
from nodedb_server.engines.crdt import CrdtError, check_update
from nodedb_server.engines.graph import EdgeStore
from nodedb_server.engines.kv import KvCollection
from nodedb_server.engines.timeseries import (
    TimeseriesCollection,
    TimeseriesError,
    from_ipc,
    table_rows,
    to_ipc,
)
from nodedb_server.engines.vector import VectorIndex, as_vector
from nodedb_server.engines.vector import distance as vector_distance_of
from nodedb_server.errors import (
    ActiveSqlTransaction,
    DataError,
    DBError,
    DiskFull,
    DuplicatePreparedStatement,
    DuplicateTable,
    FeatureNotSupported,
    InFailedTransaction,
    InsufficientPrivilege,
    InvalidParameterValue,
    InvalidSqlStatementName,
    InvalidTextRepresentation,
    ObjectInUse,
    StorageFailure,
    SyntaxError_,
    UndefinedColumn,
    UndefinedObject,
    UndefinedTable,
    UniqueViolation,
)
from nodedb_server.sql import ast
from nodedb_server.sql.columnar import arrow_filter, time_bounds, vector_aggregate
from nodedb_server.sql.expr import (
    FUNC_ARG_TYPES,
    SESSION_FUNCS,
    Agg,
    And,
    Arith,
    Cast,
    Cmp,
    Const,
    Ctx,
    Expr,
    Field,
    Func,
    In,
    Neg,
    Param,
    Star,
    _num,
    cast_value,
)
from nodedb_server.sql.result import Column, CopyIn, CopyOut, Result
from nodedb_server.storage import quarantine
from nodedb_server.storage.checkpoint import checkpoint_dirs, read_info
from nodedb_server.storage.records import (
    OP_CRDT_APPLY,
    OP_DELETE,
    OP_EDGE_DELETE,
    OP_EDGE_PUT,
    OP_INSERT,
    OP_TS_APPEND,
    OP_UPDATE,
)
from nodedb_server.tenants.catalog import Engine, Op
from nodedb_server.tenants.manager import DEFAULT_TENANT, TenantManager
from nodedb_server.tenants.tenant import Tenant

SERVER_VERSION = f"15.0 (nodedb-server {__version__})"
# Rows examined between yields to the event loop, so a long scan can be
# cancelled and does not stall other sessions for long.
YIELD_EVERY = 5000
# Rows changed during a vector index build that are indexed on the event loop before
# it is installed; while more changed, another catch-up pass runs on a worker.
CATCH_UP_ON_LOOP = 1000
# One COPY is one WAL record (atomic), and a record holds at most 256 MiB.
MAX_COPY_BYTES = 192 * 1024 * 1024

KV_TYPE_OIDS = {
    "text": t.TEXT,
    "int8": t.INT8,
    "float8": t.FLOAT8,
    "bool": t.BOOL,
    "bytea": t.BYTEA,
    "timestamp": t.TIMESTAMPTZ,
    "jsonb": t.JSONB,
}
TAG_OIDS = {
    "int": t.INT8,
    "float": t.FLOAT8,
    "bool": t.BOOL,
    "text": t.TEXT,
    "bytea": t.BYTEA,
    "timestamp": t.TIMESTAMPTZ,
}

# What a Query message of several statements runs in one implicit transaction.
IMPLICIT_TXN = (
    ast.Select,
    ast.Insert,
    ast.Update,
    ast.Delete,
    ast.CatalogQuery,
    ast.GraphEdgeWrite,
    ast.CrdtApply,
    ast.VectorSearch,
    ast.GraphQuery,
    ast.GraphAlgo,
    ast.Show,
    ast.ShowCollections,
    ast.DescribeCollection,
    ast.Explain,
    ast.Empty,
)
# The value type a field records for a value of a column type (engines/base.py type_tag).
OID_TAGS = {
    t.INT2: "int",
    t.INT4: "int",
    t.INT8: "int",
    t.FLOAT4: "float",
    t.FLOAT8: "float",
    t.NUMERIC: "float",
    t.TEXT: "text",
    t.VARCHAR: "text",
    t.UNKNOWN: "text",
    t.BOOL: "bool",
    t.BYTEA: "bytea",
    t.TIMESTAMP: "timestamp",
    t.TIMESTAMPTZ: "timestamp",
    t.FLOAT4_ARRAY: "vector",
}
# A write a statement wants: (intent, key, row or payload, expires_ms); see Session._fold.
Intent = tuple[str, Any, Any, int | None]
READ_ONLY = (
    ast.Select,
    ast.BackupTenant,
    ast.RestoreTenant,
    ast.CatalogQuery,
    ast.VectorSearch,
    ast.GraphQuery,
    ast.GraphAlgo,
    ast.Show,
    ast.ShowCollections,
    ast.ShowTenants,
    ast.DescribeCollection,
    ast.Explain,
    ast.Begin,
    ast.Rollback,
    ast.SetVar,
    ast.Prepare,
    ast.ExecutePrepared,  # what it runs is checked on its own
    ast.Deallocate,
    ast.Discard,
    ast.Empty,
)
# Settings whose change the client is told of (ParameterStatus), by their reported names.
REPORTED_SETTINGS = {
    "client_encoding": "client_encoding",
    "datestyle": "DateStyle",
    "timezone": "TimeZone",
    "application_name": "application_name",
    "intervalstyle": "IntervalStyle",
}

T = TypeVar("T")
log = logging.getLogger("nodedb.sql")


@dataclass
class Prepared:
    """A prepared statement, made by PREPARE or by the protocol's Parse."""

    sql: str
    stmt: ast.Statement
    param_oids: list[int]
    columns: list[Column] | None = None
    described: bool = False  # ``columns`` is what a Describe told the client


TS_KIND_OIDS = {
    "timestamp": t.TIMESTAMPTZ,
    "text": t.TEXT,
    "float": t.FLOAT8,
    "int": t.INT8,
    "bool": t.BOOL,
}


def field_oid(engine: Engine | None, name: str) -> int:
    """The column type of a field, from the value types seen in it (SQL.md)."""
    if engine is None:
        return t.TEXT
    if isinstance(engine, TimeseriesCollection):
        return TS_KIND_OIDS.get(engine.columns.get(name, "text"), t.TEXT)
    if name == engine.key_field:
        return t.TEXT
    if isinstance(engine, KvCollection) and name in engine.typed_fields:
        return KV_TYPE_OIDS[engine.typed_fields[name]]
    return _tags_oid(engine.field_types.get(name, set()))


def _tags_oid(tags: set[str]) -> int:
    """The column type for a field holding values of these types (SQL.md)."""
    tags = tags - {"null"}
    if not tags:
        return t.TEXT
    if tags <= {"int", "float"}:
        return t.INT8 if tags == {"int"} else t.FLOAT8
    if tags == {"vector"}:
        return t.FLOAT4_ARRAY
    if len(tags) == 1:
        return TAG_OIDS.get(next(iter(tags)), t.JSONB)
    return t.JSONB


def _typed_target(engine: Engine | None, name: str) -> int | None:
    """The type of a field that has one: a KV value field declared in DDL, a timeseries
    column, or a field bound to a vector index. Schemaless fields have none."""
    if isinstance(engine, TimeseriesCollection):
        kind = engine.columns.get(name)
        return TS_KIND_OIDS[kind] if kind is not None else None
    if isinstance(engine, KvCollection) and name in engine.typed_fields:
        return KV_TYPE_OIDS[engine.typed_fields[name]]
    if isinstance(engine, RowCollection) and engine.vector_index_on(name) is not None:
        return t.FLOAT4_ARRAY
    return None


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


def _larger_than(e: Expr | None, n: int) -> bool:
    """Whether the tree has more than ``n`` nodes, looking at no more than n + 1."""
    stack = [e] if e is not None else []
    seen = 0
    while stack:
        seen += 1
        if seen > n:
            return True
        stack.extend(stack.pop().children())
    return False


def _conjuncts(e: Expr | None) -> list[Expr]:
    if e is None:
        return []
    if isinstance(e, And):
        return _conjuncts(e.left) + _conjuncts(e.right)
    return [e]


def _key_values(where: Expr | None, key_field: str) -> list[Expr] | None:
    """Expressions giving the primary keys a WHERE pins down, or None if it needs a scan."""
    for c in _conjuncts(where):
        if isinstance(c, Cmp) and c.op == "=":
            for a, b in ((c.left, c.right), (c.right, c.left)):
                if (
                    isinstance(a, Field)
                    and a.name == key_field
                    and isinstance(b, Const | Param | Cast)
                ):
                    return [b]
        if (
            isinstance(c, In)
            and isinstance(c.inner, Field)
            and c.inner.name == key_field
            and all(isinstance(i, Const | Param) for i in c.items)
        ):
            return list(c.items)
    return None


# Transaction intents that become one operation as they are, checked against nothing.
_PASS_THROUGH = {
    "edge_put": OP_EDGE_PUT,
    "edge_delete": OP_EDGE_DELETE,
    "crdt": OP_CRDT_APPLY,
    "ts": OP_TS_APPEND,
}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "="}
_VALUE = (Const, Param, Cast)  # what an index or key lookup can be probed with


@dataclass(frozen=True)
class Probe:
    """One way an index can answer part of a WHERE: equality values or a range."""

    field: str
    values: tuple[Expr, ...] = ()
    low: Expr | None = None
    low_inclusive: bool = True
    high: Expr | None = None
    high_inclusive: bool = True


@dataclass(frozen=True)
class Access:
    """How a statement finds its rows: by primary key, through an index, or by a scan.
    With several usable index probes, the one expecting fewest rows is chosen when the
    parameter values are known."""

    kind: str  # "key" | "index" | "scan"
    values: tuple[Expr, ...] = ()  # primary key values
    probes: tuple[Probe, ...] = ()


@functools.lru_cache(maxsize=4096)
def plan_access(where: Expr | None, key_field: str, indexed: frozenset[str]) -> Access:
    keys = _key_values(where, key_field)
    if keys is not None:
        return Access("key", tuple(keys))
    conj = _conjuncts(where)
    probes: list[Probe] = []
    bounds: dict[str, dict[str, tuple[Expr, bool]]] = {}
    for c in conj:
        if isinstance(c, Cmp):
            for a, b, op in ((c.left, c.right, c.op), (c.right, c.left, _FLIP.get(c.op, ""))):
                if not (isinstance(a, Field) and a.name in indexed and isinstance(b, _VALUE)):
                    continue
                if op == "=":
                    probes.append(Probe(a.name, (b,)))
                elif op in ("<", "<=", ">", ">="):
                    side = "low" if op in (">", ">=") else "high"
                    bounds.setdefault(a.name, {})[side] = (b, op in (">=", "<="))
        elif (
            isinstance(c, In)
            and isinstance(c.inner, Field)
            and c.inner.name in indexed
            and all(isinstance(i, _VALUE) for i in c.items)
        ):
            probes.append(Probe(c.inner.name, tuple(c.items)))
    for f, bnd in bounds.items():
        low, high = bnd.get("low"), bnd.get("high")
        probes.append(
            Probe(
                f,
                (),
                low[0] if low else None,
                low[1] if low else True,
                high[0] if high else None,
                high[1] if high else True,
            )
        )
    if probes:
        return Access("index", probes=tuple(probes))
    return Access("scan")


def _sort_key(v: Any) -> tuple[int, Any]:
    if v is None:
        return (9, 0)
    if isinstance(v, bool):
        return (1, v)
    if isinstance(v, int | float):
        return (2, v)
    if isinstance(v, str):
        return (3, v)
    if isinstance(v, dt.datetime):
        return (4, v)
    if isinstance(v, bytes):
        return (5, v)
    return (6, t.to_json(v))


class _Desc:
    """Reverses the order of a sort key (for DESC with mixed types)."""

    __slots__ = ("k",)

    def __init__(self, k: Any):
        self.k = k

    def __lt__(self, other: _Desc) -> bool:
        return bool(other.k < self.k)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self.k == other.k


@dataclass(frozen=True)
class Recompute:
    """An UPDATE's result as the transaction sees it, and how to compute it again."""

    row: Row
    assignments: list[tuple[str, Expr]]
    ctx: Ctx


@dataclass
class Txn:
    intents: list[tuple[str, str, Any, Any, int | None]] = field(default_factory=list)
    overlay: dict[str, dict[Any, tuple[Row | None, int | None]]] = field(default_factory=dict)
    failed: bool = False


class Session:
    def __init__(
        self,
        manager: TenantManager,
        tenant: Tenant,
        user: dict[str, Any],
        database: str,
        pid: int,
        startup_params: dict[str, str],
    ):
        self.manager = manager
        self.tenant = tenant
        self.user = user
        self.database = database
        self.pid = pid
        self.txn: Txn | None = None
        self.examined = 0  # rows the last read looked at (EXPLAIN ANALYZE)
        # Sends a NOTICE to this session's client at once (set by the wire layer).
        self.notify: Callable[[str], None] | None = None
        self.partitions = (0, 0)  # timeseries partitions the last read used and skipped
        self.settings: dict[str, str] = {
            "server_version": SERVER_VERSION,
            "server_encoding": "UTF8",
            "client_encoding": "UTF8",
            "datestyle": "ISO, MDY",
            "timezone": "UTC",
            "integer_datetimes": "on",
            "standard_conforming_strings": "on",
            "transaction_isolation": "read committed",
            "default_transaction_isolation": "read committed",
            "application_name": "",
            "search_path": '"$user", public',
            "is_superuser": "on" if user["superuser"] else "off",
            "session_authorization": user["name"],
            "role": "none",
            "max_identifier_length": "63",
            "statement_timeout": str(manager.cfg["limits.statement_timeout_ms"]),
            "intervalstyle": "postgres",
            "extra_float_digits": "1",
        }
        self.settings["application_name"] = startup_params.get("application_name", "")
        self._initial_settings = dict(self.settings)  # what RESET and DISCARD ALL go back to
        # PREPARE and the protocol's Parse share this namespace, as in PostgreSQL;
        # "" is the unnamed statement, which only Parse makes.
        self.prepared: dict[str, Prepared] = {}
        self._funcs: dict[str, Callable[..., Any]] = {
            "crdt_state": self._crdt_state,
            "current_setting": self._current_setting,
            "set_config": self._set_config,
            "version": lambda: f"PostgreSQL {SERVER_VERSION}",
            "current_database": lambda: self.database,
            "current_user": lambda: self.user["name"],
            "session_user": lambda: self.user["name"],
            "current_schema": lambda: "public",
            "current_lsn": lambda: self.tenant.last_lsn,
            "pg_backend_pid": lambda: self.pid,
            "now": lambda: dt.datetime.now(dt.UTC),
            "current_timestamp": lambda: dt.datetime.now(dt.UTC),
            "pg_sleep": lambda _seconds=None: None,
        }

    # ---- session state ------------------------------------------------------------------

    @property
    def status(self) -> str:
        if self.txn is None:
            return "I"
        return "E" if self.txn.failed else "T"

    @property
    def timeout_ms(self) -> int:
        try:
            return int(self.settings["statement_timeout"].rstrip("ms").strip() or 0)
        except ValueError:
            return 0

    def begin_implicit(self, statements: list[ast.Statement]) -> bool:
        """Open the transaction PostgreSQL wraps around the statements of one Query
        message, so that a failing statement undoes the writes before it; only for data
        statements outside BEGIN (catalog changes here commit as they run)."""
        if self.txn is not None or len(statements) < 2:
            return False
        if not all(isinstance(stmt, IMPLICIT_TXN) for stmt in statements):
            return False
        self.txn = Txn()
        return True

    def on_error(self) -> None:
        """An error inside a transaction block aborts it until ROLLBACK."""
        if self.txn is not None:
            self.txn.failed = True

    def ctx(self, params: list[Any]) -> Ctx:
        return Ctx(params=params, funcs=self._funcs)

    def _require_superuser(self, what: str) -> None:
        if not self.user["superuser"]:
            raise InsufficientPrivilege(f"must be superuser to {what}")

    def _any_collection(self, name: str) -> Engine:
        found = self.tenant.state.collection(name)
        if found is None:
            raise UndefinedTable(f'collection "{name}" does not exist')
        return found[1]

    def _collection(self, name: str) -> RowCollection:
        """A document or key-value collection (what most statements work on)."""
        engine = self._any_collection(name)
        if not isinstance(engine, RowCollection):
            raise FeatureNotSupported(
                f'"{name}" is a timeseries collection: this statement '
                "works on document and key-value collections"
            )
        return engine

    # ---- typing ---------------------------------------------------------------------------

    def param_types(self, stmt: ast.Statement, declared: tuple[int, ...]) -> list[int]:
        """Each parameter's type: declared, else a cast, else a typed field, else text."""
        if isinstance(stmt, ast.CatalogQuery):
            inferred = stmt.query.param_types()
            return [
                declared[i] if i < len(declared) and declared[i] else o
                for i, o in enumerate(inferred)
            ]
        exprs, typed_targets = _statement_exprs(stmt)
        if isinstance(stmt, ast.ExecutePrepared):
            exprs = self._typed_args(stmt)
        count = max(
            [p.index + 1 for e in exprs for p in e.walk() if isinstance(p, Param)]
            + [len(declared)],
            default=0,
        )
        oids = [declared[i] if i < len(declared) and declared[i] else 0 for i in range(count)]
        engine = self._engine_of(stmt)
        hints: dict[int, int] = {}
        for e in exprs:
            for node in e.walk():
                if isinstance(node, Cast) and isinstance(node.inner, Param):
                    hints.setdefault(node.inner.index, node.oid_hint)
                elif isinstance(node, Func) and node.name in FUNC_ARG_TYPES:
                    for arg, oid in zip(node.args, FUNC_ARG_TYPES[node.name], strict=False):
                        if isinstance(arg, Param):
                            hints.setdefault(arg.index, oid)
                elif isinstance(node, Cmp):
                    for a, b in ((node.left, node.right), (node.right, node.left)):
                        if isinstance(a, Field) and isinstance(b, Param):
                            oid = (
                                field_oid(engine, a.name)
                                if isinstance(engine, KvCollection)
                                else t.TEXT
                            )
                            hints.setdefault(b.index, oid)
        for name, e in typed_targets:
            target = _typed_target(engine, name)
            if isinstance(e, Param) and target is not None:
                hints.setdefault(e.index, target)
        if isinstance(stmt, ast.Select):
            for clause in (stmt.limit, stmt.offset):
                if isinstance(clause, Param):
                    hints.setdefault(clause.index, t.INT8)
        return [oids[i] or hints.get(i, t.TEXT) for i in range(count)]

    def _engine_of(self, stmt: ast.Statement) -> Engine | None:
        name = getattr(stmt, "collection", None) or getattr(stmt, "source", None)
        if isinstance(stmt, ast.Explain):
            return self._engine_of(stmt.statement)
        found = self.tenant.state.collection(name) if isinstance(name, str) else None
        return found[1] if found else None

    def describe(self, stmt: ast.Statement, param_oids: list[int]) -> list[Column] | None:
        """The columns a statement returns (None: it returns no rows)."""
        if isinstance(stmt, ast.Select):
            return self._select_columns(stmt, param_oids)
        if isinstance(stmt, ast.ExecutePrepared):
            prepared = self.prepared_statement(stmt.name)
            if prepared.described:
                return prepared.columns
            return self.describe(prepared.stmt, prepared.param_oids)
        if isinstance(stmt, ast.Insert | ast.Update | ast.Delete) and stmt.returning:
            return self._returning_columns(stmt, param_oids)
        if isinstance(stmt, ast.Explain):
            return [("QUERY PLAN", t.TEXT)]
        if isinstance(stmt, ast.ShowCollections):
            return [
                ("name", t.TEXT),
                ("engine_type", t.TEXT),
                ("row_count", t.INT8),
                ("size_bytes_estimate", t.INT8),
            ]
        if isinstance(stmt, ast.ShowTenants):
            return [
                ("name", t.TEXT),
                ("id", t.INT8),
                ("collections", t.INT8),
                ("size_bytes_estimate", t.INT8),
            ]
        if isinstance(stmt, ast.DescribeCollection):
            return [("field", t.TEXT), ("type", t.TEXT), ("indexed", t.BOOL)]
        if isinstance(stmt, ast.CrdtApply):
            return [("crdt_apply", t.BOOL)]
        if isinstance(stmt, ast.CatalogQuery):
            return list(stmt.query.columns(param_oids))
        if isinstance(stmt, ast.BackupTenant | ast.RestoreTenant) and stmt.path is not None:
            return list(self.BACKUP_COLUMNS)
        if isinstance(stmt, ast.VectorSearch):
            return [("id", t.TEXT), ("distance", t.FLOAT8)]
        if isinstance(stmt, ast.GraphQuery):
            return {
                "neighbors": [("node", t.TEXT), ("label", t.TEXT), ("properties", t.JSONB)],
                "traverse": [("node", t.TEXT), ("depth", t.INT8)],
                "path": [("step", t.INT8), ("node", t.TEXT)],
            }[stmt.kind]
        if isinstance(stmt, ast.GraphAlgo):
            if stmt.algorithm == "wcc":
                return [("node", t.TEXT), ("component", t.INT8)]
            return [("node", t.TEXT), ("rank", t.FLOAT8)]
        if isinstance(stmt, ast.Show):
            if stmt.name == "all":
                return [("name", t.TEXT), ("setting", t.TEXT), ("description", t.TEXT)]
            return [(stmt.name, t.TEXT)]
        return None

    def _select_columns(self, stmt: ast.Select, param_oids: list[int]) -> list[Column]:
        if stmt.source is not None and stmt.source.startswith("_system."):
            view_cols, _ = self._system_view(stmt.source, rows=False)
            if stmt.star:
                return view_cols
            types = dict(view_cols)
            return [
                (
                    it.name,
                    types.get(it.expr.name, t.TEXT)
                    if isinstance(it.expr, Field)
                    else self._infer(it.expr, None, param_oids),
                )
                for it in stmt.items
            ]
        engine = self._any_collection(stmt.source) if stmt.source else None
        if stmt.source and isinstance(engine, TimeseriesCollection):
            engine = self._timeseries_view(stmt.source, engine)  # columns it added
        cols: list[Column] = []
        for it in stmt.items:
            if isinstance(it.expr, Star):
                if engine is None:
                    raise SyntaxError_("SELECT * needs a FROM clause")
                cols += [(f, field_oid(engine, f)) for f in engine.fields()]
            else:
                cols.append((it.name, self._infer(it.expr, engine, param_oids)))
        return cols

    def _infer(self, e: Expr, engine: Engine | None, param_oids: list[int]) -> int:
        if isinstance(e, Field):
            return field_oid(engine, e.name)
        if isinstance(e, Const):
            v = e.value
            if isinstance(v, bool):
                return t.BOOL
            if isinstance(v, int):
                return t.INT4 if -(2**31) <= v < 2**31 else t.INT8
            if isinstance(v, float):
                return t.FLOAT8
            return t.TEXT
        if isinstance(e, Param):
            return param_oids[e.index] if e.index < len(param_oids) else t.TEXT
        if isinstance(e, Agg):
            if e.name == "count":
                return t.INT8
            if e.name == "avg":
                return t.FLOAT8
            inner = self._infer(e.arg, engine, param_oids) if e.arg is not None else t.INT8
            if e.name == "sum":
                return t.INT8 if inner in (t.INT2, t.INT4, t.INT8) else t.FLOAT8
            return inner
        if isinstance(e, Func):
            return SESSION_FUNCS.get(e.name, e.oid_hint)
        if isinstance(e, Arith):
            if e.op == "||":
                return t.TEXT
            a, b = (self._infer(x, engine, param_oids) for x in (e.left, e.right))
            if t.TIMESTAMPTZ in (a, b):
                return t.TIMESTAMPTZ
            if a in (t.INT2, t.INT4, t.INT8) and b in (t.INT2, t.INT4, t.INT8):
                return t.INT8 if t.INT8 in (a, b) else t.INT4
            return t.FLOAT8
        if isinstance(e, Neg):
            return self._infer(e.inner, engine, param_oids)
        return e.oid_hint

    # ---- execution ------------------------------------------------------------------------

    async def execute(
        self, stmt: ast.Statement, params: list[Any], columns: list[Column] | None = None
    ) -> Result:
        """Run a statement. ``columns``: what the client was told the rows look like
        (Describe), so that ``SELECT *`` sends exactly those fields."""
        if (
            self.txn is not None
            and self.txn.failed
            and not isinstance(stmt, ast.Commit | ast.Rollback)
        ):
            raise InFailedTransaction(
                "current transaction is aborted, commands ignored until end of transaction block"
            )
        try:
            if self.tenant.store.wal is None or self.tenant.store.broken is not None:
                await self.tenant.ensure_healthy()
        except (DiskFull, StorageFailure):
            if not isinstance(stmt, READ_ONLY):
                raise  # reads go on from the recovered state while the WAL cannot be written
        if type(stmt) is ast.Select:
            return await self._select(stmt, params, columns)
        if type(stmt) is ast.ExecutePrepared:
            return await self._execute_prepared(stmt, params, columns)
        if isinstance(stmt, ast.Insert | ast.Update | ast.Delete):  # RETURNING as described
            written: Result = await _HANDLERS[type(stmt)](self, stmt, params, columns)
            return written
        handler = _HANDLERS.get(type(stmt))
        if handler is None:
            raise FeatureNotSupported(f"{type(stmt).__name__} is not supported")
        result: Result = await handler(self, stmt, params)
        return result

    # -- transactions --

    async def _begin(self, stmt: ast.Begin, params: list[Any]) -> Result:
        notices = []
        if self.txn is not None:
            notices.append("there is already a transaction in progress")
        else:
            self.txn = Txn()
        return Result(None, [], "BEGIN", notices)

    async def _commit(self, stmt: ast.Commit, params: list[Any]) -> Result:
        txn, self.txn = self.txn, None
        if txn is None:
            return Result(None, [], "COMMIT", ["there is no transaction in progress"])
        if txn.failed:
            return Result(None, [], "ROLLBACK")
        await self.tenant.commit_ops(self._fold(txn))
        return Result(None, [], "COMMIT")

    async def _rollback(self, stmt: ast.Rollback, params: list[Any]) -> Result:
        notices = [] if self.txn is not None else ["there is no transaction in progress"]
        self.txn = None
        return Result(None, [], "ROLLBACK", notices)

    def _fold(self, txn: Txn) -> list[Op]:
        """Turn a transaction's intents into operations against the state now."""
        now = _now_ms()
        current: dict[tuple[str, Any], Row | None] = {}
        ops: list[Op] = []
        for intent, coll, key, row, expires in txn.intents:
            if intent in _PASS_THROUGH:
                ops.append((_PASS_THROUGH[intent], coll, key, row, None))
                continue
            engine = self._collection(coll)
            ck = (coll, key)
            old = current[ck] if ck in current else engine.get(key, now)
            if intent == "delete":
                if old is not None:
                    ops.append((OP_DELETE, coll, key, old, None))
                current[ck] = None
                continue
            if intent == "update":
                if old is None:
                    continue  # deleted meanwhile: nothing left to update
                row = self._assign(engine, old, row.assignments, row.ctx)
            elif intent == "insert" and old is not None:
                raise UniqueViolation(
                    f"duplicate key value violates unique constraint: {engine.key_field}={key!r} "
                    f'already exists in "{coll}"'
                )
            ops.append((OP_UPDATE if old is not None else OP_INSERT, coll, key, row, expires))
            current[ck] = row
        return ops

    # -- reads --

    def _get(self, coll: str, engine: RowCollection, key: Any, now: int) -> Row | None:
        if self.txn is not None:
            over = self.txn.overlay.get(coll)
            if over is not None and key in over:
                return _live(over[key], now)
        return engine.get(key, now)

    def _scan(self, coll: str, engine: RowCollection, now: int) -> Iterable[Row]:
        over = self.txn.overlay.get(coll) if self.txn is not None else None
        if not over:
            return engine.scan(now)
        kf = engine.key_field
        rows = [r for r in engine.scan(now) if r[kf] not in over]
        return rows + [r for r in (_live(e, now) for e in over.values()) if r is not None]

    def _expires_at(self, coll: str, engine: RowCollection, key: Any) -> int | None:
        """A key's expiry as this session sees it (its transaction may have set it)."""
        over = self.txn.overlay.get(coll) if self.txn is not None else None
        if over is not None and key in over:
            return over[key][1]
        return engine.expires_at(key)

    def _pending(self, coll: str, kinds: tuple[str, ...]) -> list[tuple[Any, Any]]:
        """(key, payload) of this transaction's buffered writes of ``kinds`` to ``coll``:
        what reads of edges, CRDT documents and timeseries add to the committed state."""
        if self.txn is None:
            return []
        return [(k, r) for i, c, k, r, _ in self.txn.intents if c == coll and i in kinds]

    def _access(self, engine: RowCollection, where: Expr | None) -> Access:
        indexed = frozenset(engine.indexes)
        if _larger_than(where, 256):
            # Plans are cached by the WHERE tree's identity; a large one (a long IN
            # list) comes from a statement too long for the parse cache, so it is new
            # each time and caching its plan would only hold it in memory.
            return plan_access.__wrapped__(where, engine.key_field, indexed)
        return plan_access(where, engine.key_field, indexed)

    async def _candidates(
        self, coll: str, engine: RowCollection, where: Expr | None, ctx: Ctx
    ) -> list[Row]:
        """The rows matching ``where``; ``self.examined`` counts the rows looked at."""
        now = _now_ms()
        access = self._access(engine, where)
        if access.kind == "scan":
            out = []
            i = -1
            for i, row in enumerate(self._scan(coll, engine, now)):
                if where is None or where.eval(row, ctx) is True:
                    out.append(row)
                if i % YIELD_EVERY == YIELD_EVERY - 1:
                    await asyncio.sleep(0)
            self.examined = i + 1
            return out
        if access.kind == "key":
            keys: Iterable[Any] = (_text_key(k.eval({}, ctx)) for k in access.values)
        else:
            keys = self._index_keys(engine, access, ctx)
        seen: set[Any] = set()
        rows = []
        for key in keys:
            if key in seen:
                continue
            seen.add(key)
            found = self._get(coll, engine, key, now)
            if found is not None and (where is None or where.eval(found, ctx) is True):
                rows.append(found)
        over = self.txn.overlay.get(coll) if self.txn is not None else None
        if access.kind == "index" and over:
            for key, entry in over.items():
                pending = _live(entry, now)
                if (
                    key not in seen
                    and pending is not None
                    and (where is None or where.eval(pending, ctx) is True)
                ):
                    seen.add(key)
                    rows.append(pending)
        self.examined = len(seen)
        return rows

    def _index_keys(self, engine: RowCollection, access: Access, ctx: Ctx) -> Iterable[Any]:
        """Keys from the probe that expects the fewest rows for these parameter values."""
        probe, values = self._choose_probe(engine, access, ctx)
        index = engine.indexes[probe.field]
        if probe.values:
            keys: set[Any] = set()
            for v in values:
                keys |= index.equal(v)
            return keys
        low, high = values
        if (probe.low is not None and low is None) or (probe.high is not None and high is None):
            return ()  # a NULL bound matches nothing
        return list(index.range(low, probe.low_inclusive, high, probe.high_inclusive))

    def _choose_probe(
        self, engine: RowCollection, access: Access, ctx: Ctx
    ) -> tuple[Probe, list[Any]]:
        best: tuple[float, Probe, list[Any]] | None = None
        for p in access.probes:
            index = engine.indexes[p.field]
            numeric = bool(engine.field_types.get(p.field, set()) & {"int", "float"})
            if p.values:
                values = [_probe_value(e.eval({}, ctx), numeric) for e in p.values]
                cost = float(sum(index.count_equal(v) for v in values))
            else:
                values = [
                    _probe_value(e.eval({}, ctx), numeric) if e is not None else None
                    for e in (p.low, p.high)
                ]
                cost = index.estimate_range(values[0], p.low_inclusive, values[1], p.high_inclusive)
            if best is None or cost < best[0]:
                best = (cost, p, values)
        assert best is not None
        return best[1], best[2]

    async def _select(
        self, stmt: ast.Select, params: list[Any], columns: list[Column] | None = None
    ) -> Result:
        ctx = self.ctx(params)
        if _uses(stmt, "vector_distance"):
            found = self.tenant.state.collection(stmt.source) if stmt.source else None
            rows_engine = found[1] if found and isinstance(found[1], RowCollection) else None
            ctx.funcs = {**ctx.funcs, "vector_distance": self._vector_distance(rows_engine)}
        await self._sleep_if_asked(stmt, ctx)
        if columns is None or (stmt.star and len(stmt.items) > 1):
            columns = self._select_columns(stmt, [])
        fast: list[tuple[Any, ...]] | None = None
        if stmt.source is None:  # one row, unless the WHERE (constant here) is not true
            rows: list[Row] = [{}] if stmt.where is None or stmt.where.eval({}, ctx) is True else []
        elif stmt.source.startswith("_system."):
            _, view_rows = self._system_view(stmt.source, rows=True)
            rows = [r for r in view_rows if stmt.where is None or stmt.where.eval(r, ctx) is True]
        else:
            any_engine = self._any_collection(stmt.source)
            if isinstance(any_engine, TimeseriesCollection):
                ts_view = self._timeseries_view(stmt.source, any_engine)
                rows, fast = self._timeseries_rows(stmt, ts_view, ctx)
            else:
                rows = await self._candidates(stmt.source, any_engine, stmt.where, ctx)
        star_fields = [c for c, _ in columns] if stmt.star else []
        aggs = _aggregates(stmt)
        items: list[tuple[Row, Ctx]]
        if fast is not None:
            items, out = [({}, ctx)] * len(fast), fast
        elif aggs or stmt.group_by:
            if stmt.star:
                raise SyntaxError_(
                    "SELECT * cannot be combined with GROUP BY or aggregates", sqlstate="42803"
                )
            groups: dict[tuple[Any, ...], list[Row]] = {}
            for r in rows:
                gk = tuple(_hashable(g.eval(r, ctx)) for g in stmt.group_by)
                groups.setdefault(gk, []).append(r)
            if not groups and not stmt.group_by:
                groups[()] = []
            items = []
            for members in groups.values():
                gctx = Ctx(
                    params=params,
                    funcs=ctx.funcs,
                    aggs={id(a): a.compute(members, ctx) for a in aggs},
                )
                rep = members[0] if members else {}
                items.append((rep, gctx))
        else:
            items = [(r, ctx) for r in rows]
        if fast is None:
            out = []
            for rep, c in items:
                if stmt.star:
                    out.append(tuple(rep.get(f) for f in star_fields))
                else:
                    out.append(tuple(it.expr.eval(rep, c) for it in stmt.items))
        if stmt.order_by:
            order = list(range(len(out)))

            def key(i: int) -> list[Any]:
                ks = []
                rep, c = items[i]
                for o in stmt.order_by:
                    v = out[i][o.position] if o.position is not None else o.expr.eval(rep, c)  # type: ignore[union-attr]
                    k = _sort_key(v)
                    ks.append(_Desc(k) if o.desc else k)
                return ks

            order.sort(key=key)
            out = [out[i] for i in order]
        offset = _int_clause(stmt.offset, ctx, "OFFSET")
        limit = _int_clause(stmt.limit, ctx, "LIMIT")
        if offset:
            out = out[offset:]
        if limit is not None:
            out = out[:limit]
        return Result(columns, out, f"SELECT {len(out)}")

    def _timeseries_view(self, name: str, engine: TimeseriesCollection) -> TimeseriesCollection:
        own = self._pending(name, ("ts",))
        return engine.with_tables([from_ipc(payload) for _, payload in own]) if own else engine

    def _timeseries_rows(
        self, stmt: ast.Select, engine: TimeseriesCollection, ctx: Ctx
    ) -> tuple[list[Row], list[tuple[Any, ...]] | None]:
        """Rows of the partitions in the WHERE's time range, filtered column-wise; or,
        for GROUP BY / aggregates Arrow can compute, the output rows themselves."""
        lo, hi = time_bounds(stmt.where, engine, ctx)
        table, read, skipped = engine.table(lo, hi)
        self.partitions = (read, skipped)
        self.examined = table.num_rows
        residual = stmt.where
        if residual is not None:
            arrow_where = arrow_filter(residual, engine, ctx)
            if arrow_where is not None:
                table, residual = table.filter(arrow_where), None
        if residual is None and (stmt.group_by or _aggregates(stmt)) and not stmt.star:
            fast = vector_aggregate(stmt, table, engine, ctx)
            if fast is not None:
                return [], fast
        rows = table_rows(table)
        if residual is not None:
            rows = [r for r in rows if residual.eval(r, ctx) is True]
        return rows, None

    async def _insert_timeseries(
        self, stmt: ast.Insert, engine: TimeseriesCollection, params: list[Any]
    ) -> Result:
        if stmt.on_conflict is not None or stmt.upsert:
            raise FeatureNotSupported(
                "timeseries rows have no key: ON CONFLICT and UPSERT do not apply"
            )
        if stmt.returning:
            raise _timeseries_returning(stmt.collection)
        ctx = self.ctx(params)
        rows = [{name: e.eval({}, ctx) for name, e in fields} for fields in stmt.rows]
        try:
            batch = engine.batch_from_rows(rows)
        except TimeseriesError as e:
            raise _timeseries_error(e) from None
        await self._commit_or_buffer(stmt.collection, [("ts", None, to_ipc(batch), None)])
        return Result(None, [], f"INSERT 0 {len(rows)}")

    async def _copy_from(self, stmt: ast.CopyFrom, params: list[Any]) -> Result:
        """COPY .. FROM STDIN: checked before the client sends its data."""
        engine = self._any_collection(stmt.collection)
        if not isinstance(engine, TimeseriesCollection):
            raise FeatureNotSupported("COPY FROM STDIN loads timeseries collections")
        return Result(None, [], "COPY", copy=TimeseriesLoad(self, stmt, engine))

    async def _sleep_if_asked(self, stmt: ast.Select, ctx: Ctx) -> None:
        """``SELECT pg_sleep(s)``: waits without blocking other sessions (cancellable)."""
        for it in stmt.items:
            if isinstance(it.expr, Func) and it.expr.name == "pg_sleep" and it.expr.args:
                seconds = it.expr.args[0].eval({}, ctx)
                try:
                    await asyncio.sleep(max(0.0, float(seconds)))
                except (TypeError, ValueError):
                    raise DataError("pg_sleep() takes a number of seconds") from None

    async def _explain(self, stmt: ast.Explain, params: list[Any]) -> Result:
        inner = stmt.statement
        source = inner.source if isinstance(inner, ast.Select) else inner.collection
        lines = []
        if source is None:
            lines.append("Result (no collection)")
        elif source.startswith("_system."):
            lines.append(f"System view {source}")
        elif isinstance(self._any_collection(source), TimeseriesCollection):
            ts_engine = self._any_collection(source)
            assert isinstance(ts_engine, TimeseriesCollection)
            lo, hi = time_bounds(inner.where, ts_engine, self.ctx(params))
            _, read, skipped = ts_engine.table(lo, hi)
            lines.append(
                f"Partition scan on {source}: {read} partitions read, "
                f"{skipped} skipped by the time range"
            )
            if inner.where is not None:
                lines.append("  Filter: WHERE clause (columnar)")
        else:
            engine = self._collection(source)
            access = self._access(engine, inner.where)
            if access.kind == "key":
                n = len(access.values)
                lines.append(
                    f"Point lookup on {source} by primary key {engine.key_field} "
                    f"({n} key{'s' if n != 1 else ''})"
                )
            elif access.kind == "index":
                probe, _ = self._choose_probe(engine, access, self.ctx(params))
                n = len(probe.values)
                how = f"equality, {n} value{'s' if n != 1 else ''}" if n else "range"
                lines.append(
                    f"Index scan on {source} using {engine.indexes[probe.field].name} "
                    f"({probe.field}, {how})"
                )
            else:
                lines.append(f"Full scan of {source} ({len(engine)} rows)")
            if inner.where is not None:
                lines.append("  Filter: WHERE clause")
        if isinstance(inner, ast.Select):
            if inner.group_by or any(
                isinstance(n, Agg) for it in inner.items for n in it.expr.walk()
            ):
                lines.append("  Aggregate")
            if inner.order_by:
                lines.append("  Sort")
            if inner.limit is not None or inner.offset is not None:
                lines.append("  Limit")
        if stmt.analyze and isinstance(inner, ast.Select):
            result = await self._select(inner, params)
            lines.append(f"Rows examined: {self.examined}, rows returned: {len(result.rows)}")
        return Result([("QUERY PLAN", t.TEXT)], [(line,) for line in lines], "EXPLAIN")

    # -- writes --

    async def _commit_or_buffer(self, coll: str, intents: list[Intent]) -> None:
        """Commit now (outside a transaction) or add to the transaction."""
        if self.txn is None:
            await self.tenant.commit_ops(
                self._fold(Txn([(i, coll, k, r, e) for i, k, r, e in intents]))
            )
            return
        over = self.txn.overlay.setdefault(coll, {})
        for intent, key, row, expires in intents:
            self.txn.intents.append((intent, coll, key, row, expires))
            if intent not in _PASS_THROUGH:  # the others are read back through _pending
                over[key] = (row.row if isinstance(row, Recompute) else row, expires)

    async def _insert(
        self, stmt: ast.Insert, params: list[Any], columns: list[Column] | None = None
    ) -> Result:
        any_engine = self._any_collection(stmt.collection)
        if isinstance(any_engine, TimeseriesCollection):
            return await self._insert_timeseries(stmt, any_engine, params)
        engine = self._collection(stmt.collection)
        ctx = self.ctx(params)
        now = _now_ms()
        kf = engine.key_field
        intents: list[Intent] = []
        pending: dict[Any, Row] = {}
        for fields in stmt.rows:
            row, expires = self._new_row(engine, fields, ctx, stmt.object_form, now)
            key = row[kf]
            old = pending.get(key) or self._get(stmt.collection, engine, key, now)
            if old is None:
                intents.append(("insert", key, row, expires))
                pending[key] = row
                continue
            if stmt.upsert:
                intents.append(("put", key, row, expires))
            elif stmt.on_conflict is None:
                raise UniqueViolation(
                    f"duplicate key value violates unique constraint: {kf}={key!r} already "
                    f'exists in "{stmt.collection}"'
                )
            elif stmt.on_conflict.action == "nothing":
                continue
            else:
                uctx = Ctx(params=params, funcs=ctx.funcs, excluded=row)
                new = self._assign(engine, old, stmt.on_conflict.assignments, uctx)
                keep = self._expires_at(stmt.collection, engine, key)
                intents.append(("put", key, new, expires if expires is not None else keep))
                row = new
            pending[key] = row
        rows = [row for _, _, row, _ in intents]
        result = self._written(stmt, f"INSERT 0 {len(intents)}", rows, columns, params)
        await self._commit_or_buffer(stmt.collection, intents)
        return result

    def _new_row(
        self,
        engine: RowCollection,
        fields: list[tuple[str, Expr]],
        ctx: Ctx,
        object_form: bool,
        now: int,
    ) -> tuple[Row, int | None]:
        kf = engine.key_field
        values = {name: e.eval({}, ctx) for name, e in fields}
        expires = None
        if isinstance(engine, KvCollection) and object_form and "ttl" in values:
            ttl = values.pop("ttl")
            try:
                expires = now + int(float(ttl) * 1000) if ttl is not None else None
            except (TypeError, ValueError):
                raise DataError("ttl must be a number of seconds") from None
        key = values.pop(kf, None)
        if key is None:
            if isinstance(engine, KvCollection):
                raise DataError(f'a row of key-value collection "{engine.name}" needs a key')
            key = str(uuid7())
        elif not isinstance(key, str):
            key = t.encode_text(t.TEXT, key)
        row: Row = {kf: key}
        for name, v in values.items():
            row[name] = self._typed(engine, name, v)
        self._check_vectors(engine, row)
        return row, expires

    def _typed(self, engine: RowCollection, name: str, v: Any) -> Any:
        if isinstance(engine, KvCollection) and name in engine.typed_fields:
            oid = KV_TYPE_OIDS[engine.typed_fields[name]]
            if oid != t.JSONB:
                return cast_value(v, oid)
        return v

    def _assign(
        self, engine: RowCollection, old: Row, assignments: list[tuple[str, Expr]], ctx: Ctx
    ) -> Row:
        new = dict(old)
        for name, e in assignments:
            if name == engine.key_field:
                raise FeatureNotSupported(f"the primary key {name} cannot be updated")
            new[name] = self._typed(engine, name, e.eval(old, ctx))
        self._check_vectors(engine, new)
        return new

    async def _update(
        self, stmt: ast.Update, params: list[Any], columns: list[Column] | None = None
    ) -> Result:
        engine = self._collection(stmt.collection)
        ctx = self.ctx(params)
        rows = await self._candidates(stmt.collection, engine, stmt.where, ctx)
        kf = engine.key_field
        new_rows = [self._assign(engine, r, stmt.assignments, ctx) for r in rows]
        # An UPDATE keeps its SET list: at COMMIT it is applied again to the row as it is
        # then (as PostgreSQL re-evaluates on the newest row version), so concurrent
        # transactions doing n = n + 1 lose no increment.
        intents: list[Intent] = [
            (
                "update",
                new[kf],
                Recompute(new, stmt.assignments, ctx),
                self._expires_at(stmt.collection, engine, new[kf]),
            )
            for new in new_rows
        ]
        result = self._written(stmt, f"UPDATE {len(intents)}", new_rows, columns, params)
        await self._commit_or_buffer(stmt.collection, intents)
        return result

    async def _delete(
        self, stmt: ast.Delete, params: list[Any], columns: list[Column] | None = None
    ) -> Result:
        engine = self._collection(stmt.collection)
        rows = await self._candidates(stmt.collection, engine, stmt.where, self.ctx(params))
        kf = engine.key_field
        result = self._written(stmt, f"DELETE {len(rows)}", rows, columns, params)
        await self._commit_or_buffer(stmt.collection, [("delete", r[kf], None, None) for r in rows])
        return result

    # -- RETURNING --

    def _returning_columns(
        self, stmt: ast.Insert | ast.Update | ast.Delete, param_oids: list[int]
    ) -> list[Column]:
        """A field the statement writes is typed by what it held and what is written into
        it, so that a value of a new type is still sent as its column says."""
        engine = self._any_collection(stmt.collection)
        if isinstance(engine, TimeseriesCollection):
            raise _timeseries_returning(stmt.collection)
        written = self._written_tags(stmt, engine, param_oids)

        def oid(name: str) -> int:
            if name not in written or name == engine.key_field or _typed_target(engine, name):
                return field_oid(engine, name)
            return _tags_oid(engine.field_types.get(name, set()) | written[name])

        cols: list[Column] = []
        for it in stmt.returning:
            if isinstance(it.expr, Star):
                typed = list(engine.typed_fields) if isinstance(engine, KvCollection) else []
                names = dict.fromkeys([*engine.fields(), *typed, *written])
                cols += [(name, oid(name)) for name in names]
            elif isinstance(it.expr, Field):
                cols.append((it.name, oid(it.expr.name)))
            else:
                cols.append((it.name, self._infer(it.expr, engine, param_oids)))
        return cols

    def _written_tags(
        self,
        stmt: ast.Insert | ast.Update | ast.Delete,
        engine: RowCollection,
        param_oids: list[int],
    ) -> dict[str, set[str]]:
        """The value types a write stores into each field, as known before it runs."""
        pairs = _statement_exprs(stmt)[1]
        if isinstance(stmt, ast.Insert) and stmt.object_form and isinstance(engine, KvCollection):
            pairs = [(name, e) for name, e in pairs if name != "ttl"]  # the expiry, not a field
        tags: dict[str, set[str]] = {}
        for name, e in pairs:
            tag = (
                type_tag(e.value)
                if isinstance(e, Const)
                else OID_TAGS.get(self._infer(e, engine, param_oids), "object")
            )
            tags.setdefault(name, set()).add(tag)
        return tags

    def _written(
        self,
        stmt: ast.Insert | ast.Update | ast.Delete,
        tag: str,
        rows: list[Row],
        described: list[Column] | None,
        params: list[Any],
    ) -> Result:
        """A write's result: its tag, and with RETURNING its list for each row written,
        worked out before the write commits, so that an error in it changes nothing."""
        if not stmt.returning:
            return Result(None, [], tag)
        columns = described or self._returning_columns(stmt, self.param_types(stmt, ()))
        ctx = self.ctx(params)
        stars = sum(isinstance(it.expr, Star) for it in stmt.returning)
        per_star = (len(columns) - len(stmt.returning) + stars) // stars if stars else 0
        outputs: list[str | Expr] = []  # a field a star stands for, or an expression
        for it in stmt.returning:
            if isinstance(it.expr, Star):
                outputs += [name for name, _ in columns[len(outputs) : len(outputs) + per_star]]
            else:
                outputs.append(it.expr)
        out = [
            tuple(r.get(o) if isinstance(o, str) else o.eval(r, ctx) for o in outputs) for r in rows
        ]
        fitted = _fitted(columns, out)
        if described and fitted != described:
            name = next(a[0] for a, b in zip(described, fitted, strict=True) if a != b)
            raise DBError(
                f'RETURNING column "{name}" was described with the type its field has outside '
                "this transaction, which stored a value of another type in it: cast it "
                f"(RETURNING {name}::text)",
                sqlstate="42804",
            )
        return Result(fitted, out, tag)

    # -- catalog --

    async def _create_collection(self, stmt: ast.CreateCollection, params: list[Any]) -> Result:
        meta = self.tenant.state.catalog.get(stmt.name)
        if meta is not None:
            if stmt.if_not_exists and meta.dropped_ms is None:
                return Result(
                    None,
                    [],
                    "CREATE COLLECTION",
                    [f'collection "{stmt.name}" already exists, skipping'],
                )
            hint = " (it is dropped: UNDROP or PURGE it first)" if meta.dropped_ms else ""
            raise DuplicateTable(f'collection "{stmt.name}" already exists{hint}')
        if stmt.name.startswith("_system") or stmt.name.startswith("pg_"):
            raise InsufficientPrivilege(
                f'collection names starting with "{stmt.name.split("_")[0]}_" are reserved'
            )
        await self.tenant.commit_catalog(
            "create_collection",
            {
                "name": stmt.name,
                "engine": stmt.engine,
                "typed_fields": stmt.typed_fields,
                "owner": self.user["name"],
                "options": stmt.options,
            },
        )
        return Result(None, [], "CREATE COLLECTION")

    async def _drop_collection(self, stmt: ast.DropCollection, params: list[Any]) -> Result:
        meta = self.tenant.state.catalog.get(stmt.name)
        if meta is None or (meta.dropped_ms is not None and not stmt.purge):
            if stmt.if_exists:
                return Result(
                    None,
                    [],
                    "DROP COLLECTION",
                    [f'collection "{stmt.name}" does not exist, skipping'],
                )
            raise UndefinedTable(f'collection "{stmt.name}" does not exist')
        action = "purge_collection" if stmt.purge else "drop_collection"
        await self.tenant.commit_catalog(action, {"name": stmt.name})
        return Result(None, [], "DROP COLLECTION")

    # -- backup and restore --

    BACKUP_COLUMNS = [("tenant", t.TEXT), ("watermark_lsn", t.INT8), ("bytes", t.INT8)] + [
        (name, t.INT8) for name in COUNT_NAMES
    ]

    def backup_tenant(self, name: str, restore: bool = False) -> Tenant:
        """The tenant a BACKUP or DRY RUN names, if this user may act on it (else 42501)."""
        name = self.manager.tenant_name(name)
        user = self.user
        if not user["superuser"] and (
            restore or not self.manager.has_grant(user["name"], "backup", name)
        ):
            what = "RESTORE" if restore else "BACKUP"
            raise InsufficientPrivilege(
                f'{what} of tenant "{name}" needs the superuser'
                + ("" if restore else " or GRANT BACKUP ON TENANT")
            )
        tenant = self.manager.tenants.get(name)
        if tenant is None:
            raise UndefinedObject(f'tenant "{name}" does not exist')
        return tenant

    def may_use_backup_of(self, tenant: str | None) -> bool:
        """Whether this user may read, or overwrite, a backup of ``tenant`` (None: a file
        that is no backup, which only the superuser may overwrite)."""
        if self.user["superuser"]:
            return True
        return tenant is not None and self.manager.has_grant(self.user["name"], "backup", tenant)

    def start_operation(
        self, kind: str, tenant: str, target: str, total: int | None
    ) -> tuple[Operation, Progress]:
        """Record a backup or restore in _system.backups; its Progress sends NOTICEs."""
        op = self.manager.operations.start(kind, tenant, target, total)
        return op, Progress(op, self.notify, self.manager.cfg["backup.progress_seconds"])

    async def _backup(self, stmt: ast.BackupTenant, params: list[Any]) -> Result:
        tenant = self.backup_tenant(stmt.tenant)
        if stmt.path is None:
            return Result(None, [], "COPY", copy=BackupToClient(self, tenant))
        path = check_path(stmt.path, self.manager.cfg.backup_dirs, must_exist=False)
        op, progress = self.start_operation("backup", tenant.name, str(path), tenant_size(tenant))
        try:
            summary = await backup_to_file(
                self.manager, tenant, path, stmt.overwrite, self.may_use_backup_of, progress
            )
        except BaseException as e:
            Operations.finish(op, e)
            raise
        Operations.finish(op)
        return Result(self.BACKUP_COLUMNS, [summary.row()], "BACKUP")

    async def _restore(self, stmt: ast.RestoreTenant, params: list[Any]) -> Result:
        stmt = self.check_restore(stmt)
        if stmt.path is None:
            return Result(None, [], "COPY", copy=RestoreFromClient(self, stmt))
        path = check_path(stmt.path, self.manager.cfg.backup_dirs, must_exist=True)
        with open_backup_file(path, stmt.path) as source:
            return await self.restore_from(stmt, source, os.fstat(source.fileno()).st_size)

    def check_restore(self, stmt: ast.RestoreTenant) -> ast.RestoreTenant:
        """RESTORE needs the superuser; DRY RUN also a holder of GRANT BACKUP, and WITH
        (rename) the superuser, since it reads a backup of another tenant (else 42501).
        Returns the statement with the tenant's own name."""
        stmt = dataclasses.replace(stmt, tenant=self.manager.tenant_name(stmt.tenant))
        if not stmt.dry_run:
            self._require_superuser("restore a tenant")
            if stmt.tenant == DEFAULT_TENANT:
                raise InsufficientPrivilege("the default tenant cannot be replaced by a restore")
        elif not self.may_use_backup_of(stmt.tenant):
            raise InsufficientPrivilege(
                f'DRY RUN of tenant "{stmt.tenant}" needs the superuser or GRANT BACKUP ON TENANT'
            )
        elif stmt.rename:
            self._require_superuser("read a backup WITH (rename)")
        return stmt

    async def restore_from(
        self, stmt: ast.RestoreTenant, source: BinaryIO, total: int | None = None
    ) -> Result:
        """Verify (DRY RUN) or restore a backup read from ``source`` on a worker thread,
        recorded in _system.backups with progress NOTICEs."""
        op, progress = self.start_operation(
            "dry run" if stmt.dry_run else "restore", stmt.tenant, stmt.path or "stdin", total
        )
        try:
            result = await self._restore_from(stmt, ProgressReader(source, progress), progress)  # type: ignore[arg-type]
        except BaseException as e:
            Operations.finish(op, e)
            raise
        Operations.finish(op)
        return result

    async def _restore_from(
        self, stmt: ast.RestoreTenant, source: BinaryIO, progress: Progress
    ) -> Result:
        manager = self.manager
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
                    self.may_use_backup_of,
                )
            except EnvelopeError as e:
                raise DataError(f"invalid backup: {e}") from None
            return Result(
                self.BACKUP_COLUMNS, [summary.row()], "RESTORE DRY RUN", [summary.notice()]
            )
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
                self.may_use_backup_of,
            )
        except EnvelopeError as e:
            raise DataError(f"invalid backup: {e}; nothing was changed") from None
        old = await manager.begin_restore(stmt.tenant, self.pid)
        try:
            return await self._stage_and_switch(stmt, reader, source, progress, old)
        except BaseException:
            manager.abort_restore(stmt.tenant, old)
            raise

    async def _stage_and_switch(
        self,
        stmt: ast.RestoreTenant,
        reader: EnvelopeReader,
        source: BinaryIO,
        progress: Progress,
        old: Tenant | None,
    ) -> Result:
        manager = self.manager
        loop = asyncio.get_running_loop()
        new_id = manager.reserve_tenant_id()
        root = manager.data_dir / "tenants" / str(new_id)
        # The tenant takes no statements now: its last LSN and tombstones are final.
        base_lsn = old.last_lsn if old is not None else 0
        tombstones = dict(old.state.tombstones) if old is not None else {}
        started = time.monotonic()
        try:
            staged = await in_worker(
                progress,
                stage_restore,
                reader,
                source,
                manager.master,
                stmt.tenant,
                new_id,
                root,
                base_lsn,
                tombstones,
                stmt.resurrect,
                manager.fs,
            )
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
            manager.commit_restore(stmt.tenant, new_id, staged.tenant_key, staged.catalog, self.pid)
        )
        log.info(
            "restore of tenant %s: %d bytes staged in %.2fs, switched over in %.3fs",
            stmt.tenant,
            staged.summary.bytes,
            staged_at - started,
            time.monotonic() - staged_at,
        )
        if self.tenant.name == stmt.tenant:
            self.tenant = tenant
        notices = [staged.summary.notice()]
        if staged.skipped:
            notices.append("not restored (purged): " + ", ".join(staged.skipped))
        return Result(self.BACKUP_COLUMNS, [staged.summary.row()], "RESTORE", notices)

    async def _alter_system(self, stmt: ast.AlterSystem, params: list[Any]) -> Result:
        self._require_superuser("change system settings")
        if stmt.name != "deactivated_collection_retention_days":
            raise UndefinedObject(f'unrecognized configuration parameter "{stmt.name}"')
        try:
            days = float(stmt.value)
        except ValueError:
            raise DBError(
                f'invalid value for parameter "{stmt.name}": "{stmt.value[:40]}"', sqlstate="22023"
            ) from None
        if days < 0:
            raise DBError(f'parameter "{stmt.name}" must not be negative', sqlstate="22023")
        await self.manager.set_setting(stmt.name, days)
        return Result(None, [], "ALTER SYSTEM")

    # -- driver introspection --

    def _current_setting(self, name: Any) -> str:
        key = str(name).lower()
        if key not in self.settings and key != "jit":
            raise UndefinedObject(f'unrecognized configuration parameter "{name}"')
        return self.settings.get(key, "off")  # no JIT here: "jit" reads off

    def _set_config(self, name: Any, value: Any, is_local: Any = False) -> str:
        key, text = str(name).lower(), str(value)
        if key in self.FIXED_SETTINGS:
            raise DBError(f'parameter "{key}" cannot be changed', sqlstate="55P02")
        if key in ("session_authorization", "role"):
            text = self._identity_setting(key, text)
        self.settings[key] = text
        return text

    async def _catalog_query(self, stmt: ast.CatalogQuery, params: list[Any]) -> Result:
        oids = self._catalog_param_oids(stmt)
        columns, rows = stmt.query.run(params, oids)
        return Result(columns, rows, f"SELECT {len(rows)}")

    @staticmethod
    def _catalog_param_oids(stmt: ast.CatalogQuery) -> list[int]:
        return list(stmt.query.param_types())

    # -- vectors --

    async def _create_vector_index(self, stmt: ast.CreateVectorIndex, params: list[Any]) -> Result:
        engine = self._vector_index_target(stmt)
        vindex = engine.new_vector_index(stmt.name, stmt.field, stmt.metric, stmt.dim, stmt.options)
        built = None
        if vindex.field is not None and len(engine):
            await self._build_vector_index(engine, vindex)
            if self._vector_index_target(stmt) is not engine:
                raise ObjectInUse(
                    f'collection "{stmt.collection}" was replaced while its vector index was '
                    "being built; run CREATE VECTOR INDEX again"
                )
            built = vindex
        args = {
            "name": stmt.name,
            "collection": stmt.collection,
            "field": vindex.field if built is not None else stmt.field,
            "metric": stmt.metric,
            "dim": stmt.dim,
            "options": stmt.options,
        }
        await self.tenant.commit_catalog("create_vector_index", args, built)
        return Result(None, [], "CREATE VECTOR INDEX")

    def _vector_index_target(self, stmt: ast.CreateVectorIndex) -> RowCollection:
        """The collection a new vector index is for, checked (again after a build)."""
        engine = self._collection(stmt.collection)
        if stmt.name in self.tenant.state.indexes:
            raise DuplicateTable(f'index "{stmt.name}" already exists')
        if stmt.field is not None and engine.vector_index_on(stmt.field) is not None:
            raise DuplicateTable(
                f'field "{stmt.field}" of "{stmt.collection}" already has a vector index'
            )
        if stmt.field is None and any(v.field is None for v in engine.vectors.values()):
            raise DuplicateTable(
                f'"{stmt.collection}" already has a vector index waiting to bind; name the FIELD'
            )
        return engine

    async def _build_vector_index(self, engine: RowCollection, vindex: VectorIndex) -> None:
        """Build ``vindex`` from a copy of the rows on a worker thread (usearch adds with
        the GIL released), then catch up with the rows written meanwhile: on workers while
        many changed, the last few on the loop, so nothing changes between that pass and
        the caller installing the index."""
        loop = asyncio.get_running_loop()
        field = vindex.field
        assert field is not None
        changed = engine.watch_changes()
        try:
            rows = list(engine.rows.items())  # row dicts are never mutated once stored
            items = ((key, row.get(field)) for key, row in rows)
            log.info(
                "building vector index %s on %s (%d rows) off the event loop",
                vindex.name,
                field,
                len(rows),
            )
            started = time.monotonic()
            await loop.run_in_executor(None, vindex.build, items)
            log.info("vector index %s built in %.2fs", vindex.name, time.monotonic() - started)
            while len(changed) > CATCH_UP_ON_LOOP:
                done, changed = changed, engine.watch_changes()
                engine.unwatch(done)
                await loop.run_in_executor(None, engine.catch_up, vindex, done)
            engine.catch_up(vindex, changed)
        finally:
            engine.unwatch(changed)

    async def _vector_search(self, stmt: ast.VectorSearch, params: list[Any]) -> Result:
        engine = self._collection(stmt.collection)
        vindex = engine.vector_index_on(stmt.field)
        if vindex is None:
            raise UndefinedObject(
                f'"{stmt.collection}" has no vector index on field "{stmt.field}"'
            )
        ctx = self.ctx(params)
        query = self._query_vector(stmt.query.eval({}, ctx), vindex.dim)
        k = _count(stmt.k.eval({}, ctx), "k")
        now = _now_ms()
        over = self.txn.overlay.get(stmt.collection, {}) if self.txn is not None else {}
        loop = asyncio.get_running_loop()
        # The index holds committed rows only: those this transaction wrote or deleted
        # are dropped from its answer (asking for that many more) and its own compared.
        found = await loop.run_in_executor(None, vindex.search, query, k + len(over))
        rows = [
            (key, d) for key, d in found if key not in over and engine.get(key, now) is not None
        ]
        if over:
            rows = sorted(rows + _own_vector_hits(over, vindex, query, now), key=lambda r: r[1])
        rows = rows[:k]
        return Result(self.describe(stmt, []), rows, f"SELECT {len(rows)}")

    @staticmethod
    def _query_vector(value: Any, dim: int) -> list[float]:
        vec = as_vector(value)
        if vec is None:
            raise DataError("the query vector must be an array of numbers")
        if len(vec) != dim:
            raise DataError(f"the query vector has dimension {len(vec)}; the index has DIM {dim}")
        return vec

    def _check_vectors(self, engine: RowCollection, row: Row) -> None:
        """A vector of the wrong dimension in an indexed field is refused (22000)."""
        for vindex in engine.vectors.values():
            field = vindex.field
            if field is None:
                field = next((f for f in row if as_vector(row[f]) is not None), None)
            vec = as_vector(row.get(field)) if field is not None else None
            if vec is not None and len(vec) != vindex.dim:
                raise DataError(
                    f'field "{field}" holds a vector of dimension {len(vec)}; '
                    f'vector index "{vindex.name}" has DIM {vindex.dim}'
                )

    def _vector_distance(self, engine: RowCollection | None) -> Callable[..., Any]:
        def vector_distance(value: Any, query: Any) -> float | None:
            a, b = as_vector(value), as_vector(query)
            if a is None or b is None:
                return None
            if len(a) != len(b):
                raise DataError(f"vector_distance() of dimensions {len(a)} and {len(b)}")
            field_metric = "cosine"
            if engine is not None:
                vindex = next((v for v in engine.vectors.values() if v.dim == len(a)), None)
                field_metric = vindex.metric if vindex is not None else field_metric
            return vector_distance_of(field_metric, a, b)

        return vector_distance

    # -- CRDT --

    async def _crdt_apply(self, stmt: ast.CrdtApply, params: list[Any]) -> Result:
        ctx = self.ctx(params)
        coll = _node(stmt.collection.eval({}, ctx), "collection")
        doc_id = _node(stmt.doc_id.eval({}, ctx), "document id")
        data = stmt.data.eval({}, ctx)
        if isinstance(data, str):
            data = t.parse_bytea(data)
        if not isinstance(data, bytes):
            raise DataError("crdt_apply() takes the update as bytea")
        self._collection(coll)
        try:
            check_update(data)
        except CrdtError as e:
            raise DataError(f"crdt_apply(): {e}") from None
        await self._commit_or_buffer(coll, [("crdt", doc_id, data, None)])
        return Result([("crdt_apply", t.BOOL)], [(True,)], "SELECT 1")

    def _crdt_state(self, coll: Any, doc_id: Any) -> bytes | None:
        name, doc = _node(coll, "collection"), _node(doc_id, "document id")
        engine = self._collection(name)
        own = [data for key, data in self._pending(name, ("crdt",)) if key == doc]
        return engine.crdt.merged(doc, own) if own else engine.crdt.snapshot(doc)

    # -- graph --

    async def _graph_write(self, stmt: ast.GraphEdgeWrite, params: list[Any]) -> Result:
        if self.tenant.state.collection(stmt.collection) is None:
            if stmt.delete:
                raise UndefinedTable(f'collection "{stmt.collection}" does not exist')
            await self._create_collection(
                ast.CreateCollection(stmt.collection, "document", {}), params
            )
        engine = self._collection(stmt.collection)
        ctx = self.ctx(params)
        key = [
            _node(e.eval({}, ctx), what)
            for e, what in ((stmt.source, "FROM"), (stmt.target, "TO"), (stmt.label, "TYPE"))
        ]
        if stmt.delete:
            exists = self._edges(stmt.collection, engine).get(*key) is not None
            if exists:
                await self._commit_or_buffer(stmt.collection, [("edge_delete", key, None, None)])
            return Result(None, [], f"GRAPH DELETE EDGE {int(exists)}")
        props = _properties(stmt.properties.eval({}, ctx) if stmt.properties is not None else None)
        await self._commit_or_buffer(stmt.collection, [("edge_put", key, props, None)])
        return Result(None, [], "GRAPH INSERT EDGE 1")

    def _edges(self, coll: str, engine: RowCollection) -> EdgeStore:
        """The edges as this session sees them: committed, plus its transaction's."""
        own = self._pending(coll, ("edge_put", "edge_delete"))
        return engine.edges.overlaid(own) if own else engine.edges

    async def _graph_query(self, stmt: ast.GraphQuery, params: list[Any]) -> Result:
        edges = self._edges(stmt.collection, self._collection(stmt.collection))
        ctx = self.ctx(params)
        start = _node(stmt.start.eval({}, ctx), "start node")
        label = _node(stmt.label.eval({}, ctx), "LABEL") if stmt.label is not None else None
        columns = self.describe(stmt, [])
        rows: list[tuple[Any, ...]]
        if stmt.kind == "neighbors":
            rows = [tuple(n) for n in edges.neighbors(start, label, stmt.direction)]
        else:
            assert stmt.depth is not None
            depth = _count(stmt.depth.eval({}, ctx), "DEPTH")
            if stmt.kind == "traverse":
                rows = list(edges.traverse(start, depth, label, stmt.direction))
            else:
                assert stmt.target is not None
                target = _node(stmt.target.eval({}, ctx), "TO")
                path = edges.shortest_path(start, target, depth, label, stmt.direction)
                rows = list(enumerate(path))
        return Result(columns, rows, f"SELECT {len(rows)}")

    async def _graph_algo(self, stmt: ast.GraphAlgo, params: list[Any]) -> Result:
        edges = self._edges(stmt.collection, self._collection(stmt.collection))
        ctx = self.ctx(params)
        columns = self.describe(stmt, [])
        rows: list[tuple[str, Any]]
        if stmt.algorithm == "wcc":
            comp = edges.components()
            rows = sorted(comp.items(), key=lambda kv: (kv[1], kv[0]))
        else:
            damping = float(stmt.damping.eval({}, ctx)) if stmt.damping is not None else 0.85
            iterations = (
                _count(stmt.iterations.eval({}, ctx), "ITERATIONS")
                if stmt.iterations is not None
                else 20
            )
            if not 0.0 <= damping <= 1.0:
                raise DataError("DAMPING must lie between 0 and 1")
            loop = asyncio.get_running_loop()
            ranks = await loop.run_in_executor(None, edges.pagerank, damping, iterations)
            rows = sorted(ranks.items(), key=lambda kv: (-kv[1], kv[0]))
        return Result(columns, [tuple(r) for r in rows], f"SELECT {len(rows)}")

    async def _create_index(self, stmt: ast.CreateIndex, params: list[Any]) -> Result:
        engine = self._collection(stmt.collection)
        name = stmt.name or f"idx_{stmt.collection}_{stmt.field}"
        state = self.tenant.state
        if name in state.indexes or stmt.field in engine.indexes:
            if stmt.if_not_exists:
                return Result(
                    None, [], "CREATE INDEX", [f'index "{name}" already exists, skipping']
                )
            raise DuplicateTable(
                f'index "{name}" already exists'
                if name in state.indexes
                else f'field "{stmt.field}" of "{stmt.collection}" is already indexed'
            )
        if stmt.field == engine.key_field:
            raise DataError(f"{stmt.field} is the primary key and needs no index")
        await self.tenant.commit_catalog(
            "create_index", {"name": name, "collection": stmt.collection, "field": stmt.field}
        )
        return Result(None, [], "CREATE INDEX")

    async def _drop_index(self, stmt: ast.DropIndex, params: list[Any]) -> Result:
        if stmt.name not in self.tenant.state.indexes:
            if stmt.if_exists:
                return Result(
                    None, [], "DROP INDEX", [f'index "{stmt.name}" does not exist, skipping']
                )
            raise UndefinedObject(f'index "{stmt.name}" does not exist')
        await self.tenant.commit_catalog("drop_index", {"name": stmt.name})
        return Result(None, [], "DROP INDEX")

    async def _undrop_collection(self, stmt: ast.UndropCollection, params: list[Any]) -> Result:
        meta = self.tenant.state.catalog.get(stmt.name)
        if meta is None or meta.dropped_ms is None:
            raise UndefinedTable(f'no dropped collection "{stmt.name}" to undrop')
        await self.tenant.commit_catalog("undrop_collection", {"name": stmt.name})
        return Result(None, [], "UNDROP COLLECTION")

    async def _show_collections(self, stmt: ast.ShowCollections, params: list[Any]) -> Result:
        st = self.tenant.state
        rows = [
            (
                m.name,
                st.engines[m.name].engine,
                len(st.engines[m.name]),
                st.engines[m.name].size_bytes,
            )
            for m in st.active()
        ]
        return Result(self.describe(stmt, []), rows, f"SHOW {len(rows)}")

    async def _describe_collection(self, stmt: ast.DescribeCollection, params: list[Any]) -> Result:
        engine = self._any_collection(stmt.name)
        rows = []
        for f in engine.fields():
            name = t.TYPE_NAMES[field_oid(engine, f)]
            vindex = engine.vector_index_on(f) if isinstance(engine, RowCollection) else None
            if vindex is not None:
                name = f"vector({vindex.dim}) {vindex.metric}, index {vindex.name}"
            elif name.startswith("_"):
                name = name[1:] + "[]"
            indexed = f == engine.key_field or f in engine.indexes or vindex is not None
            if isinstance(engine, TimeseriesCollection) and f == engine.time_key:
                name += " (time key)"
            rows.append((f, name, indexed))
        return Result(self.describe(stmt, []), rows, f"DESCRIBE {len(rows)}")

    # -- tenants, users --

    async def _create_tenant(self, stmt: ast.CreateTenant, params: list[Any]) -> Result:
        self._require_superuser("create tenants")
        await self.manager.create_tenant(stmt.name)
        return Result(None, [], "CREATE TENANT")

    async def _drop_tenant(self, stmt: ast.DropTenant, params: list[Any]) -> Result:
        self._require_superuser("drop tenants")
        await self.manager.drop_tenant(stmt.name)
        return Result(None, [], "DROP TENANT")

    async def _purge_tenant(self, stmt: ast.PurgeTenant, params: list[Any]) -> Result:
        self._require_superuser("purge tenants")
        done = await self.manager.purge_tenant(stmt.name)
        notices = [] if done else [f'tenant "{stmt.name}" does not exist; nothing to purge']
        return Result(None, [], "PURGE TENANT", notices)

    async def _show_tenants(self, stmt: ast.ShowTenants, params: list[Any]) -> Result:
        self._require_superuser("list tenants")
        rows = []
        for name, info in sorted(self.manager.system.tenants.items(), key=lambda kv: kv[1]["id"]):
            tenant = self.manager.tenants.get(name)
            if tenant is None or info["status"] != "active":
                continue
            active = tenant.state.active()
            size = sum(tenant.state.engines[m.name].size_bytes for m in active)
            rows.append((name, info["id"], len(active), size))
        return Result(self.describe(stmt, []), rows, f"SHOW {len(rows)}")

    async def _create_user(self, stmt: ast.CreateUser, params: list[Any]) -> Result:
        self._require_superuser("create users")
        await self.manager.create_user(
            stmt.name, stmt.password, stmt.tenant or self.tenant.name, False
        )
        return Result(None, [], "CREATE ROLE")

    async def _drop_user(self, stmt: ast.DropUser, params: list[Any]) -> Result:
        self._require_superuser("drop users")
        await self.manager.drop_user(stmt.name)
        return Result(None, [], "DROP ROLE")

    async def _grant(self, stmt: ast.Grant, params: list[Any]) -> Result:
        self._require_superuser("grant privileges")
        await self.manager.grant(stmt.privilege, stmt.tenant, stmt.user)
        return Result(None, [], "GRANT")

    # -- settings, maintenance --

    FIXED_SETTINGS = ("server_version", "server_encoding", "is_superuser", "integer_datetimes")

    def _identity_setting(self, name: str, value: str | None) -> str:
        """What SET session_authorization or SET role may store: the session's own user,
        or the default. Another role is refused as PostgreSQL refuses a non-superuser
        (42501); the superuser too (0A000), since this server cannot act as another user
        and SHOW must not claim that it does."""
        own = self.user["name"]
        if value is None or (name == "role" and value.lower() == "none"):
            return own if name == "session_authorization" else "none"
        if value == own:
            return value
        if self.manager.user(value) is None:
            raise InvalidParameterValue(f'role "{value}" does not exist')
        if not self.user["superuser"]:
            if name == "role":
                raise InsufficientPrivilege(f'permission denied to set role "{value}"')
            raise InsufficientPrivilege("permission denied to set session authorization")
        raise FeatureNotSupported(
            f'{name} cannot name another user ("{value}"): a session acts as the user it '
            "logged in as; connect as that user instead"
        )

    async def _set(self, stmt: ast.SetVar, params: list[Any]) -> Result:
        name = stmt.name.lower()
        value = stmt.value
        if name == "client_encoding" and value is not None:
            if value.strip("'\"").upper().replace("-", "").replace("_", "") not in (
                "UTF8",
                "UNICODE",
            ):
                raise DBError(
                    f'invalid value for parameter "client_encoding": "{value}"', sqlstate="22023"
                )
            value = "UTF8"
        if name in self.FIXED_SETTINGS:
            raise DBError(f'parameter "{name}" cannot be changed', sqlstate="55P02")
        if name in ("session_authorization", "role"):
            value = self._identity_setting(name, value)
        if name == "statement_timeout" and value is not None:
            try:
                int(value.rstrip("ms").strip())
            except ValueError:
                raise DBError(
                    f'invalid value for parameter "statement_timeout": "{value}"', sqlstate="22023"
                ) from None
        if value is None and name == "all":
            return Result(None, [], "RESET", parameter_status=self._restore_settings())
        if value is None:  # RESET name, SET name TO DEFAULT: its value at connection start
            value = self._initial_settings.get(name, "")
        self.settings[name] = value
        status = {}
        if name in REPORTED_SETTINGS:
            status[REPORTED_SETTINGS[name]] = self.settings[name]
        return Result(None, [], "SET", parameter_status=status)

    async def _show(self, stmt: ast.Show, params: list[Any]) -> Result:
        if stmt.name == "all":
            rows = [(k, v, "") for k, v in sorted(self.settings.items())]
            return Result(self.describe(stmt, []), rows, f"SHOW {len(rows)}")
        key = stmt.name.replace(" ", "")
        if key not in self.settings:
            raise UndefinedObject(f'unrecognized configuration parameter "{stmt.name}"')
        return Result(self.describe(stmt, []), [(self.settings[key],)], "SHOW")

    # -- prepared statements --

    def prepared_statement(self, name: str) -> Prepared:
        prepared = self.prepared.get(name)
        if prepared is None:
            raise InvalidSqlStatementName(f'prepared statement "{name}" does not exist')
        return prepared

    def _typed_args(self, stmt: ast.ExecutePrepared) -> list[Expr]:
        """EXECUTE's arguments, each cast to its parameter's type (text while the statement
        is unknown: a Parse of EXECUTE may come before the PREPARE it names runs)."""
        prepared = self.prepared.get(stmt.name)
        oids = prepared.param_oids if prepared is not None else []
        return [Cast(a, oids[i]) if i < len(oids) else a for i, a in enumerate(stmt.args)]

    async def _prepare(self, stmt: ast.Prepare, params: list[Any]) -> Result:
        if stmt.name in self.prepared:
            raise DuplicatePreparedStatement(f'prepared statement "{stmt.name}" already exists')
        oids = self.param_types(stmt.statement, stmt.param_oids)
        self.prepared[stmt.name] = Prepared(stmt.sql, stmt.statement, oids)
        return Result(None, [], "PREPARE")

    async def _execute_prepared(
        self, stmt: ast.ExecutePrepared, params: list[Any], columns: list[Column] | None = None
    ) -> Result:
        prepared = self.prepared_statement(stmt.name)
        if isinstance(prepared.stmt, ast.ExecutePrepared):
            # Only Parse can make one; running it could loop through statements forever.
            raise FeatureNotSupported(f'prepared statement "{stmt.name}" is itself an EXECUTE')
        expected, got = len(prepared.param_oids), len(stmt.args)
        if got != expected:
            raise SyntaxError_(
                f'wrong number of parameters for prepared statement "{stmt.name}"',
                detail=f"Expected {expected} parameters but got {got}.",
            )
        for arg in stmt.args:
            for node in arg.walk():
                if isinstance(node, Field):
                    raise UndefinedColumn(f'column "{node.name}" does not exist')
        ctx = self.ctx(params)
        values = [arg.eval({}, ctx) for arg in self._typed_args(stmt)]
        if columns is None and isinstance(
            prepared.stmt, ast.Select | ast.Insert | ast.Update | ast.Delete
        ):
            columns = self.describe(stmt, [])  # so that $1 AS v is of $1's declared type
        return await self.execute(prepared.stmt, values, columns)

    async def _deallocate(self, stmt: ast.Deallocate, params: list[Any]) -> Result:
        if stmt.name is None:
            self._deallocate_all()
            return Result(None, [], "DEALLOCATE ALL")
        self.prepared_statement(stmt.name)
        del self.prepared[stmt.name]
        return Result(None, [], "DEALLOCATE")

    def _deallocate_all(self) -> None:
        # The unnamed statement stays: it may be the one running this DEALLOCATE ALL,
        # and PostgreSQL keeps it apart from the named ones too.
        for name in [n for n in self.prepared if n]:
            del self.prepared[name]

    async def _discard(self, stmt: ast.Discard, params: list[Any]) -> Result:
        """DISCARD ALL forgets prepared statements and settings; the rest have nothing
        to discard here (no plan cache, temporary tables or sequences)."""
        if stmt.what != "all":
            return Result(None, [], f"DISCARD {stmt.what.upper()}")
        if self.txn is not None:
            raise ActiveSqlTransaction("DISCARD ALL cannot run inside a transaction block")
        self._deallocate_all()
        return Result(None, [], "DISCARD ALL", parameter_status=self._restore_settings())

    def _restore_settings(self) -> dict[str, str]:
        """Every setting back to its value at connection start; the reported ones that
        changed, for ParameterStatus."""
        changed = {
            REPORTED_SETTINGS[name]: value
            for name, value in self._initial_settings.items()
            if name in REPORTED_SETTINGS and self.settings.get(name) != value
        }
        self.settings.clear()
        self.settings.update(self._initial_settings)
        return changed

    async def _checkpoint(self, stmt: ast.Checkpoint, params: list[Any]) -> Result:
        if self.user["superuser"]:
            await self.manager.checkpoint_all()
        else:
            await self.tenant.checkpoint()
        return Result(None, [], "CHECKPOINT")

    async def _empty(self, stmt: ast.Empty, params: list[Any]) -> Result:
        return Result(None, [], "")

    # -- system views --

    def _visible_tenants(self) -> list[Tenant]:
        if self.user["superuser"]:
            return list(self.manager.tenants.values())
        return [self.tenant]

    def _system_view(self, name: str, rows: bool) -> tuple[list[Column], list[Row]]:
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
                for tenant in self._visible_tenants():
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
                for tenant in self._visible_tenants():
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
            names = {x.name for x in self._visible_tenants()}
            ops = [
                o
                for o in self.manager.operations.recent
                if self.user["superuser"] or o.tenant in names
            ]
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
                for tenant in (self._visible_tenants() if rows else [])
                for entry in quarantine.entries(tenant.store.quarantine_dir)
            ]
        if view in ("dropped_collections", "l2_cleanup_queue"):
            return self._dropped_view(view, rows)
        raise UndefinedTable(f'system view "{name}" does not exist')

    def _dropped_view(self, view: str, rows: bool) -> tuple[list[Column], list[Row]]:
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
        retention = self.manager.retention_ms()
        for tenant in self._visible_tenants():
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


def _uses(stmt: ast.Select, func: str) -> bool:
    return any(isinstance(n, Func) and n.name == func for n in _select_nodes(stmt)[1])


def _aggregates(stmt: ast.Select) -> list[Agg]:
    """The aggregate calls of a SELECT's output and ORDER BY."""
    return [n for n in _select_nodes(stmt)[0] if isinstance(n, Agg)]


_NODE_CACHE: dict[int, tuple[ast.Select, tuple[list[Expr], list[Expr]]]] = {}


def _select_nodes(stmt: ast.Select) -> tuple[list[Expr], list[Expr]]:
    """(nodes of the output and ORDER BY, nodes of everything), once per parsed statement."""
    hit = _NODE_CACHE.get(id(stmt))
    if hit is not None and hit[0] is stmt:
        return hit[1]
    out_roots = [it.expr for it in stmt.items] + [o.expr for o in stmt.order_by if o.expr]
    other_roots = [e for e in (stmt.where, *stmt.group_by) if e is not None]
    output = [n for r in out_roots for n in r.walk()]
    nodes = (output, output + [n for r in other_roots for n in r.walk()])
    if len(nodes[1]) > 1024:
        return nodes  # a large statement is rarely repeated: not worth holding
    if len(_NODE_CACHE) > 4096:
        _NODE_CACHE.clear()
    _NODE_CACHE[id(stmt)] = (stmt, nodes)
    return nodes


def _probe_value(v: Any, numeric: bool) -> Any:
    """Untyped text probing a numeric field is read as a number (as comparisons do)."""
    if numeric and isinstance(v, str):
        try:
            return _num(v)
        except DBError:
            return v
    return v


def _node(v: Any, what: str) -> str:
    if v is None:
        raise DataError(f"{what} must not be NULL")
    return v if isinstance(v, str) else t.encode_text(t.TEXT, v)


def _count(v: Any, what: str) -> int:
    try:
        n = int(v)
    except (TypeError, ValueError):
        raise DataError(f"{what} must be a whole number") from None
    if n < 0:
        raise DataError(f"{what} must not be negative")
    return n


def _properties(v: Any) -> dict[str, Any]:
    """Edge PROPERTIES: an object literal, or JSON object text."""
    if v is None:
        return {}
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except json.JSONDecodeError:
            raise InvalidTextRepresentation("PROPERTIES is not valid JSON") from None
    if not isinstance(v, dict):
        raise DataError("PROPERTIES must be an object")
    return v


def _live(entry: tuple[Row | None, int | None], now: int) -> Row | None:
    """A transaction's row, unless deleted or its TTL has run out."""
    row, expires = entry
    return None if expires is not None and expires <= now else row


def _own_vector_hits(
    over: dict[Any, tuple[Row | None, int | None]],
    vindex: VectorIndex,
    query: list[float],
    now: int,
) -> list[tuple[Any, float]]:
    """(key, distance) of the vectors in a transaction's own rows, compared exactly."""
    hits = []
    for key, entry in over.items():
        row = _live(entry, now)
        vec = as_vector(row.get(vindex.field)) if row is not None and vindex.field else None
        if vec is not None and len(vec) == vindex.dim:
            hits.append((key, vector_distance_of(vindex.metric, vec, query)))
    return hits


def _timeseries_error(e: TimeseriesError) -> DBError:
    text = str(e)
    if "does not exist" in text:
        return UndefinedColumn(text)
    if "timestamp" in text or "time value" in text:
        return DBError(text, sqlstate="22007")
    return DataError(text)


def _fitted(columns: list[Column], rows: list[tuple[Any, ...]]) -> list[Column]:
    """Columns worked out from the committed field types, widened where a row holds a value
    of another type (a field this transaction changed), which their encoders cannot send.
    Text and JSON columns send any value."""
    fitted = []
    for i, (name, oid) in enumerate(columns):
        tag = OID_TAGS.get(oid, "text")
        if tag != "text":
            tags = {type_tag(r[i]) for r in rows} - {"null", tag}
            if tags:
                oid = _tags_oid(tags | {tag})
        fitted.append((name, oid))
    return fitted


def _timeseries_returning(name: str) -> FeatureNotSupported:
    return FeatureNotSupported(
        f'"{name}" is a timeseries collection: RETURNING works on document and '
        "key-value collections"
    )


def tenant_size(tenant: Tenant) -> int:
    """The size_bytes_estimate of all a tenant's collections (what a backup will hold)."""
    return sum(engine.size_bytes for engine in tenant.state.engines.values())


def _text_key(key: Any) -> Any:
    """Primary keys are text: a number given for one is its text form."""
    return key if key is None or isinstance(key, str) else t.encode_text(t.TEXT, key)


def _hashable(v: Any) -> Any:
    return t.to_json(v) if isinstance(v, dict | list) else v


def _int_clause(e: Expr | None, ctx: Ctx, what: str) -> int | None:
    if e is None:
        return None
    v = e.eval({}, ctx)
    if v is None:
        return None
    try:
        n = int(v)
    except (TypeError, ValueError):
        raise DataError(f"{what} must be an integer") from None
    if n < 0:
        raise DataError(
            f"{what} must not be negative", sqlstate="2201W" if what == "LIMIT" else "2201X"
        )
    return n


def _now_ms() -> int:
    return int(time.time() * 1000)


def uuid7() -> uuid.UUID:
    """A UUID version 7 (RFC 9562): 48-bit Unix ms timestamp, then random bits."""
    ms = int(time.time() * 1000)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (
        (ms << 80)
        | (0x7 << 76)
        | ((rand >> 66) & 0xFFF) << 64
        | (0b10 << 62)
        | (rand & ((1 << 62) - 1))
    )
    return uuid.UUID(int=value)


def _statement_exprs(stmt: ast.Statement) -> tuple[list[Expr], list[tuple[str, Expr]]]:
    """All expressions of a statement, and (field, expression) pairs stored into fields."""
    if isinstance(stmt, ast.Explain):
        return _statement_exprs(stmt.statement)
    if isinstance(stmt, ast.Select):
        exprs = [it.expr for it in stmt.items] + list(stmt.group_by)
        exprs += [o.expr for o in stmt.order_by if o.expr is not None]
        exprs += [e for e in (stmt.where, stmt.limit, stmt.offset) if e is not None]
        return exprs, []
    if isinstance(stmt, ast.Insert):
        pairs = [p for row in stmt.rows for p in row]
        if stmt.on_conflict is not None:
            pairs += stmt.on_conflict.assignments
        return [e for _, e in pairs] + [it.expr for it in stmt.returning], pairs
    if isinstance(stmt, ast.Update):
        exprs = [e for _, e in stmt.assignments] + ([stmt.where] if stmt.where else [])
        return exprs + [it.expr for it in stmt.returning], list(stmt.assignments)
    if isinstance(stmt, ast.Delete):
        return ([stmt.where] if stmt.where else []) + [it.expr for it in stmt.returning], []
    if isinstance(stmt, ast.CrdtApply):
        return [Func("crdt_apply", [stmt.collection, stmt.doc_id, stmt.data])], []
    if isinstance(stmt, ast.VectorSearch):
        return [ast_cast(stmt.query, t.FLOAT4_ARRAY), ast_cast(stmt.k, t.INT8)], []
    if isinstance(stmt, ast.GraphEdgeWrite):
        return [e for e in (stmt.source, stmt.target, stmt.label, stmt.properties) if e], []
    if isinstance(stmt, ast.GraphQuery):
        exprs = [e for e in (stmt.start, stmt.target, stmt.label) if e is not None]
        return exprs + ([ast_cast(stmt.depth, t.INT8)] if stmt.depth is not None else []), []
    if isinstance(stmt, ast.GraphAlgo):
        return [
            ast_cast(e, oid)
            for e, oid in ((stmt.damping, t.FLOAT8), (stmt.iterations, t.INT8))
            if e is not None
        ], []
    return [], []


def ast_cast(e: Expr, oid: int) -> Expr:
    """A parameter standing for a number is typed as one (DEPTH $1, DAMPING $2 ...)."""
    return Cast(e, oid) if isinstance(e, Param) else e


_HANDLERS: dict[type, Callable[..., Any]] = {
    ast.Select: Session._select,
    ast.Insert: Session._insert,
    ast.Update: Session._update,
    ast.Delete: Session._delete,
    ast.Begin: Session._begin,
    ast.Commit: Session._commit,
    ast.Rollback: Session._rollback,
    ast.Explain: Session._explain,
    ast.CreateCollection: Session._create_collection,
    ast.DropCollection: Session._drop_collection,
    ast.UndropCollection: Session._undrop_collection,
    ast.CreateIndex: Session._create_index,
    ast.GraphEdgeWrite: Session._graph_write,
    ast.CrdtApply: Session._crdt_apply,
    ast.CatalogQuery: Session._catalog_query,
    ast.BackupTenant: Session._backup,
    ast.AlterSystem: Session._alter_system,
    ast.RestoreTenant: Session._restore,
    ast.CreateVectorIndex: Session._create_vector_index,
    ast.VectorSearch: Session._vector_search,
    ast.GraphQuery: Session._graph_query,
    ast.GraphAlgo: Session._graph_algo,
    ast.DropIndex: Session._drop_index,
    ast.ShowCollections: Session._show_collections,
    ast.DescribeCollection: Session._describe_collection,
    ast.CreateTenant: Session._create_tenant,
    ast.DropTenant: Session._drop_tenant,
    ast.PurgeTenant: Session._purge_tenant,
    ast.ShowTenants: Session._show_tenants,
    ast.CreateUser: Session._create_user,
    ast.DropUser: Session._drop_user,
    ast.Grant: Session._grant,
    ast.SetVar: Session._set,
    ast.Show: Session._show,
    ast.Checkpoint: Session._checkpoint,
    ast.Prepare: Session._prepare,
    ast.ExecutePrepared: Session._execute_prepared,
    ast.Deallocate: Session._deallocate,
    ast.Discard: Session._discard,
    ast.Empty: Session._empty,
    ast.CopyFrom: Session._copy_from,
}


class BackupToClient(CopyOut):
    """COPY (BACKUP TENANT t) TO STDOUT: the envelope as binary COPY data (format 1, so
    psql writes it out byte for byte)."""

    def __init__(self, session: Session, tenant: Tenant):
        self.session = session
        self.tenant = tenant

    async def run(self, send: Callable[[bytes], Awaitable[None]]) -> Result:
        tenant = self.tenant
        op, progress = self.session.start_operation(
            "backup", tenant.name, "stdout", tenant_size(tenant)
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
            chunks, lambda source: self.session.restore_from(self.stmt, source)
        )
        # The COPY form ends with its COPY tag; the figures travel as the NOTICE.
        return Result(None, [], f"COPY {read}", result.notices)


class TimeseriesLoad(CopyIn):
    """COPY .. FROM STDIN into a timeseries collection: the data is parsed column-wise
    and committed as one operation (one WAL record, so atomic)."""

    def __init__(self, session: Session, stmt: ast.CopyFrom, engine: TimeseriesCollection):
        self.session = session
        self.stmt = stmt
        self.columns = len(stmt.columns or engine.columns)

    async def run(self, chunks: AsyncIterator[bytes]) -> Result:
        pieces: list[bytes] = []
        total = 0
        async for data in chunks:
            total += len(data)
            if total <= MAX_COPY_BYTES:
                pieces.append(data)
        if total > MAX_COPY_BYTES:
            raise DBError(
                f"COPY of {total} bytes is over the {MAX_COPY_BYTES} bytes one COPY "
                "may load as a single transaction; split the data",
                sqlstate="54000",
            )
        stmt, session = self.stmt, self.session
        engine = session._any_collection(stmt.collection)
        if not isinstance(engine, TimeseriesCollection):
            raise ObjectInUse(f'collection "{stmt.collection}" was replaced during the COPY')
        loop = asyncio.get_running_loop()
        try:
            table = await loop.run_in_executor(
                None,
                engine.batch_from_csv,
                b"".join(pieces),
                stmt.columns,
                stmt.format,
                stmt.header,
                stmt.delimiter,
            )
            payload = await loop.run_in_executor(None, to_ipc, table)
        except TimeseriesError as e:
            raise _timeseries_error(e) from None
        await session._commit_or_buffer(stmt.collection, [("ts", None, payload, None)])
        return Result(None, [], f"COPY {table.num_rows}")
