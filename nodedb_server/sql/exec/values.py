"""The values a write stores: keys, typed fields, checked vectors, SET applied."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from nodedb_server import types as t
from nodedb_server.engines.base import Row, RowCollection
from nodedb_server.engines.kv import KvCollection
from nodedb_server.engines.vector import as_vector
from nodedb_server.errors import DataError, FeatureNotSupported
from nodedb_server.sql.describe import KV_TYPE_OIDS
from nodedb_server.sql.expr import Ctx, Expr, cast_value


def text_key(key: Any) -> Any:
    """Primary keys are text: a number given for one is its text form."""
    return key if key is None or isinstance(key, str) else t.encode_text(t.TEXT, key)


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
    key = values.pop(kf, None)
    if key is None:
        if isinstance(engine, KvCollection):
            raise DataError(f'a row of key-value collection "{engine.name}" needs a key')
        key = str(uuid7())
    elif not isinstance(key, str):
        key = t.encode_text(t.TEXT, key)
    row: Row = {kf: key}
    for name, v in values.items():
        row[name] = typed_value(engine, name, v)
    check_vectors(engine, row)
    return row, expires


def typed_value(engine: RowCollection, name: str, v: Any) -> Any:
    """A value as a typed field of a key-value collection stores it."""
    if isinstance(engine, KvCollection) and name in engine.typed_fields:
        oid = KV_TYPE_OIDS[engine.typed_fields[name]]
        if oid != t.JSONB:
            return cast_value(v, oid)
    return v


def assign(engine: RowCollection, old: Row, assignments: list[tuple[str, Expr]], ctx: Ctx) -> Row:
    new = dict(old)
    for name, e in assignments:
        if name == engine.key_field:
            raise FeatureNotSupported(f"the primary key {name} cannot be updated")
        new[name] = typed_value(engine, name, e.eval(old, ctx))
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
