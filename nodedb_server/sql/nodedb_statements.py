"""A small parser for NodeDB's own statements, which no SQL grammar knows:
CREATE COLLECTION .. TYPE KEY_VALUE (..), object-literal INSERT/UPSERT, tenants,
users, grants, SHOW/DESCRIBE, and the session statements (SET, BEGIN, ...).

Each statement is one function, found by its first keyword (or two) in the table
``STATEMENTS`` at the end; adding a statement is adding a function and its entry.
Standard SELECT/INSERT/UPDATE/DELETE go to sqlglot (sql/parse.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlglot
import sqlglot.errors
from sqlglot import exp

from nodedb_server import types as t
from nodedb_server.engines.timeseries import parse_partition
from nodedb_server.engines.vector import HNSW_OPTIONS
from nodedb_server.errors import FeatureNotSupported, SyntaxError_
from nodedb_server.sql import ast, table_ddl
from nodedb_server.sql.expr import (
    Agg,
    ArrayExpr,
    Cast,
    Const,
    Expr,
    Field,
    Func,
    Neg,
    ObjectExpr,
    Param,
    Star,
    from_sqlglot,
)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|--[^\n]*|/\*.*?\*/)
  | (?P<string>(?:[eE])?'(?:[^']|'')*')
  | (?P<qident>"(?:[^"]|"")*")
  | (?P<param>\$\d+)
  | (?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<op>::|<=|>=|<>|!=|[{}\[\](),:;=.*+\-<>/%])
  | (?P<other>\S)  # no NodeDB statement uses it (||, ~, ...): standard SQL, or an error
    """,
    re.X | re.S,
)


@dataclass(frozen=True)
class Tok:
    kind: str  # ident | qident | string | number | param | op | other
    text: str  # identifiers folded to lower case; strings unquoted
    pos: int

    def is_kw(self, *words: str) -> bool:
        return self.kind == "ident" and self.text in words


def tokenize(sql: str) -> Iterator[Tok]:
    """The tokens of ``sql``, read as they are asked for: most statements are told apart
    from NodeDB's own by their first few tokens, and a 20,000-row INSERT need not be
    read twice to find that out (about a fifth of its parse time)."""
    pos = 0
    while pos < len(sql):
        mt = _TOKEN.match(sql, pos)
        if mt is None:
            raise SyntaxError_(f"syntax error at or near {sql[pos : pos + 10]!r}")
        kind = mt.lastgroup or "ws"
        raw = mt.group()
        if kind != "ws":
            if kind == "string":
                text = raw[raw.index("'") + 1 : -1].replace("''", "'")
            elif kind == "qident":
                text = raw[1:-1].replace('""', '"')
            elif kind == "ident":
                text = raw.lower()
            else:
                text = raw
            yield Tok(kind, text, pos)
        pos = mt.end()


def param_ends(sql: str) -> Iterator[int]:
    """Where each ``$n`` parameter of ``sql`` ends, outside strings, quoted names and
    comments: the tokenizer's rules, without building its tokens."""
    return (mt.end() for mt in _TOKEN.finditer(sql) if mt.lastgroup == "param")


def split_statements(sql: str) -> list[str]:
    """Split on semicolons outside strings, quoted names and comments."""
    if ";" not in sql:  # nearly every statement a driver sends: not read here at all
        return [sql] if sql.strip() else []
    parts, start = [], 0
    pos = 0
    while pos < len(sql):
        mt = _TOKEN.match(sql, pos)
        if mt is None:
            pos += 1
            continue
        if mt.group() == ";":
            parts.append(sql[start:pos])
            start = mt.end()
        pos = mt.end()
    parts.append(sql[start:])
    return [p for p in parts if p.strip()]


class Parser:
    def __init__(self, sql: str):
        self.sql = sql
        self.toks: list[Tok] = []  # those read so far
        self._unread = tokenize(sql)
        self.i = 0

    # ---- token helpers ------------------------------------------------------------------

    def peek(self, k: int = 0) -> Tok | None:
        j = self.i + k
        while j >= len(self.toks):
            tok = next(self._unread, None)
            if tok is None:
                return None
            self.toks.append(tok)
        return self.toks[j]

    def skip_rest(self) -> None:
        """Past the last token: what is left was read by another parser."""
        self._unread = iter(())
        self.i = len(self.toks)

    def error(self, what: str = "") -> SyntaxError_:
        tok = self.peek()
        near = f' at or near "{tok.text}"' if tok else " at end of input"
        return SyntaxError_(f"syntax error{near}{': ' + what if what else ''}")

    def take(self) -> Tok:
        tok = self.peek()
        if tok is None:
            raise self.error()
        self.i += 1
        return tok

    def accept(self, *words: str) -> bool:
        tok = self.peek()
        if tok is not None and (tok.is_kw(*words) or (tok.kind == "op" and tok.text in words)):
            self.i += 1
            return True
        return False

    def expect(self, *words: str) -> None:
        if not self.accept(*words):
            raise self.error(f"expected {' or '.join(w.upper() for w in words)}")

    def name(self) -> str:
        tok = self.take()
        if tok.kind not in ("ident", "qident"):
            raise SyntaxError_(f'syntax error at or near "{tok.text}": expected a name')
        return tok.text

    def string(self) -> str:
        tok = self.take()
        if tok.kind != "string":
            raise SyntaxError_(f'syntax error at or near "{tok.text}": expected a quoted string')
        return tok.text

    def if_not_exists(self) -> bool:
        """IF NOT EXISTS, if it comes next."""
        if not self.accept("if"):
            return False
        self.expect("not")
        self.expect("exists")
        return True

    def if_exists(self) -> bool:
        """IF EXISTS, if it comes next."""
        if not self.accept("if"):
            return False
        self.expect("exists")
        return True

    def end(self) -> None:
        if self.peek() is not None:
            raise self.error()

    def rest(self) -> str:
        tok = self.peek()
        return "" if tok is None else self.sql[tok.pos :]

    # ---- literals ------------------------------------------------------------------------

    def value(self) -> Expr:
        v = self._plain_value()
        while self.accept("::"):
            v = Cast(v, self._type_name())
        return v

    def _type_name(self) -> int:
        name = self.name()
        if name == "double" and self.accept("precision"):
            name = "double precision"
        oid = t.CAST_NAMES.get(name)
        if oid is None:
            raise SyntaxError_(f'type "{name}" does not exist', sqlstate="42704")
        if self.accept("["):
            self.expect("]")
            arrays = {elem: arr for arr, elem in t.ARRAY_ELEMENT.items()}
            if oid not in arrays:
                raise SyntaxError_(f'type "{name}[]" is not supported', sqlstate="42704")
            oid = arrays[oid]
        return oid

    def _plain_value(self) -> Expr:
        tok = self.take()
        if tok.kind == "string":
            return Const(tok.text)
        if tok.kind == "number":
            return Const(int(tok.text) if re.fullmatch(r"\d+", tok.text) else float(tok.text))
        if tok.kind == "param":
            return Param(int(tok.text[1:]) - 1)
        if tok.kind == "op" and tok.text == "-":
            inner = self.value()
            if isinstance(inner, Const) and isinstance(inner.value, int | float):
                return Const(-inner.value)
            return Neg(inner)
        if tok.kind == "op" and tok.text == "{":
            return self._object()
        if tok.kind == "op" and tok.text == "[":
            return self._array()
        if tok.is_kw("true", "false"):
            return Const(tok.text == "true")
        if tok.is_kw("null"):
            return Const(None)
        if tok.is_kw("array") and self.accept("["):
            return self._array()
        raise SyntaxError_(f'syntax error at or near "{tok.text}": expected a value')

    def _object(self) -> ObjectExpr:
        fields: list[tuple[str, Expr]] = []
        if self.accept("}"):
            return ObjectExpr(fields)
        while True:
            tok = self.take()
            if tok.kind not in ("ident", "qident", "string"):
                raise SyntaxError_(f'syntax error at or near "{tok.text}": expected a field name')
            self.expect(":")
            fields.append((tok.text, self.value()))
            if self.accept("}"):
                return ObjectExpr(fields)
            self.expect(",")

    def _array(self) -> ArrayExpr:
        items: list[Expr] = []
        if self.accept("]"):
            return ArrayExpr(items)
        while True:
            items.append(self.value())
            if self.accept("]"):
                return ArrayExpr(items)
            self.expect(",")


# ---- statements ------------------------------------------------------------------------------

_KV_TYPES = {
    "text": "text",
    "varchar": "text",
    "string": "text",
    "int": "int8",
    "int8": "int8",
    "bigint": "int8",
    "integer": "int8",
    "int4": "int8",
    "float": "float8",
    "float8": "float8",
    "double": "float8",
    "real": "float8",
    "bool": "bool",
    "boolean": "bool",
    "bytea": "bytea",
    "bytes": "bytea",
    "timestamp": "timestamp",
    "timestamptz": "timestamp",
    "json": "jsonb",
    "jsonb": "jsonb",
}


def _create_collection(p: Parser) -> ast.CreateCollection:
    if_not_exists = p.if_not_exists()
    name = p.name()
    engine, typed = "document", {}
    options: dict[str, Any] = {}
    if p.accept("type"):
        kind = p.name()
        if kind in ("key_value", "kv"):
            engine = "kv"
            typed = _kv_schema(p)
        elif kind == "columnar":
            engine = "timeseries"
            typed, time_key = _columnar_schema(p)
            with_opts = _with_options(p)
            if with_opts.get("profile", "timeseries") != "timeseries":
                raise SyntaxError_("only profile = 'timeseries' is supported for COLUMNAR")
            options = _timeseries_options(time_key, with_opts, dynamic=False)
        elif kind != "document":
            raise SyntaxError_(f"collection type {kind.upper()} is not supported")
    return ast.CreateCollection(name, engine, typed, if_not_exists, options)


def _create_timeseries(p: Parser) -> ast.CreateCollection:
    name = p.name()
    with_opts = _with_options(p)
    p.end()  # text left over is reported before the options are judged
    options = _timeseries_options("ts", with_opts, dynamic=True)
    return ast.CreateCollection(name, "timeseries", {"ts": "timestamp"}, False, options)


def _create_tenant(p: Parser) -> ast.CreateTenant:
    return ast.CreateTenant(p.name())


def _create_user(p: Parser) -> ast.CreateUser:
    name = p.name()
    p.accept("with")
    p.expect("password")
    password = p.string()
    tenant = p.name() if p.accept("tenant") else None
    return ast.CreateUser(name, password, tenant)


def _create_index(p: Parser) -> ast.CreateIndex:
    if_not_exists = p.if_not_exists()
    index_name: str | None = None
    if not p.accept("on"):
        index_name = p.name()
        p.expect("on")
    p.accept("only")
    collection = table_ddl.table_name(p)
    if p.accept("using"):  # PostgreSQL's form: ON t [USING btree] (field [ASC | DESC])
        method = p.name()
        if method not in ("btree", "hash"):
            raise FeatureNotSupported(f"index method {method} is not supported")
    if p.accept("("):
        field = p.name()
        p.accept("asc") or p.accept("desc")
        closed = p.accept(")")
    else:
        p.expect("fields", "field")
        field = p.name()
        closed = True
    if not closed or p.accept(","):
        raise SyntaxError_(
            "an index covers one field; create one index per field", sqlstate="0A000"
        )
    return ast.CreateIndex(index_name, collection, field, if_not_exists)


def _create_vector_index(p: Parser) -> ast.CreateVectorIndex:
    p.expect("index")
    name = p.name()
    p.expect("on")
    collection = p.name()
    vfield = p.name() if p.accept("field") else None
    p.expect("metric")
    metric = p.name()
    if metric not in ("cosine", "l2", "ip"):
        raise SyntaxError_(f"METRIC {metric} is not known; use cosine, l2 or ip")
    p.expect("dim")
    tok = p.take()
    if tok.kind != "number" or not tok.text.isdigit() or not 0 < int(tok.text) <= 65536:
        raise SyntaxError_("DIM takes a whole number from 1 to 65536")
    hnsw: dict[str, int] = {}
    for key, value in _with_options(p).items():
        if key not in HNSW_OPTIONS or not value.isdigit() or not 0 < int(value) <= 4096:
            raise SyntaxError_(
                f"vector index option {key} = {value} is not one of "
                "m, ef_construction, ef_search (1-4096)"
            )
        hnsw[key] = int(value)
    return ast.CreateVectorIndex(name, collection, vfield, metric, int(tok.text), hnsw)


_COLUMN_KINDS = {
    "timestamp": "timestamp",
    "timestamptz": "timestamp",
    "varchar": "text",
    "text": "text",
    "string": "text",
    "float": "float",
    "double": "float",
    "float8": "float",
    "real": "float",
    "int": "int",
    "integer": "int",
    "bigint": "int",
    "int8": "int",
    "bool": "bool",
    "boolean": "bool",
}


def _column_list(
    p: Parser, types: dict[str, str], what: str, marks: tuple[str, ...]
) -> list[tuple[str, str, str | None]]:
    """``(name type [MARK], ...)``: each column's name, mapped type and mark (or None);
    a mark of two words (PRIMARY KEY) is given by its first."""
    p.expect("(")
    out: list[tuple[str, str, str | None]] = []
    while True:
        col = p.name()
        tname = p.name()
        kind = types.get(tname)
        if kind is None:
            raise SyntaxError_(f"type {tname} is not supported for a {what} field")
        mark = next((m for m in marks if p.accept(m)), None)
        if mark == "primary":
            p.expect("key")
        out.append((col, kind, mark))
        if p.accept(")"):
            return out
        p.expect(",")


def _columnar_schema(p: Parser) -> tuple[dict[str, str], str]:
    """``(ts TIMESTAMP TIME_KEY, host VARCHAR, load FLOAT)``: columns and the time key."""
    columns = _column_list(p, _COLUMN_KINDS, "columnar", ("time_key",))
    keys = [col for col, kind, mark in columns if mark]
    if len(keys) != 1 or dict((c, k) for c, k, _ in columns)[keys[0]] != "timestamp":
        raise SyntaxError_(
            "a COLUMNAR collection needs exactly one TIMESTAMP column marked TIME_KEY"
        )
    return {col: kind for col, kind, _ in columns}, keys[0]


def _with_options(p: Parser) -> dict[str, str]:
    """``WITH name = 'value', ...`` (parentheses optional)."""
    opts: dict[str, str] = {}
    if not p.accept("with"):
        return opts
    wrapped = p.accept("(")
    while True:
        key = p.name()
        p.expect("=")
        tok = p.take()
        opts[key] = tok.text
        if not p.accept(","):
            break
    if wrapped:
        p.expect(")")
    return opts


def _timeseries_options(time_key: str, opts: dict[str, str], dynamic: bool) -> dict[str, Any]:
    unknown = set(opts) - {"profile", "partition_by"}
    if unknown:
        raise SyntaxError_(f"unknown option {sorted(unknown)[0]}")
    try:
        partition = parse_partition(opts.get("partition_by", "1h"))
    except ValueError as e:
        raise SyntaxError_(str(e)) from None
    return {"time_key": time_key, "partition_us": partition, "dynamic": dynamic}


def _flags(p: Parser, allowed: tuple[str, ...]) -> set[str]:
    """``WITH (a, b)`` naming options that are on when present."""
    found: set[str] = set()
    if not p.accept("with"):
        return found
    p.expect("(")
    while True:
        word = p.name()
        if word not in allowed:
            raise SyntaxError_(
                f"option {word.upper()} is not known here; "
                f"use {', '.join(a.upper() for a in allowed)}"
            )
        found.add(word)
        if p.accept(")"):
            return found
        p.expect(",")


def _backup_tenant(p: Parser) -> ast.BackupTenant:
    tenant = p.name()
    p.expect("to")
    path = p.string()
    overwrite = "overwrite" in _flags(p, ("overwrite",))
    return ast.BackupTenant(tenant, path, overwrite)


def _restore_tenant(p: Parser) -> ast.RestoreTenant:
    tenant = p.name()
    p.expect("from")
    if p.accept("snapshot"):
        stmt = _restore_options(p, tenant, None)
        if not stmt.until:
            raise p.error("expected UNTIL: FROM SNAPSHOT restores to a point in time")
        if stmt.rename or stmt.resurrect:
            raise SyntaxError_(
                "FROM SNAPSHOT restores the tenant's own snapshots as history had it: "
                "WITH (rename) and WITH (resurrect) do not apply"
            )
        return dataclasses.replace(stmt, snapshot=True)
    return _restore_options(p, tenant, p.string())


def _restore_options(p: Parser, tenant: str, path: str | None) -> ast.RestoreTenant:
    """What follows the source of RESTORE TENANT and COPY tenant_restore(..) FROM STDIN."""
    until_lsn = until_us = None
    if p.accept("until"):
        if p.accept("lsn"):
            tok = p.take()
            if tok.kind != "number" or not tok.text.isdigit():
                raise SyntaxError_(f'syntax error at or near "{tok.text}": expected an LSN')
            until_lsn = int(tok.text)
        else:
            p.expect("timestamp")
            at = t.parse_timestamp(p.string())  # a literal without a zone is UTC
            until_us = (at - _EPOCH) // dt.timedelta(microseconds=1)
    dry_run = p.accept("dry")
    if dry_run:
        p.expect("run")
    flags = _flags(p, ("rename", "resurrect"))
    return ast.RestoreTenant(
        tenant,
        path,
        dry_run,
        "rename" in flags,
        "resurrect" in flags,
        until_lsn=until_lsn,
        until_us=until_us,
    )


def _show_restore_range(p: Parser) -> ast.ShowRestoreRange:
    p.expect("range")
    p.expect("for")
    p.expect("tenant")
    return ast.ShowRestoreRange(p.name())


def _copy(p: Parser) -> ast.Statement:
    if p.accept("("):
        if p.accept("backup"):  # COPY (BACKUP TENANT t) TO STDOUT
            p.expect("tenant")
            tenant = p.name()
            p.expect(")")
            p.expect("to")
            if not p.accept("stdout"):
                raise SyntaxError_("COPY (BACKUP TENANT ..) writes TO STDOUT", sqlstate="0A000")
            return ast.BackupTenant(tenant, None)
        query = _copy_query(p)  # COPY (SELECT ..) TO STDOUT
        p.expect("to")
        return _copy_to(p, query)
    name = p.name()
    if name == "tenant_restore" and p.accept("("):  # COPY tenant_restore(t) FROM STDIN [DRY RUN]
        tenant = p.name()
        p.expect(")")
        p.expect("from")
        p.expect("stdin")
        return _restore_options(p, tenant, None)
    columns = None
    if p.accept("("):
        columns = [p.name()]
        while p.accept(","):
            columns.append(p.name())
        p.expect(")")
    if p.accept("to"):
        listed = ", ".join(_quoted(c) for c in columns) if columns else "*"
        return _copy_to(p, f"SELECT {listed} FROM {_quoted(name)}")
    p.expect("from", "to")
    if not p.accept("stdin"):
        raise SyntaxError_(
            "COPY reads FROM STDIN; server-side files are not read", sqlstate="0A000"
        )
    opts = _copy_options(p)
    for refused in ("null", "quote"):
        if refused in opts:
            raise SyntaxError_(f"COPY FROM option {refused.upper()} is not supported")
    fmt, header = str(opts.get("format", "text")), bool(opts.get("header"))
    if fmt not in ("csv", "text", "binary"):
        raise SyntaxError_(f'COPY format "{fmt}" not recognized', sqlstate="22023")
    given = opts.get("delimiter")
    delimiter = None if given is None else str(given)
    if delimiter is not None and len(delimiter) != 1:
        raise SyntaxError_("COPY delimiter must be a single one-byte character", sqlstate="22023")
    return ast.CopyFrom(name, columns, fmt, header, delimiter)


def _declare(p: Parser) -> ast.DeclareCursor:
    """DECLARE name [ASENSITIVE | INSENSITIVE] [[NO] SCROLL] CURSOR [WITH | WITHOUT HOLD]
    FOR select: the rows are read at DECLARE (an insensitive cursor, as PostgreSQL's
    are), and FETCH moves forward through them."""
    from nodedb_server.sql.parse import parse_one

    name = p.name()
    if p.accept("binary"):
        raise SyntaxError_("binary cursors are not supported", sqlstate="0A000")
    p.accept("asensitive", "insensitive")
    if p.accept("no"):
        p.expect("scroll")
    elif p.accept("scroll"):
        raise SyntaxError_("SCROLL cursors are not supported; FETCH moves forward", "0A000")
    p.expect("cursor")
    hold = False
    if p.accept("with"):
        p.expect("hold")
        hold = True
    elif p.accept("without"):
        p.expect("hold")
    p.expect("for")
    text = p.rest()
    p.skip_rest()
    select = parse_one(text)
    if not isinstance(select, ast.Select):
        raise SyntaxError_("DECLARE .. CURSOR FOR takes a SELECT", sqlstate="0A000")
    return ast.DeclareCursor(name, select, hold)


def _fetch(p: Parser, move: bool = False) -> ast.FetchCursor:
    count: int | None = 1
    tok = p.peek()
    if tok is not None and tok.is_kw("prior", "first", "last", "absolute", "relative", "backward"):
        raise SyntaxError_(
            f"FETCH {tok.text.upper()} needs a SCROLL cursor, which is not supported", "0A000"
        )
    if p.accept("next"):
        count = 1
    elif p.accept("forward"):
        if p.accept("all"):
            count = None
        elif p.peek() is not None and p.peek().kind == "number":  # type: ignore[union-attr]
            count = _count(p, "a row count")
    elif p.accept("all"):
        count = None
    elif tok is not None and tok.kind == "number":
        count = _count(p, "a row count")
    p.accept("from", "in")
    return ast.FetchCursor(p.name(), count, move)


def _move(p: Parser) -> ast.FetchCursor:
    return _fetch(p, move=True)


def _close(p: Parser) -> ast.CloseCursor:
    if p.accept("all"):
        return ast.CloseCursor(None)
    return ast.CloseCursor(p.name())


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _copy_query(p: Parser) -> str:
    """The text of ``COPY ( query ) TO``'s query, the opening parenthesis taken."""
    first = p.peek()
    if first is None:
        raise p.error("expected a query")
    depth = 1
    while True:
        if p.peek() is None:
            raise p.error("expected )")
        tok = p.take()
        if tok.text == "(":
            depth += 1
        elif tok.text == ")":
            depth -= 1
            if depth == 0:
                return p.sql[first.pos : tok.pos]


def _copy_to(p: Parser, query: str) -> ast.CopyTo:
    """The rest of COPY .. TO: ``STDOUT [[WITH] (options) | legacy options]``. The query
    (``SELECT * FROM c``, or the one in parentheses) is sqlglot's."""
    from nodedb_server.sql.parse import parse_one

    if not p.accept("stdout"):
        raise SyntaxError_(
            "COPY writes TO STDOUT; server-side files are not written (psql's \\copy "
            "writes a file on the client)",
            sqlstate="0A000",
        )
    opts = _copy_options(p)
    fmt = str(opts.get("format", "text"))
    if fmt == "binary" and any(k in opts for k in ("header", "delimiter", "null", "quote")):
        raise SyntaxError_(
            "COPY binary takes no HEADER, DELIMITER, NULL or QUOTE", sqlstate="42601"
        )
    if fmt not in ("csv", "text", "binary"):
        raise SyntaxError_(f'COPY format "{fmt}" not recognized', sqlstate="22023")
    if fmt == "text" and "quote" in opts:
        raise SyntaxError_("COPY quote available only in CSV mode", sqlstate="0A000")
    delimiter = str(opts.get("delimiter", "," if fmt == "csv" else "\t"))
    null = str(opts.get("null", "" if fmt == "csv" else "\\N"))
    quote = str(opts.get("quote", '"'))
    if len(delimiter) != 1:
        raise SyntaxError_("COPY delimiter must be a single one-byte character", sqlstate="22023")
    if len(quote) != 1:
        raise SyntaxError_("COPY quote must be a single one-byte character", sqlstate="22023")
    if delimiter in ("\r", "\n") or (fmt == "csv" and delimiter == quote):
        raise SyntaxError_("COPY delimiter cannot be a newline or the quote", sqlstate="22023")
    select = parse_one(query)
    if not isinstance(select, ast.Select):
        raise SyntaxError_("COPY (query) TO takes a SELECT", sqlstate="0A000")
    return ast.CopyTo(select, fmt, bool(opts.get("header")), delimiter, null, quote)


def _copy_options(p: Parser) -> dict[str, str | bool]:
    """COPY's options, ``[WITH] (FORMAT csv, HEADER, DELIMITER ',', NULL '', QUOTE '"')``
    or the pre-9.0 words (``CSV HEADER DELIMITER AS ','``) that psql's \\copy and some
    clients send."""
    opts: dict[str, str | bool] = {}
    p.accept("with")
    if p.accept("("):
        while True:
            opt = p.name()
            if opt == "format":
                opts["format"] = p.take().text.lower()  # FORMAT csv or 'csv' (asyncpg quotes)
            elif opt == "header":
                opts["header"] = not p.accept("false", "off", "0")
                p.accept("true", "on", "1")
            elif opt in ("delimiter", "null", "quote"):
                opts[opt] = p.string()
            else:
                raise SyntaxError_(f"COPY option {opt.upper()} is not supported")
            if p.accept(")"):
                break
            p.expect(",")
        return opts
    while p.peek() is not None:
        if p.accept("csv"):
            opts["format"] = "csv"
        elif p.accept("binary"):
            opts["format"] = "binary"
        elif p.accept("header"):
            opts["header"] = True
        else:
            word = next((w for w in ("delimiter", "null", "quote") if p.accept(w)), None)
            if word is None:
                raise p.error()
            p.accept("as")
            opts[word] = p.string()
    return opts


def _kv_schema(p: Parser) -> dict[str, str]:
    """``(key TEXT PRIMARY KEY, hits INT8, ...)``: the typed value fields."""
    if p.peek() is None or p.peek().text != "(":  # type: ignore[union-attr]
        return {}
    columns = _column_list(p, _KV_TYPES, "key-value", ("primary",))
    if [col for col, _, mark in columns if mark] != ["key"]:
        raise SyntaxError_("a KEY_VALUE collection needs (key TEXT PRIMARY KEY), and only that key")
    return {col: kind for col, kind, _ in columns if col != "key"}


def _drop_collection(p: Parser) -> ast.DropCollection:
    if_exists = p.if_exists()
    name = p.name()
    return ast.DropCollection(name, p.accept("purge"), if_exists)


def _drop_tenant(p: Parser) -> ast.DropTenant:
    return ast.DropTenant(p.name())


def _drop_user(p: Parser) -> ast.DropUser:
    return ast.DropUser(p.name())


def _drop_index(p: Parser) -> ast.DropIndex:
    if_exists = p.if_exists()
    return ast.DropIndex(p.name(), if_exists)


def _undrop_collection(p: Parser) -> ast.UndropCollection:
    return ast.UndropCollection(p.name())


def _purge_tenant(p: Parser) -> ast.PurgeTenant:
    name = p.name()
    if not p.accept("confirm"):
        raise SyntaxError_("PURGE TENANT erases every byte of the tenant: add CONFIRM")
    return ast.PurgeTenant(name)


def _grant(p: Parser) -> ast.Grant:
    privilege = p.name()
    p.expect("on")
    p.expect("tenant")
    tenant = p.name()
    p.expect("to")
    user = p.name()
    p.end()  # text left over is reported before the privilege is judged
    if privilege != "backup":
        raise SyntaxError_(f"privilege {privilege.upper()} is not known; try BACKUP")
    return ast.Grant(privilege, tenant, user)


def _object_insert(p: Parser, upsert: bool) -> ast.Insert | None:
    """``INSERT INTO c { .. }`` or ``[ {..}, .. ]``, with an optional ON CONFLICT; None for
    any other INSERT, which is standard SQL."""
    if not p.accept("into"):
        return None
    literal = p.peek(1)  # after the collection's name
    if literal is None or literal.kind != "op" or literal.text not in ("{", "["):
        return None
    name = p.name()
    value = p.value()
    objects = value.items if isinstance(value, ArrayExpr) else [value]
    rows = []
    for obj in objects:
        if not isinstance(obj, ObjectExpr):
            raise SyntaxError_("INSERT expects an object literal { field: value, ... }")
        rows.append(list(obj.fields))
    conflict = None
    if p.accept("on"):
        conflict = conflict_from_tail(p)
    returning: list[ast.SelectItem] = []
    if p.accept("returning"):
        returning = parse_returning(p.rest())
        p.skip_rest()
    return ast.Insert(name, rows, conflict, upsert, object_form=True, returning=returning)


def _insert(p: Parser) -> ast.Insert | None:
    return _object_insert(p, upsert=False)


def _upsert(p: Parser) -> ast.Insert | None:
    return _object_insert(p, upsert=True)


def conflict_from_tail(p: Parser) -> ast.OnConflict:
    """``ON CONFLICT [(key)] DO NOTHING | DO UPDATE SET ..`` after ON was read; a
    RETURNING after it is left for the caller."""
    p.expect("conflict")
    if p.accept("("):
        while not p.accept(")"):
            p.take()
    p.expect("do")
    if p.accept("nothing"):
        return ast.OnConflict("nothing")
    p.expect("update")
    p.expect("set")
    start = p.peek()
    while p.peek() is not None and not p.peek().is_kw("returning"):  # type: ignore[union-attr]
        p.take()
    end = p.peek()
    text = p.sql[start.pos if start else len(p.sql) : end.pos if end else len(p.sql)]
    return ast.OnConflict("update", parse_assignments(text))


def parse_returning(text: str) -> list[ast.SelectItem]:
    """The output list after RETURNING, read by sqlglot as a select list."""
    try:
        tree = sqlglot.parse_one(f"DELETE FROM _t RETURNING {text}", read="postgres")
    except sqlglot.errors.ParseError as e:
        raise syntax_error(e, "in RETURNING list") from None
    if set(k for k, v in tree.args.items() if v) != {"this", "returning"}:
        raise SyntaxError_("syntax error: RETURNING takes a list of output expressions")
    return returning_items(tree)


def returning_items(tree: exp.Expr) -> list[ast.SelectItem]:
    """The RETURNING list of a parsed INSERT, UPDATE or DELETE (empty if it has none)."""
    node = tree.args.get("returning")
    if node is None:
        return []
    if node.args.get("into"):
        raise FeatureNotSupported("RETURNING .. INTO is not supported")
    items = []
    for item in node.expressions:
        refuse_star_alias(item)
        expr = from_sqlglot(item.this if isinstance(item, exp.Alias) else item)
        if any(isinstance(n, Agg) for n in expr.walk()):
            raise SyntaxError_("aggregate functions are not allowed in RETURNING", sqlstate="42803")
        items.append(ast.SelectItem(expr, "*" if isinstance(expr, Star) else item_name(item, expr)))
    return items


def item_name(node: exp.Expression, expr: Expr) -> str:
    """An output column's name, as PostgreSQL gives it."""
    if isinstance(node, exp.Alias):
        return node.alias
    if isinstance(expr, Field):
        return expr.name
    if isinstance(expr, Agg):
        return expr.name
    if isinstance(node, exp.Cast) and isinstance(node.this, exp.Column):
        return node.this.name
    if isinstance(expr, Func):
        return expr.name
    return "?column?"


def parse_assignments(text: str) -> list[tuple[str, Expr]]:
    """The ``a = expr, b = expr`` list of an UPDATE SET, read by sqlglot."""
    try:
        tree = sqlglot.parse_one(f"UPDATE _t SET {text}", read="postgres")
    except sqlglot.errors.ParseError as e:
        raise syntax_error(e) from None
    unread(tree, ("this", "expressions"))
    return assignments(tree.expressions)


def syntax_error(e: sqlglot.errors.ParseError, where: str = "") -> SyntaxError_:
    """Text left after a complete statement in PostgreSQL's wording, naming its first
    token; any other error as sqlglot describes it, ``where`` it was found."""
    first = e.errors[0] if e.errors else {}
    if str(first.get("description", "")).startswith("Invalid expression / Unexpected token"):
        return SyntaxError_(f'syntax error at or near "{first["highlight"]}"')
    return SyntaxError_(f"syntax error{' ' + where if where else ''}: {_first_line(e)}")


def refuse_star_alias(item: exp.Expr) -> None:
    """sqlglot reads ``* word`` as a star named word; PostgreSQL takes the word for
    text after the list."""
    if isinstance(item, exp.Alias) and isinstance(item.this, exp.Star):
        raise SyntaxError_(f'syntax error at or near "{item.alias}"')


def unread(tree: exp.Expr, read: tuple[str, ...]) -> None:
    """Refuse a clause sqlglot parsed but we would not act on, so that a statement is
    never run as the shorter one it starts with (SELECT .. INTO, DELETE .. USING)."""
    for key, value in tree.args.items():
        if value and key not in read:
            raise FeatureNotSupported(f"{key.upper()} is not supported in this statement")


def assignments(items: list[exp.Expression]) -> list[tuple[str, Expr]]:
    out = []
    for item in items:
        if not isinstance(item, exp.EQ) or not isinstance(item.this, exp.Column):
            raise SyntaxError_("SET expects field = expression")
        out.append((item.this.name, from_sqlglot(item.expression)))
    return out


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0][:200]


def _collection_string(p: Parser) -> str:
    tok = p.take()
    if tok.kind not in ("string", "ident", "qident"):
        raise SyntaxError_(f'syntax error at or near "{tok.text}": expected a collection name')
    return tok.text


def _graph_options(p: Parser, allowed: tuple[str, ...]) -> dict[str, Any]:
    """Trailing ``LABEL x``, ``DIRECTION d``, ``DEPTH n`` ... clauses, in any order."""
    opts: dict[str, Any] = {}
    while p.peek() is not None:
        word = p.name()
        if word not in allowed or word in opts:
            raise SyntaxError_(f'syntax error at or near "{word.upper()}"')
        if word == "direction":
            d = p.name()
            if d not in ("out", "in", "both"):
                raise SyntaxError_("DIRECTION is out, in or both")
            opts[word] = d
        elif word == "in":
            opts[word] = _collection_string(p)
        else:
            opts[word] = p.value()
    return opts


def _graph_edge(p: Parser, delete: bool) -> ast.GraphEdgeWrite:
    p.expect("edge")
    p.expect("in")
    coll = _collection_string(p)
    p.expect("from")
    src = p.value()
    p.expect("to")
    dst = p.value()
    p.expect("type", "label")
    label = p.value()
    props = p.value() if not delete and p.accept("properties") else None
    return ast.GraphEdgeWrite(delete, coll, src, dst, label, props)


def _graph_insert(p: Parser) -> ast.GraphEdgeWrite:
    return _graph_edge(p, delete=False)


def _graph_delete(p: Parser) -> ast.GraphEdgeWrite:
    return _graph_edge(p, delete=True)


def _graph_neighbors(p: Parser) -> ast.GraphQuery:
    p.expect("of")
    start = p.value()
    opts = _graph_options(p, ("in", "label", "direction"))
    return ast.GraphQuery(
        "neighbors",
        _required(opts, "in"),
        start,
        label=opts.get("label"),
        direction=opts.get("direction", "out"),
    )


def _graph_traverse(p: Parser) -> ast.GraphQuery:
    p.expect("from")
    start = p.value()
    opts = _graph_options(p, ("in", "depth", "label", "direction"))
    return ast.GraphQuery(
        "traverse",
        _required(opts, "in"),
        start,
        depth=_required(opts, "depth"),
        label=opts.get("label"),
        direction=opts.get("direction", "out"),
    )


def _graph_path(p: Parser) -> ast.GraphQuery:
    p.expect("from")
    start = p.value()
    p.expect("to")
    target = p.value()
    opts = _graph_options(p, ("in", "max_depth", "label", "direction"))
    return ast.GraphQuery(
        "path",
        _required(opts, "in"),
        start,
        target=target,
        depth=_required(opts, "max_depth"),
        label=opts.get("label"),
        direction=opts.get("direction", "out"),
    )


def _graph_algo(p: Parser) -> ast.GraphAlgo:
    algo = p.name()
    p.expect("on")
    coll = _collection_string(p)
    if algo == "pagerank":
        opts = _graph_options(p, ("damping", "iterations"))
        return ast.GraphAlgo("pagerank", coll, opts.get("damping"), opts.get("iterations"))
    if algo == "wcc":
        return ast.GraphAlgo("wcc", coll)
    raise SyntaxError_(f"graph algorithm {algo.upper()} is not known; try PAGERANK or WCC")


def _required(opts: dict[str, Any], word: str) -> Any:
    if word not in opts:
        raise SyntaxError_(f"{word.upper()} is required here")
    return opts[word]


def _show_collections(p: Parser) -> ast.ShowCollections:
    return ast.ShowCollections()


def _show_tenants(p: Parser) -> ast.ShowTenants:
    return ast.ShowTenants()


def _show(p: Parser) -> ast.Show:
    if p.accept("time"):
        p.expect("zone")
        return ast.Show("time zone")
    if p.accept("transaction"):
        p.expect("isolation")
        p.expect("level")
        return ast.Show("transaction_isolation")
    if p.accept("session"):
        p.expect("authorization")
        return ast.Show("session_authorization")
    return ast.Show(_setting_name(p))


def _describe(p: Parser) -> ast.DescribeCollection:
    return ast.DescribeCollection(p.name())


def _setting_name(p: Parser) -> str:
    """A configuration parameter's name, which may be dotted (``nodedb.x``)."""
    name = p.name()
    while p.accept("."):
        name += "." + p.name()
    return name


def _set(p: Parser) -> ast.SetVar | ast.SetTransaction:
    session = p.accept("session")
    if session and p.accept("characteristics"):
        p.expect("as")
        p.expect("transaction")
        return _set_transaction(p)
    if p.accept("transaction"):
        return _set_transaction(p)
    p.accept("local")
    # SET SESSION AUTHORIZATION x, SET ROLE x and SET TIME ZONE x take no = or TO.
    bare = session and p.accept("authorization")
    if bare:
        name = "session_authorization"
    elif p.accept("time"):
        p.expect("zone")
        name = "timezone"
        bare = True
    else:
        name = _setting_name(p)
        bare = name.lower() == "role"
    if not p.accept("=", "to") and not bare:
        raise p.error("expected = or TO")
    if p.accept("default"):
        return ast.SetVar(name, None)
    values = [_setting_value(p)]
    while p.accept(","):
        values.append(_setting_value(p))
    if name.lower() != "search_path":  # only a list of names keeps a quoted name's quotes
        values = [_unquoted(v) for v in values]
    return ast.SetVar(name, ", ".join(values))


def _unquoted(v: str) -> str:
    """``"Europe/Berlin"`` as the name it quotes (SET TIME ZONE "Europe/Berlin", pgcli)."""
    if len(v) >= 2 and v[0] == v[-1] == '"':
        return v[1:-1].replace('""', '"')
    return v


def _set_transaction(p: Parser) -> ast.SetTransaction:
    """SET [SESSION CHARACTERISTICS AS] TRANSACTION modes: accepted, as BEGIN's modes
    are; every transaction runs as read committed."""
    if p.peek() is None:
        raise p.error("expected a transaction mode")
    _transaction_modes(p)
    return ast.SetTransaction()


def _reset(p: Parser) -> ast.SetVar:
    name = _setting_name(p)
    if name == "session" and p.accept("authorization"):
        name = "session_authorization"
    return ast.SetVar(name, None)


def _setting_value(p: Parser) -> str:
    """One value of a SET list: a quoted string (unquoted here), or a word or number as
    written (a quoted name such as ``"$user"`` keeps its quotes, as search_path wants)."""
    sign = "-" if p.accept("-") else ""
    tok = p.take()
    if tok.kind == "string" and not sign:
        return tok.text
    if tok.kind not in ("ident", "qident", "number") or (sign and tok.kind != "number"):
        raise SyntaxError_(f'syntax error at or near "{tok.text}": expected a value')
    written = _TOKEN.match(p.sql, tok.pos)
    assert written is not None
    return sign + written.group()


_ISOLATION_LEVELS = (
    ("serializable",),
    ("repeatable", "read"),
    ("read", "committed"),
    ("read", "uncommitted"),
)


def _transaction_modes(p: Parser) -> None:
    """BEGIN's ``ISOLATION LEVEL ..``, ``READ WRITE | READ ONLY``, ``[NOT] DEFERRABLE``,
    comma-separated or not. Every level runs as read committed, what the engine gives
    (SQL.md, Transactions), as PostgreSQL runs READ UNCOMMITTED as READ COMMITTED."""
    while p.peek() is not None:
        if p.accept("isolation"):
            p.expect("level")
            level = next((words for words in _ISOLATION_LEVELS if p.accept(words[0])), None)
            if level is None:
                raise p.error("expected an isolation level")
            for word in level[1:]:
                p.expect(word)
        elif p.accept("read"):
            p.expect("write", "only")
        elif p.accept("not"):
            p.expect("deferrable")
        elif not p.accept("deferrable"):
            raise p.error()
        if p.accept(",") and p.peek() is None:
            raise p.error()


def _begin(p: Parser) -> ast.Begin:
    p.accept("work", "transaction")
    _transaction_modes(p)
    return ast.Begin()


def _start_transaction(p: Parser) -> ast.Begin:
    _transaction_modes(p)
    return ast.Begin()


def _transaction_end(p: Parser, noise_read: bool = False) -> None:
    """The rest of COMMIT/END/ROLLBACK/ABORT: ``[WORK | TRANSACTION] [AND [NO] CHAIN]``
    (``noise_read``: the WORK or TRANSACTION, if any, was taken already)."""
    if not noise_read:
        if p.accept("prepared"):
            raise SyntaxError_("two-phase commit is not supported", sqlstate="0A000")
        p.accept("work", "transaction")
    if p.accept("and"):
        if not p.accept("no"):
            p.expect("chain")
            raise SyntaxError_("AND CHAIN is not supported", sqlstate="0A000")
        p.expect("chain")


def _commit(p: Parser) -> ast.Commit:
    _transaction_end(p)
    return ast.Commit()


def _rollback(p: Parser) -> ast.Rollback | ast.RollbackTo:
    if p.accept("prepared"):
        raise SyntaxError_("two-phase commit is not supported", sqlstate="0A000")
    p.accept("work", "transaction")
    if p.accept("to"):
        p.accept("savepoint")
        return ast.RollbackTo(p.name())
    _transaction_end(p, noise_read=True)
    return ast.Rollback()


def _abort(p: Parser) -> ast.Rollback:
    _transaction_end(p)
    return ast.Rollback()


def _savepoint(p: Parser) -> ast.Savepoint:
    return ast.Savepoint(p.name())


def _release(p: Parser) -> ast.ReleaseSavepoint:
    p.accept("savepoint")
    return ast.ReleaseSavepoint(p.name())


def _alter_system(p: Parser) -> ast.AlterSystem:
    p.expect("set")
    name = p.name()
    if not p.accept("=", "to"):
        raise p.error("expected = or TO")
    return ast.AlterSystem(name, p.take().text)


def _search(p: Parser) -> ast.VectorSearch:
    collection = p.name()
    p.expect("using")
    p.expect("vector")
    p.expect("(")
    field = p.name()
    p.expect(",")
    query = p.value()
    p.expect(",")
    k = p.value()
    p.expect(")")
    return ast.VectorSearch(collection, field, query, k)


def _create_change_stream(p: Parser) -> ast.CreateChangeStream:
    p.expect("stream")
    if_not_exists = p.if_not_exists()
    name = p.name()
    p.expect("on")
    collection = p.name()
    opts = _with_options(p)
    unknown = set(opts) - {"compaction"}
    if unknown:
        raise SyntaxError_(f"unknown option {sorted(unknown)[0]}")
    compaction = opts.get("compaction", "")
    if compaction not in ("", "key"):
        raise SyntaxError_(f"compaction must be 'key', not {compaction!r}", sqlstate="22023")
    return ast.CreateChangeStream(name, collection, compaction, if_not_exists)


def _drop_change_stream(p: Parser) -> ast.DropChangeStream:
    p.expect("stream")
    if_exists = p.if_exists()
    return ast.DropChangeStream(p.name(), if_exists)


def _show_change_streams(p: Parser) -> ast.ShowChangeStreams:
    p.expect("streams")
    return ast.ShowChangeStreams()


def _create_consumer_group(p: Parser) -> ast.CreateConsumerGroup:
    p.expect("group")
    if_not_exists = p.if_not_exists()
    name = p.name()
    p.expect("on")
    return ast.CreateConsumerGroup(name, p.name(), if_not_exists)


def _drop_consumer_group(p: Parser) -> ast.DropConsumerGroup:
    p.expect("group")
    if_exists = p.if_exists()
    name = p.name()
    p.expect("on")
    return ast.DropConsumerGroup(name, p.name(), if_exists)


def _stream_and_group(p: Parser) -> tuple[str, str]:
    """``ON s CONSUMER GROUP g``."""
    p.expect("on")
    stream = p.name()
    p.expect("consumer")
    p.expect("group")
    return stream, p.name()


def _commit_offsets(p: Parser) -> ast.CommitOffsets:
    return ast.CommitOffsets(*_stream_and_group(p))


def _commit_offset(p: Parser) -> ast.CommitOffsets:
    p.expect("at")
    lsn = _count(p, "an LSN")
    return ast.CommitOffsets(*_stream_and_group(p), lsn=lsn)


def _count(p: Parser, what: str) -> int:
    tok = p.take()
    if tok.kind != "number" or not tok.text.isdigit():
        raise SyntaxError_(f'syntax error at or near "{tok.text}": expected {what}')
    return int(tok.text)


_SINCE_LSN = re.compile(r"(?is)^(.*?)\s+since\s+lsn\s+(\S+)\s*;?\s*$")


def _live(p: Parser) -> ast.LiveSelect:
    """LIVE SELECT * FROM coll [WHERE ..] [SINCE LSN n]: the SELECT is sqlglot's."""
    from nodedb_server.sql.parse import parse_one

    tok = p.peek()
    if tok is None or not tok.is_kw("select"):
        raise p.error("expected SELECT")
    text, since = p.rest(), None
    found = _SINCE_LSN.match(text)
    if found is not None:
        if not found.group(2).isdigit():
            raise SyntaxError_(f'syntax error at or near "{found.group(2)}": expected an LSN')
        text, since = found.group(1), int(found.group(2))
    p.skip_rest()
    select = parse_one(text)
    if not isinstance(select, ast.Select) or not select.star or select.source is None:
        raise SyntaxError_("LIVE SELECT takes SELECT * FROM a collection [WHERE ..]")
    if select.group_by or select.order_by or select.limit is not None or select.offset is not None:
        raise SyntaxError_("LIVE SELECT takes no GROUP BY, ORDER BY, LIMIT or OFFSET")
    return ast.LiveSelect(select, since)


def _kill_live(p: Parser) -> ast.KillLive:
    p.expect("query")
    return ast.KillLive(p.string())


def _listen(p: Parser) -> ast.Listen:
    return ast.Listen(p.name())


def _unlisten(p: Parser) -> ast.Unlisten:
    if p.accept("*"):
        return ast.Unlisten(None)
    return ast.Unlisten(p.name())


def _notify(p: Parser) -> ast.Notify:
    channel = p.name()
    return ast.Notify(channel, p.string() if p.accept(",") else "")


def _show_changes(p: Parser) -> ast.ShowChanges:
    p.expect("for")
    collection = p.name()
    p.expect("since")
    since_lsn = since_us = None
    if p.accept("lsn"):
        since_lsn = _count(p, "an LSN")
    else:
        at = t.parse_timestamp(p.string())  # a literal without a zone is UTC
        since_us = (at - _EPOCH) // dt.timedelta(microseconds=1)
    limit = _count(p, "a row count") if p.accept("limit") else None
    return ast.ShowChanges(collection, since_lsn, since_us, limit)


def _select(p: Parser) -> ast.ReadStream | None:
    """SELECT * FROM STREAM s CONSUMER GROUP g [LIMIT n]; None for any other SELECT
    (sqlglot's), told apart by its first tokens."""
    words = [p.peek(k) for k in range(5)]
    if not (
        words[0] is not None
        and words[0].text == "*"
        and all(w is not None for w in words[1:])
        and words[1].is_kw("from")  # type: ignore[union-attr]
        and words[2].is_kw("stream")  # type: ignore[union-attr]
        and words[4].is_kw("consumer")  # type: ignore[union-attr]
    ):
        return None
    p.take()
    p.take()
    p.take()
    stream = p.name()
    p.expect("consumer")
    p.expect("group")
    group = p.name()
    limit = _count(p, "a row count") if p.accept("limit") else None
    return ast.ReadStream(stream, group, limit)


def _truncate(p: Parser) -> ast.Truncate:
    p.accept("table")
    names = []
    while True:
        p.accept("only")
        names.append(p.name())
        if not p.accept(","):
            break
    if p.accept("restart") or p.accept("continue"):
        p.expect("identity")
    if not p.accept("cascade"):
        p.accept("restrict")
    return ast.Truncate(tuple(names))


def _checkpoint(p: Parser) -> ast.Checkpoint:
    return ast.Checkpoint()


def statement_name(p: Parser) -> str:
    """A prepared statement's name; "" is the unnamed statement, which SQL cannot name."""
    name = p.name()
    if not name:
        raise SyntaxError_('zero-length delimited identifier at or near """"')
    return name


def parse_prepare_head(sql: str) -> tuple[str, tuple[int, ...], str]:
    """PREPARE name [(type, ..)] AS: the name, the declared types and the statement's text."""
    p = Parser(sql)
    p.expect("prepare")
    name = statement_name(p)
    oids: list[int] = []
    if p.accept("("):
        oids.append(p._type_name())
        while p.accept(","):
            oids.append(p._type_name())
        p.expect(")")
    p.expect("as")
    body = p.rest()
    if not body:
        raise p.error()
    return name, tuple(oids), body


def _execute(p: Parser) -> ast.ExecutePrepared:
    name = statement_name(p)
    args: list[Expr] = []
    if p.accept("("):
        args = _expression_list(p)
    return ast.ExecutePrepared(name, args)


def _expression_list(p: Parser) -> list[Expr]:
    """The expressions up to the ``)`` matching one just taken, read by sqlglot."""
    start, depth = p.i, 1
    while depth:
        tok = p.take()
        if tok.kind == "op" and tok.text in "()":
            depth += 1 if tok.text == "(" else -1
    if start == p.i - 1:
        raise SyntaxError_('syntax error at or near ")"')
    text = p.sql[p.toks[start].pos : p.toks[p.i - 1].pos]
    try:
        tree = sqlglot.parse_one(f"SELECT {text}", read="postgres")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError) as e:
        raise SyntaxError_(f"syntax error: {_first_line(e)}") from None
    extra = [k for k, v in tree.args.items() if v and k != "expressions"]
    if not isinstance(tree, exp.Select) or extra:
        raise SyntaxError_("syntax error: EXECUTE takes a list of values")
    if any(isinstance(e, exp.Alias) for e in tree.expressions):
        raise SyntaxError_('syntax error at or near "AS"')
    return [from_sqlglot(e) for e in tree.expressions]


def _deallocate(p: Parser) -> ast.Deallocate:
    p.accept("prepare")
    return ast.Deallocate(None if p.accept("all") else statement_name(p))


_DISCARD = {
    "all": "all",
    "plans": "plans",
    "sequences": "sequences",
    "temp": "temp",
    "temporary": "temp",
}


def _discard(p: Parser) -> ast.Discard:
    tok = p.peek()
    what = _DISCARD.get(tok.text) if tok is not None and tok.kind == "ident" else None
    if what is None:
        raise p.error("expected ALL, PLANS, SEQUENCES or TEMP")
    p.take()
    return ast.Discard(what)


# ---- dispatch --------------------------------------------------------------------------------

# Every statement of NodeDB's own, by its first keyword, or its first two where the second
# tells statements apart (CREATE COLLECTION, CREATE INDEX). Each function is handed the
# parser past those keywords; parse_nodedb then refuses any text left after it.
STATEMENTS: dict[str, Callable[[Parser], ast.Statement | None]] = {
    "create collection": _create_collection,
    "create table": table_ddl.create_table,
    "create unique": table_ddl.refuse_unique_index,
    "alter table": table_ddl.add_columns,
    "drop table": table_ddl.drop_table,
    "create timeseries": _create_timeseries,
    "create tenant": _create_tenant,
    "create user": _create_user,
    "create role": _create_user,
    "create index": _create_index,
    "create vector": _create_vector_index,
    "create change": _create_change_stream,
    "create consumer": _create_consumer_group,
    "drop change": _drop_change_stream,
    "drop consumer": _drop_consumer_group,
    "show change": _show_change_streams,
    "show changes": _show_changes,
    "listen": _listen,
    "unlisten": _unlisten,
    "notify": _notify,
    "live": _live,
    "kill live": _kill_live,
    "commit offsets": _commit_offsets,
    "commit offset": _commit_offset,
    "select": _select,  # None unless FROM STREAM follows: other SELECTs are sqlglot's
    "drop collection": _drop_collection,
    "drop tenant": _drop_tenant,
    "drop user": _drop_user,
    "drop role": _drop_user,
    "drop index": _drop_index,
    "undrop collection": _undrop_collection,
    "purge tenant": _purge_tenant,
    "grant": _grant,
    "insert": _insert,  # None unless an object literal follows: INSERT .. VALUES is sqlglot's
    "upsert": _upsert,
    "show collections": _show_collections,
    "show tenants": _show_tenants,
    "show restore": _show_restore_range,
    "show": _show,
    "describe": _describe,
    "desc": _describe,
    "set": _set,
    "reset": _reset,
    "begin": _begin,
    "start transaction": _start_transaction,
    "commit": _commit,
    "end": _commit,
    "rollback": _rollback,
    "abort": _abort,
    "savepoint": _savepoint,
    "declare": _declare,
    "fetch": _fetch,
    "move": _move,
    "close": _close,
    "release": _release,
    "graph insert": _graph_insert,
    "graph delete": _graph_delete,
    "graph neighbors": _graph_neighbors,
    "graph traverse": _graph_traverse,
    "graph path": _graph_path,
    "graph algo": _graph_algo,
    "copy": _copy,
    "backup tenant": _backup_tenant,
    "restore tenant": _restore_tenant,
    "alter system": _alter_system,
    "search": _search,
    "checkpoint": _checkpoint,
    "execute": _execute,
    "deallocate": _deallocate,
    "discard": _discard,
    "truncate": _truncate,
}


def _second_keywords(table: dict[str, Any]) -> dict[str, list[str]]:
    """For each first keyword of a two-keyword statement, the second keywords it takes."""
    seconds: dict[str, list[str]] = {}
    for key in table:
        first, _, second = key.partition(" ")
        if second:
            seconds.setdefault(first, []).append(second)
    return seconds


_SECOND_KEYWORDS = _second_keywords(STATEMENTS)


def parse_nodedb(sql: str) -> ast.Statement | None:
    """The statement if it is one of NodeDB's own (or a session statement), else None:
    standard SQL, told apart by its first keyword, of which only that token is read."""
    p = Parser(sql)
    first = p.peek()
    if first is None:
        return ast.Empty()
    if first.kind != "ident":
        return None
    parse = _statement_parser(p, first.text)
    statement = parse(p) if parse is not None else None
    if statement is not None:
        p.end()
    return statement


def _statement_parser(p: Parser, word: str) -> Callable[[Parser], ast.Statement | None] | None:
    """The table's function for the statement ``word`` begins, with the parser past its
    keywords; None for a first keyword not in the table, without reading further."""
    p.take()
    seconds = _SECOND_KEYWORDS.get(word)
    if seconds is not None:
        second = p.peek()
        if second is not None and second.kind == "ident" and second.text in seconds:
            p.take()
            return STATEMENTS[f"{word} {second.text}"]
        if word not in STATEMENTS:  # SHOW x is SHOW of a setting; CREATE x is an error
            raise p.error("expected " + _either(seconds))
    return STATEMENTS.get(word)


def _either(words: list[str]) -> str:
    upper = [w.upper() for w in words]
    return upper[0] if len(upper) == 1 else f"{', '.join(upper[:-1])} or {upper[-1]}"
