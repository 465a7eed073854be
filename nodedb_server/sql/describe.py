"""Typing: the column types a statement's rows have, and each parameter's type."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodedb_server import types as t
from nodedb_server.engines.base import RowCollection, type_tag
from nodedb_server.engines.kv import KvCollection
from nodedb_server.engines.timeseries import (
    TimeseriesCollection,
)
from nodedb_server.sql import ast
from nodedb_server.sql.expr import (
    Agg,
    Arith,
    Cast,
    Cmp,
    Const,
    Expr,
    Field,
    Func,
    Neg,
    Param,
)
from nodedb_server.sql.registry import spec_of
from nodedb_server.sql.result import Column
from nodedb_server.tenants.catalog import Engine

if TYPE_CHECKING:
    from nodedb_server.sql.session import Session


TAG_OIDS = {
    "int": t.INT8,
    "float": t.FLOAT8,
    "bool": t.BOOL,
    "text": t.TEXT,
    "bytea": t.BYTEA,
    "timestamp": t.TIMESTAMPTZ,
}

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

TS_KIND_OIDS = {
    "timestamp": t.TIMESTAMPTZ,
    "text": t.TEXT,
    "float": t.FLOAT8,
    "int": t.INT8,
    "bool": t.BOOL,
}


# What a field's type is read from: a collection, or a system view's declared columns.
Fields = Engine | dict[str, int] | None


def field_oid(engine: Fields, name: str) -> int:
    """The column type of a field, from the value types seen in it (SQL.md)."""
    if engine is None:
        return t.TEXT
    if isinstance(engine, dict):
        return engine.get(name, t.TEXT)
    if isinstance(engine, TimeseriesCollection):
        return TS_KIND_OIDS.get(engine.columns.get(name, "text"), t.TEXT)
    declared = engine.column_oid(name)
    if declared is not None:
        return declared
    if name == engine.key_field:
        return t.TEXT
    return tags_oid(engine.field_types.get(name, set()))


def tags_oid(tags: set[str]) -> int:
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


def typed_target(engine: Engine | None, name: str) -> int | None:
    """The type of a field that has one: a KV value field declared in DDL, a timeseries
    column, or a field bound to a vector index. Schemaless fields have none."""
    if isinstance(engine, TimeseriesCollection):
        kind = engine.columns.get(name)
        return TS_KIND_OIDS[kind] if kind is not None else None
    declared = engine.column_oid(name) if isinstance(engine, RowCollection) else None
    if declared is not None:
        return declared
    if isinstance(engine, RowCollection) and engine.vector_index_on(name) is not None:
        return t.FLOAT4_ARRAY
    return None


def param_types(s: Session, stmt: ast.Statement, declared: tuple[int, ...]) -> list[int]:
    """Each parameter's type: declared, else a cast, else a typed field, else text."""
    if isinstance(stmt, ast.Insert) and stmt.query is not None:
        return param_types(s, stmt.query, declared)  # INSERT .. SELECT: the query's
    spec = spec_of(stmt)
    if spec.param_types is not None:
        return spec.param_types(s, stmt, declared)
    exprs, typed_targets = spec.exprs(s, stmt)
    count = max(
        [p.index + 1 for e in exprs for p in e.walk() if isinstance(p, Param)] + [len(declared)],
        default=0,
    )
    oids = [declared[i] if i < len(declared) and declared[i] else 0 for i in range(count)]
    engine = engine_of(s, stmt)
    hints: dict[int, int] = {}
    for e in exprs:
        for node in e.walk():
            if isinstance(node, Cast) and isinstance(node.inner, Param):
                hints.setdefault(node.inner.index, node.oid_hint)
            elif isinstance(node, Func) and node.fn is not None:
                for arg, oid in zip(node.args, node.fn.args, strict=False):
                    if isinstance(arg, Param):
                        hints.setdefault(arg.index, oid)
            elif isinstance(node, Cmp):
                for a, b in ((node.left, node.right), (node.right, node.left)):
                    if isinstance(a, Field) and isinstance(b, Param):
                        hints.setdefault(b.index, compared_oid(engine, a.name))
    for name, e in typed_targets:
        target = typed_target(engine, name)
        if isinstance(e, Param) and target is not None:
            hints.setdefault(e.index, target)
    return [oids[i] or hints.get(i, t.TEXT) for i in range(count)]


# Observed field types a parameter compared with takes (SQL.md "Types on the wire"):
# a schemaless field holding only numbers, booleans or timestamps. Text and jsonb
# fields leave it text.
_COMPARED = frozenset({t.INT8, t.FLOAT8, t.BOOL, t.TIMESTAMPTZ})


def compared_oid(engine: Engine | None, name: str) -> int:
    """The type of a parameter compared with field ``name``: a KV field's declared type,
    or the one scalar type a schemaless field has held, else text."""
    if isinstance(engine, RowCollection) and engine.column_oid(name) is not None:
        return field_oid(engine, name)
    if isinstance(engine, KvCollection):
        return field_oid(engine, name)
    if isinstance(engine, RowCollection) and name != engine.key_field:
        oid = field_oid(engine, name)
        return oid if oid in _COMPARED else t.TEXT
    return t.TEXT


def engine_of(s: Session, stmt: ast.Statement) -> Engine | None:
    """The collection a statement works on, if it names one that exists."""
    if isinstance(stmt, ast.Explain):
        return engine_of(s, stmt.statement)
    name = getattr(stmt, "collection", None) or getattr(stmt, "source", None)
    found = s.tenant.state.collection(name) if isinstance(name, str) else None
    return found[1] if found else None


def describe(s: Session, stmt: ast.Statement, param_oids: list[int]) -> list[Column] | None:
    """The columns a statement returns (None: it returns no rows)."""
    return spec_of(stmt).columns(s, stmt, param_oids)


def infer(e: Expr, engine: Fields, param_oids: list[int]) -> int:
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
        inner = infer(e.arg, engine, param_oids) if e.arg is not None else t.INT8
        if e.name == "avg":
            return t.NUMERIC if inner == t.NUMERIC else t.FLOAT8
        if e.name == "sum" and inner == t.NUMERIC:  # a table's numeric column: exact
            return t.NUMERIC
        if e.name == "sum":
            return t.INT8 if inner in (t.INT2, t.INT4, t.INT8) else t.FLOAT8
        return inner
    if isinstance(e, Func) and e.name == "coalesce" and e.args:
        # the type of its arguments: the first that has one (coalesce(amount, 0) is numeric)
        typed = [infer(a, engine, param_oids) for a in e.args if not isinstance(a, Const | Param)]
        return typed[0] if typed else e.oid_hint
    if isinstance(e, Func):
        return e.oid_hint
    if isinstance(e, Arith):
        if e.op == "||":
            return t.TEXT
        a, b = (infer(x, engine, param_oids) for x in (e.left, e.right))
        if t.TIMESTAMPTZ in (a, b):
            return t.TIMESTAMPTZ
        if a in (t.INT2, t.INT4, t.INT8) and b in (t.INT2, t.INT4, t.INT8):
            return t.INT8 if t.INT8 in (a, b) else t.INT4
        return t.FLOAT8
    if isinstance(e, Neg):
        return infer(e.inner, engine, param_oids)
    return e.oid_hint


def fitted(columns: list[Column], rows: list[tuple[Any, ...]]) -> list[Column]:
    """Columns worked out from the committed field types, widened where a row holds a value
    of another type (a field this transaction changed), which their encoders cannot send.
    Text and JSON columns send any value."""
    fitted = []
    for i, (name, oid) in enumerate(columns):
        tag = OID_TAGS.get(oid, "text")
        if tag != "text":
            tags = {type_tag(r[i]) for r in rows} - {"null", tag}
            if tags:
                oid = tags_oid(tags | {tag})
        fitted.append((name, oid))
    return fitted


def ast_cast(e: Expr, oid: int) -> Expr:
    """A parameter standing for a number is typed as one (DEPTH $1, DAMPING $2 ...)."""
    return Cast(e, oid) if isinstance(e, Param) else e
