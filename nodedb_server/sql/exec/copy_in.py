"""COPY c [(cols)] FROM STDIN into document and key-value collections: text, csv, binary.

Each line is a row; its values are text, read as the type the field has (a
key-value field's declared type, or the one scalar type a schemaless field has
held: int8, float8, bool, timestamptz), else kept as text. Without a column list
the columns are those of ``SELECT *`` (the key first). The rows are inserted as
one commit, or into the open transaction: a duplicate key (23505), a value its
field's type cannot read (22P02) or a line with the wrong number of values (22P04)
loads nothing.

Binary is PostgreSQL's binary COPY format: the 11-byte signature ``PGCOPY\n\377\r\n\0``,
int32 flags, int32 header-extension length and that many bytes; then per row an
int16 field count and, per field, an int32 length (-1: NULL) and the value in the
binary form of the column's type as SELECT describes it (what asyncpg's
copy_records_to_table encodes to); an int16 -1 ends the data.
"""

from __future__ import annotations

import csv
import io
import re
import struct
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from nodedb_server import types as t
from nodedb_server.engines.base import RowCollection
from nodedb_server.errors import DBError, ObjectInUse, SyntaxError_, duplicate_key
from nodedb_server.sql import ast
from nodedb_server.sql.describe import compared_oid, field_oid, typed_target
from nodedb_server.sql.exec.txn import Intent, commit_or_buffer, read_row
from nodedb_server.sql.exec.values import new_row, now_ms
from nodedb_server.sql.expr import Const, Ctx, Expr
from nodedb_server.sql.result import CopyIn, Result

if TYPE_CHECKING:
    from nodedb_server.sql.session import Session

MAX_COPY_BYTES = 192 * 1024 * 1024
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)")


def _unescape(m: re.Match[str]) -> str:
    c = m.group(1)
    if c[0] == "x":
        return chr(int(c[1:], 16))
    if c[0].isdigit():
        return chr(int(c, 8))
    return _ESCAPES.get(c, c)


def text_rows(data: str, delimiter: str) -> list[list[str | None]]:
    """PostgreSQL's text COPY format: one row a line, ``\\N`` is NULL, backslash escapes."""
    rows: list[list[str | None]] = []
    for line in data.split("\n"):
        line = line.removesuffix("\r")
        if line == "\\.":
            break
        if not line:
            continue
        rows.append(
            [None if v == "\\N" else _ESCAPE.sub(_unescape, v) for v in line.split(delimiter)]
        )
    return rows


def csv_rows(data: str, delimiter: str, header: bool) -> list[list[str | None]]:
    """CSV as PostgreSQL writes it; an empty value is NULL (a quoted empty string too:
    Python's csv module does not tell them apart)."""
    reader = csv.reader(io.StringIO(data), delimiter=delimiter, quotechar='"', strict=True)
    rows: list[list[str | None]] = []
    try:
        for i, rec in enumerate(reader):
            if (i == 0 and header) or not rec:
                continue
            if rec == ["\\."]:
                break
            rows.append([v if v != "" else None for v in rec])
    except csv.Error as e:
        raise DBError(f"malformed CSV data: {e}", sqlstate="22P04") from None
    return rows


async def copy_data(chunks: AsyncIterator[bytes]) -> bytes:
    """All of a COPY FROM's data, read to the end (so the protocol stays in step) and
    refused (54000) past MAX_COPY_BYTES: one COPY loads as one transaction."""
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
    return b"".join(pieces)


_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


def binary_rows(data: bytes, columns: int) -> list[list[bytes | None]]:
    """The rows of PostgreSQL's binary COPY format, each field's bytes as sent."""
    if not data.startswith(_SIGNATURE):
        raise DBError("COPY file signature not recognized", sqlstate="22P04")
    rows: list[list[bytes | None]] = []
    try:
        _flags, ext = struct.unpack_from("!iI", data, len(_SIGNATURE))
        pos = len(_SIGNATURE) + 8 + ext
        while True:
            (count,) = struct.unpack_from("!h", data, pos)
            pos += 2
            if count == -1:
                break
            if count != columns:
                raise DBError(f"row field count is {count}, expected {columns}", sqlstate="22P04")
            row: list[bytes | None] = []
            for _ in range(count):
                (length,) = struct.unpack_from("!i", data, pos)
                pos += 4
                if length == -1:
                    row.append(None)
                    continue
                if length < 0 or pos + length > len(data):
                    raise struct.error
                row.append(data[pos : pos + length])
                pos += length
            rows.append(row)
    except struct.error:
        raise DBError("unexpected EOF in COPY data", sqlstate="22P04") from None
    return rows


class RowsLoad(CopyIn):
    def __init__(self, session: Session, stmt: ast.CopyFrom, engine: RowCollection):
        self.session = session
        self.stmt = stmt
        fields = list(engine.fields())
        fields += [f for f in getattr(engine, "typed_fields", {}) if f not in fields]
        key = engine.key_field
        if engine.table is not None:  # a table's columns in their order
            names = stmt.columns or fields
        else:
            names = stmt.columns or [key] + [f for f in fields if f != key]
        if stmt.columns is None and len(names) == 1 and not fields:
            raise SyntaxError_(
                f'"{stmt.collection}" has no fields yet: name the columns, COPY {stmt.collection} '
                "(id, ...) FROM STDIN"
            )
        self.names = names
        self.columns = len(names)
        self.binary = stmt.format == "binary"

    async def run(self, chunks: AsyncIterator[bytes]) -> Result:
        data = await copy_data(chunks)
        s, stmt = self.session, self.stmt
        engine = s.any_collection(stmt.collection)
        if not isinstance(engine, RowCollection):
            raise ObjectInUse(f'collection "{stmt.collection}" was replaced during the COPY')
        rows: list[list[Any]]
        decode: Callable[[int, Any], Any]
        if self.binary:
            # decoded in the types SELECT describes, which is what the client encoded to
            rows = list(binary_rows(data, self.columns))
            oids = [typed_target(engine, n) or field_oid(engine, n) for n in self.names]
            decode = t.decode_binary
        else:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise DBError("invalid byte sequence for encoding UTF8", sqlstate="22021") from None
            if stmt.format == "csv":
                rows = list(csv_rows(text, stmt.delimiter or ",", stmt.header))
            else:
                rows = list(text_rows(text, stmt.delimiter or "\t"))
            oids = [typed_target(engine, n) or compared_oid(engine, n) for n in self.names]
            decode = t.decode_text
        now = now_ms()
        ctx = Ctx(params=[], session=s)
        intents: list[Intent] = []
        seen: set[Any] = set()
        for line, values in enumerate(rows, 1):
            if len(values) != len(self.names):
                raise DBError(
                    f"COPY {stmt.collection}, line {line}: {len(values)} values for "
                    f"{len(self.names)} columns",
                    sqlstate="22P04",
                )
            fields: list[tuple[str, Expr]] = [
                (n, Const(None if v is None else decode(oid, v)))
                for n, v, oid in zip(self.names, values, oids, strict=True)
            ]
            row, expires = new_row(engine, fields, ctx, False, now)
            key = row[engine.key_field]
            if key in seen or read_row(s, stmt.collection, engine, key, now) is not None:
                raise duplicate_key(stmt.collection, engine.key_field, key, f" (COPY line {line})")
            seen.add(key)
            intents.append(("insert", key, row, expires))
        if intents:
            await commit_or_buffer(s, stmt.collection, intents)
        return Result(None, [], f"COPY {len(intents)}")
