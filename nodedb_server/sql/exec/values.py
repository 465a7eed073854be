"""The values a write stores: keys, typed fields, checked vectors, SET applied."""

from __future__ import annotations

import datetime as dt
import decimal
import os
import time
import uuid
from collections.abc import Iterable
from typing import Any

from nodedb_server import types as t
from nodedb_server.engines.base import Row, RowCollection
from nodedb_server.engines.document import DocumentCollection, TableColumn
from nodedb_server.engines.kv import KvCollection
from nodedb_server.engines.vector import as_vector
from nodedb_server.errors import (
    DataError,
    DBError,
    FeatureNotSupported,
    NotNullViolation,
    NumericValueOutOfRange,
    UndefinedColumn,
)
from nodedb_server.sql.expr import Ctx, Expr, Field, cast_value


def text_key(key: Any) -> Any:
    """Primary keys are text: a number given for one is its text form."""
    return key if key is None or isinstance(key, str) else t.encode_text(t.TEXT, key)


def key_value(engine: RowCollection, key: Any) -> Any:
    """A key as ``engine`` stores it: text, or an integer for a table's integer key."""
    if engine.int_key and key is not None:
        oid = engine.column_oid(engine.key_field) or t.INT8
        return _in_range(cast_value(key, oid), oid)
    return text_key(key)


def now_ms() -> int:
    return int(time.time() * 1000)


def live_row(entry: tuple[Row | None, int | None], now: int) -> Row | None:
    """A transaction's row, unless deleted or its TTL has run out."""
    row, expires = entry
    return None if expires is not None and expires <= now else row


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


def new_row(
    engine: RowCollection,
    fields: list[tuple[str, Expr]],
    ctx: Ctx,
    object_form: bool,
    now: int,
) -> tuple[Row, int | None]:
    """A new row from an INSERT's fields (its key made if not given), and its expiry."""
    kf = engine.key_field
    values = {name: e.eval({}, ctx) for name, e in fields}
    expires = None
    if isinstance(engine, KvCollection) and object_form and "ttl" in values:
        ttl = values.pop("ttl")
        try:
            expires = now + int(float(ttl) * 1000) if ttl is not None else None
        except (TypeError, ValueError):
            raise DataError("ttl must be a number of seconds") from None
    if engine.table is not None:
        values = _table_values(engine, values)
    key = values.pop(kf, None)
    if key is None:
        if isinstance(engine, KvCollection):
            raise DataError(f'a row of key-value collection "{engine.name}" needs a key')
        if isinstance(engine, DocumentCollection) and engine.int_key:
            key = engine.next_serial()
            if engine.sequence and ctx.session is not None:  # currval sees it
                ctx.session.sequence_values[engine.sequence] = key
        else:
            key = str(uuid7())
    else:
        key = key_value(engine, key)
        key_col = engine.table.column(kf) if engine.table is not None else None
        if key_col is not None and key_col.typmod >= 0:  # a varchar(n) key
            key = fit(key_col, key)
    row: Row = {kf: key}
    for name, v in values.items():
        row[name] = typed_value(engine, name, v)
    if engine.table is not None:
        _check_not_null(engine, row)
    check_vectors(engine, row)
    return row, expires


def _table_values(engine: RowCollection, values: dict[str, Any]) -> dict[str, Any]:
    """An INSERT's values into a table: every name a column, the omitted ones their
    defaults."""
    table = engine.table
    for name in values:
        _column_of(engine, name)
    out = dict(values)
    for col in table.columns:
        if col.name not in out and col.default is not None and not col.default.get("serial"):
            out[col.name] = (
                dt.datetime.now(dt.UTC) if col.default.get("now") else col.default["value"]
            )
    return out


def _column_of(engine: RowCollection, name: str) -> Any:
    col = engine.table.column(name)
    if col is None:
        if engine.hidden_key and name == engine.key_field:
            raise DBError(f'cannot assign to system column "{name}"', sqlstate="428C9")
        raise UndefinedColumn(f'column "{name}" of relation "{engine.name}" does not exist')
    return col


def check_table_fields(engine: Any, exprs: list[Expr], aliases: Iterable[str] = ()) -> None:
    """Every field a statement over a table reads is one of its columns (or its hidden
    ctid, or an output alias): an unknown one is 42703, as in PostgreSQL, never read as
    NULL (DELETE .. WHERE misspelt IS NULL would match every row)."""
    if not isinstance(engine, RowCollection) or engine.table is None:
        return
    known = {c.name for c in engine.table.columns} | {engine.key_field, *aliases}
    for e in exprs:
        for node in e.walk():
            if isinstance(node, Field) and node.table != "excluded" and node.name not in known:
                raise UndefinedColumn(f'column "{node.name}" does not exist')


def _check_not_null(engine: RowCollection, row: Row) -> None:
    for col in engine.table.columns:
        if col.not_null and row.get(col.name) is None:
            shown = ", ".join(
                "null" if row.get(c.name) is None else t.encode_text(c.oid, row[c.name])
                for c in engine.table.columns
            )
            raise NotNullViolation(
                f'null value in column "{col.name}" of relation "{engine.name}" '
                "violates not-null constraint",
                detail=f"Failing row contains ({shown}).",
            )


# The range of each integer type a table column declares (PostgreSQL's messages).
_INT_RANGES = {
    t.INT2: (1 << 15, "smallint"),
    t.INT4: (1 << 31, "integer"),
    t.INT8: (1 << 63, "bigint"),
}


def _in_range(v: Any, oid: int) -> Any:
    bound, name = _INT_RANGES[oid]
    if isinstance(v, int) and not -bound <= v < bound:
        raise NumericValueOutOfRange(f"{name} out of range")
    return v


def typed_value(engine: RowCollection, name: str, v: Any) -> Any:
    """A value as a declared field (a key-value collection's value field, a table's
    column) stores it: cast to its type; text for a table's json column is parsed."""
    oid = engine.column_oid(name)
    if oid is None or v is None:
        return v
    if oid in (t.JSON, t.JSONB):
        if engine.table is not None and isinstance(v, str):
            return t.decode_text(oid, v)
        return v
    if engine.table is not None:
        v = _table_value(engine, name, v, oid)
        col = engine.table.column(name)
        return fit(col, v) if col is not None and col.typmod >= 0 else v
    v = cast_value(v, oid)
    return _in_range(v, oid) if oid in _INT_RANGES else v


# The column types a boolean cannot be stored in (PostgreSQL: 42804).
_NOT_BOOL = frozenset({t.INT2, t.INT4, t.INT8, t.FLOAT4, t.FLOAT8, t.NUMERIC})


def _table_value(engine: RowCollection, name: str, v: Any, oid: int) -> Any:
    """A value cast to a table column's type: numeric kept exact (a Decimal), a
    timestamp without time zone keeping its wall clock, integers held to their range."""
    if isinstance(v, bool) and oid in _NOT_BOOL:
        raise DBError(
            f'column "{name}" is of type {_TYPE_WORDS.get(oid, t.TYPE_NAMES[oid])} but '
            "expression is of type boolean",
            "42804",
        )
    if oid == t.NUMERIC:
        try:
            return decimal.Decimal(v.strip() if isinstance(v, str) else str(v))
        except decimal.InvalidOperation:
            raise DBError(f'invalid input syntax for type numeric: "{v}"', "22P02") from None
    if oid == t.TIMESTAMP and isinstance(v, str):
        return t.parse_timestamp(v, wall=True)
    if oid == t.TIMESTAMP and isinstance(v, dt.datetime) and v.tzinfo is None:
        return v.replace(tzinfo=dt.UTC)
    v = cast_value(v, oid)
    return _in_range(v, oid) if oid in _INT_RANGES else v


_TYPE_WORDS = {
    t.INT2: "smallint",
    t.INT4: "integer",
    t.INT8: "bigint",
    t.FLOAT4: "real",
    t.FLOAT8: "double precision",
}


def fit(col: TableColumn, v: Any) -> Any:
    """A value of ``col``'s type as its modifier allows: varchar(n) no longer than n
    (22001), numeric(p, s) rounded to s places and within p digits (22003)."""
    if v is None:
        return v
    length = col.length
    if length is not None and isinstance(v, str) and len(v) > length:
        if v[length:].strip(" "):
            raise DBError(f"value too long for type character varying({length})", "22001")
        return v[:length]  # as PostgreSQL: trailing spaces past n are cut, not an error
    prec = col.precision
    if prec is not None and isinstance(v, int | float | decimal.Decimal):
        precision, scale = prec
        q = decimal.Decimal(str(v)).quantize(
            decimal.Decimal(1).scaleb(-scale), rounding=decimal.ROUND_HALF_UP
        )
        if q and q.adjusted() >= precision - scale:
            raise DBError(
                "numeric field overflow",
                "22003",
                detail=f"A field with precision {precision}, scale {scale} must round to an "
                f"absolute value less than 10^{precision - scale}.",
            )
        return q  # a Decimal of the column's scale: printed 3.00, summed exactly
    return v


def assign(engine: RowCollection, old: Row, assignments: list[tuple[str, Expr]], ctx: Ctx) -> Row:
    new = dict(old)
    for name, e in assignments:
        if engine.table is not None:
            _column_of(engine, name)
        if name == engine.key_field:
            raise FeatureNotSupported(f"the primary key {name} cannot be updated")
        new[name] = typed_value(engine, name, e.eval(old, ctx))
    if engine.table is not None:
        _check_not_null(engine, new)
    check_vectors(engine, new)
    return new


def check_vectors(engine: RowCollection, row: Row) -> None:
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
