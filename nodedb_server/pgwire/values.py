"""Values between the wire and Python, by type OID and format code.

A Bind's parameters are decoded here, and a result's RowDescription fields and
DataRow values made here; the per-type codecs are nodedb_server/types.py. No
I/O and no protocol state: the shell calls these between the machine and the
session.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from nodedb_server import types as t
from nodedb_server.errors import DBError, ProtocolViolation, StatementTooComplex
from nodedb_server.pgwire import messages as m
from nodedb_server.sql.result import Column

Encoder = Callable[[Any], bytes]


def too_complex() -> StatementTooComplex:
    return StatementTooComplex(
        "statement too complex",
        detail="Its expressions or values nest (or chain) too deeply to evaluate.",
    )


def bind_params(event: m.Bind, param_oids: list[int]) -> list[Any]:
    """The parameter values of a Bind to a statement whose parameters have these types."""
    if len(event.params) != len(param_oids):
        # An ERROR, not FATAL, as in PostgreSQL: the message was well framed, and the
        # session goes on after the Sync.
        raise DBError(
            f"bind message supplies {len(event.params)} parameters, but prepared statement "
            f'"{event.statement}" requires {len(param_oids)}',
            sqlstate=ProtocolViolation.sqlstate,
        )
    fmts = m.format_codes(event.param_formats, len(event.params))
    values: list[Any] = []
    for raw, fmt, oid in zip(event.params, fmts, param_oids, strict=True):
        if raw is None:
            values.append(None)
        elif fmt == 1:
            values.append(t.decode_binary(oid, raw))
        else:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DBError("invalid byte sequence for encoding UTF8", sqlstate="22021") from None
            values.append(t.decode_text(oid, text))
    return values


def row_description(columns: list[Column], formats: tuple[int, ...]) -> m.RowDescription:
    fmts = m.format_codes(formats, len(columns))
    return m.RowDescription(
        [
            m.Field(name, oid, t.TYPE_SIZES.get(oid, -1), -1, fmt)
            for (name, oid), fmt in zip(columns, fmts, strict=True)
        ]
    )


def row_encoders(columns: list[Column], formats: tuple[int, ...]) -> list[Encoder]:
    fmts = m.format_codes(formats, len(columns))
    return [t.encoder(oid, fmt) for (_, oid), fmt in zip(columns, fmts, strict=True)]


def row_values(
    encoders: list[Encoder], row: tuple[Any, ...], columns: list[Column]
) -> list[bytes | None]:
    """One row's values as a DataRow carries them (None is SQL NULL)."""
    if len(row) == len(encoders):
        try:  # the hot path: one comprehension; a failure is named by the loop below
            return [None if v is None else enc(v) for enc, v in zip(encoders, row, strict=True)]
        except (RecursionError, ValueError, TypeError, OverflowError, AttributeError, struct.error):
            pass
    values: list[bytes | None] = []
    for enc, v, col in zip(encoders, row, columns, strict=True):
        if v is None:
            values.append(None)
            continue
        try:
            values.append(enc(v))
        except RecursionError:
            raise too_complex() from None
        except (ValueError, TypeError, OverflowError, AttributeError, struct.error):
            raise DBError(
                f'a value of field "{col[0]}" does not fit its column type '
                f"{t.TYPE_NAMES.get(col[1], col[1])}; prepare the statement again",
                sqlstate="22000",
            ) from None
    return values
