"""COPY .. TO STDOUT: a SELECT's rows as PostgreSQL's text or CSV COPY format.

Text format (PostgreSQL's): one line per row, columns split by the delimiter (tab
by default), NULL as ``\\N`` (or the NULL option), and in each value a backslash,
newline, carriage return, tab and the delimiter escaped with a backslash.
CSV: values quoted (with QUOTE, ``"`` by default, doubled inside) when they hold
the delimiter, the quote, a newline or a carriage return, or when they read as the
NULL string (empty by default, so an empty string is ``""``); NULL unquoted. Values
are written as a text-format DataRow would carry them. HEADER writes the column
names first. The rows are produced by the SELECT the statement holds, so COPY c TO
sends exactly what ``SELECT * FROM c`` returns.
Binary: PostgreSQL's binary COPY format (docs/FORMATS.md, as read by copy_in.py):
signature, flags and an empty header extension, then per row an int16 count and
each value as int32 length (-1: NULL) and its binary send form; an int16 -1 ends it.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from nodedb_server import types as t
from nodedb_server.sql import ast
from nodedb_server.sql.registry import statement
from nodedb_server.sql.result import CopyOut, Result

if TYPE_CHECKING:
    from nodedb_server.sql.session import Session


@statement(ast.CopyTo, writes=False, implicit=True)
async def copy_to(s: Session, stmt: ast.CopyTo, params: list[Any]) -> Result:
    result = await s.execute(stmt.select, params)
    columns = result.columns or []
    return Result(None, [], "", copy=RowsOut(stmt, columns, result.rows))


_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!iI", 0, 0)


class RowsOut(CopyOut):
    def __init__(self, stmt: ast.CopyTo, columns: list[Any], rows: list[tuple[Any, ...]]):
        self.stmt, self.names, self.rows = stmt, [c[0] for c in columns], rows
        self.oids = [c[1] for c in columns]
        self.columns = len(columns)
        self.binary = stmt.format == "binary"

    async def run(self, send: Callable[[bytes], Awaitable[None]]) -> Result:
        """One CopyData message per row, as PostgreSQL sends them: psycopg's row reader
        (``Copy.rows()``) takes each message for one row."""
        stmt = self.stmt
        if self.binary:
            return await self._binary(send)
        line = _csv_line if stmt.format == "csv" else _text_line
        encoders = [t.encoder(oid, 0) for oid in self.oids]
        if stmt.header:
            await send(line(stmt, self.names).encode())
        for row in self.rows:
            text = [
                None if v is None else enc(v).decode() for enc, v in zip(encoders, row, strict=True)
            ]
            await send(line(stmt, text).encode())
        return Result(None, [], f"COPY {len(self.rows)}")

    async def _binary(self, send: Callable[[bytes], Awaitable[None]]) -> Result:
        """Each row in a CopyData message of its own, the header in front of the first
        (psycopg's reader looks for it there), the trailer alone at the end."""
        encoders = [t.encoder(oid, 1) for oid in self.oids]
        count = struct.pack("!h", self.columns)
        head = _SIGNATURE
        for row in self.rows:
            out = [head, count]
            head = b""
            for enc, v in zip(encoders, row, strict=True):
                if v is None:
                    out.append(b"\xff\xff\xff\xff")
                    continue
                data = enc(v)
                out.append(struct.pack("!i", len(data)))
                out.append(data)
            await send(b"".join(out))
        await send(head + b"\xff\xff")
        return Result(None, [], f"COPY {len(self.rows)}")


_TEXT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _text_value(v: str, delimiter: str) -> str:
    if not any(c in v for c in "\\\n\r\t") and delimiter not in v:
        return v
    out = []
    for c in v:
        esc = _TEXT_ESCAPES.get(c)
        out.append(esc if esc is not None else ("\\" + c if c == delimiter else c))
    return "".join(out)


def _text_line(stmt: ast.CopyTo, values: list[str | None]) -> str:
    d = stmt.delimiter
    return d.join(stmt.null if v is None else _text_value(v, d) for v in values) + "\n"


def _csv_value(v: str, stmt: ast.CopyTo) -> str:
    q = stmt.quote
    if v == stmt.null or v == "\\." or any(c in v for c in (stmt.delimiter, q, "\n", "\r")):
        return q + v.replace(q, q + q) + q
    return v


def _csv_line(stmt: ast.CopyTo, values: list[str | None]) -> str:
    return (
        stmt.delimiter.join(stmt.null if v is None else _csv_value(v, stmt) for v in values) + "\n"
    )
