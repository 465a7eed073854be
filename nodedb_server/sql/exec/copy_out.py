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
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from nodedb_server import types as t
from nodedb_server.sql import ast
from nodedb_server.sql.registry import statement
from nodedb_server.sql.result import CopyOut, Result

if TYPE_CHECKING:
    from nodedb_server.sql.session import Session

CHUNK_BYTES = 64 * 1024  # CopyData payloads of about this size


@statement(ast.CopyTo, writes=False, implicit=True)
async def copy_to(s: Session, stmt: ast.CopyTo, params: list[Any]) -> Result:
    result = await s.execute(stmt.select, params)
    columns = result.columns or []
    return Result(None, [], "", copy=RowsOut(stmt, columns, result.rows))


class RowsOut(CopyOut):
    binary = False

    def __init__(self, stmt: ast.CopyTo, columns: list[Any], rows: list[tuple[Any, ...]]):
        self.stmt, self.names, self.rows = stmt, [c[0] for c in columns], rows
        self.oids = [c[1] for c in columns]
        self.columns = len(columns)

    async def run(self, send: Callable[[bytes], Awaitable[None]]) -> Result:
        stmt = self.stmt
        line = _csv_line if stmt.format == "csv" else _text_line
        encoders = [t.encoder(oid, 0) for oid in self.oids]
        out: list[str] = []
        size = 0
        if stmt.header:
            out.append(line(stmt, self.names))
        for row in self.rows:
            text = [
                None if v is None else enc(v).decode() for enc, v in zip(encoders, row, strict=True)
            ]
            out.append(line(stmt, text))
            size += len(out[-1])
            if size >= CHUNK_BYTES:
                await send("".join(out).encode())
                out, size = [], 0
        if out:
            await send("".join(out).encode())
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
