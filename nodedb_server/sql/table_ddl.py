"""CREATE TABLE, ALTER TABLE .. ADD COLUMN and DROP TABLE, as PostgreSQL spells them.

A table is a document collection with a declared schema (engines/document.py):
columns of PostgreSQL types, NOT NULL, constant DEFAULTs, one primary key of text
or an integer type (an integer key left out of an INSERT is generated, as SERIAL or
an identity column would make it). Constraints the engines cannot keep (UNIQUE on
another column, FOREIGN KEY, CHECK) are refused, never accepted and ignored.

The functions here read the statement with sql/nodedb_statements.py's Parser, past
the statement's leading keywords; that module's STATEMENTS table names them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodedb_server import types as t
from nodedb_server.engines.document import (
    HIDDEN_KEY,
    INT_KEY_TYPES,
    KEY_TYPES,
    TABLE_TYPES,
    TableColumn,
)
from nodedb_server.errors import DBError, DuplicateColumn, FeatureNotSupported, SyntaxError_
from nodedb_server.sql import ast
from nodedb_server.sql.exec.values import fit
from nodedb_server.sql.expr import Cast, Const, Ctx, Expr, cast_value

if TYPE_CHECKING:
    from nodedb_server.sql.nodedb_statements import Parser

# PostgreSQL's spellings of the types a column declares, one word each (the words of
# DOUBLE PRECISION, CHARACTER VARYING and TIMESTAMP WITH[OUT] TIME ZONE are read by
# _column_type); SERIAL types are their integer type with a generated key.
_TYPE_WORDS = {
    "smallint": "int2",
    "int2": "int2",
    "integer": "int4",
    "int": "int4",
    "int4": "int4",
    "bigint": "int8",
    "int8": "int8",
    "real": "float4",
    "float4": "float4",
    "float8": "float8",
    "numeric": "numeric",
    "decimal": "numeric",
    "bool": "bool",
    "boolean": "bool",
    "text": "text",
    "varchar": "varchar",
    "bpchar": "text",
    "char": "text",
    "bytea": "bytea",
    "timestamptz": "timestamptz",
    "json": "json",
    "jsonb": "jsonb",
}
_SERIALS = {
    "smallserial": "int2",
    "serial2": "int2",
    "serial": "int4",
    "serial4": "int4",
    "bigserial": "int8",
    "serial8": "int8",
}
_REFUSED = {
    "unique": "UNIQUE constraints are not supported: only the primary key is unique",
    "references": "FOREIGN KEY constraints are not supported",
    "foreign": "FOREIGN KEY constraints are not supported",
    "check": "CHECK constraints are not supported",
    "exclude": "EXCLUDE constraints are not supported",
    "collate": "COLLATE is not supported: text compares by code point",
}


def create_table(p: Parser) -> ast.CreateCollection:
    if_not_exists = p.if_not_exists()
    name = table_name(p)
    if p.accept("as"):
        raise FeatureNotSupported("CREATE TABLE .. AS is not supported")
    p.expect("(")
    columns: list[list[Any]] = []
    keys: list[list[str]] = []  # each PRIMARY KEY said: a column's, or a (list)
    serial: set[str] = set()
    if not p.accept(")"):
        while True:
            if p.accept("primary"):
                p.expect("key")
                keys.append(_name_list(p))
            elif p.accept("constraint"):
                p.name()
                if (tok := p.peek()) is not None and tok.text in _REFUSED:
                    raise FeatureNotSupported(_REFUSED[tok.text])
                p.expect("primary")
                p.expect("key")
                keys.append(_name_list(p))
            elif (tok := p.peek()) is not None and tok.kind == "ident" and tok.text in _REFUSED:
                raise FeatureNotSupported(_REFUSED[tok.text])
            else:
                col, is_key, generated = column(p)
                columns.append(col)
                if is_key:
                    keys.append([col[0]])
                if generated:
                    serial.add(col[0])
            if p.accept(")"):
                break
            p.expect(",")
    return ast.CreateCollection(
        name, "document", {}, if_not_exists, {"table": _schema(name, columns, keys, serial)}
    )


def _schema(
    name: str, columns: list[list[Any]], keys: list[list[str]], serial: set[str]
) -> dict[str, Any]:
    names = [c[0] for c in columns]
    for n in names:
        if names.count(n) > 1:
            raise DuplicateColumn(f'column "{n}" specified more than once')
    if len(keys) > 1:
        raise DBError(f'multiple primary keys for table "{name}" are not allowed', "42P16")
    if keys and len(keys[0]) > 1:
        raise FeatureNotSupported("a primary key of more than one column is not supported")
    key = keys[0][0] if keys else None
    if key is not None and key not in names:
        raise DBError(f'column "{key}" named in key does not exist', "42703")
    for col in columns:
        if col[0] == key:
            if col[1] not in KEY_TYPES:
                raise FeatureNotSupported(
                    f"a primary key of type {col[1]} is not supported: use text or an integer"
                )
            col[2] = True  # a primary key is NOT NULL
    for n in serial:
        if n != key:
            raise FeatureNotSupported(
                f'column "{n}": SERIAL and identity columns are supported only as the '
                "primary key (whose values the server generates)"
            )
    return {"columns": columns, "key": key}


def column(p: Parser) -> tuple[list[Any], bool, bool]:
    """``name type [constraint ...]``: the column as TableColumn's fields, whether it is
    the primary key, and whether its values are generated (SERIAL, identity)."""
    name = p.name()
    if name == HIDDEN_KEY:
        raise DuplicateColumn(f'column name "{name}" conflicts with a system column name')
    kind, generated, typmod = _column_type(p)
    not_null, is_key = False, False
    default: dict[str, Any] | None = None
    while (tok := p.peek()) is not None and tok.kind == "ident":
        if p.accept("primary"):
            p.expect("key")
            is_key = True
        elif p.accept("not"):
            p.expect("null")
            not_null = True
        elif p.accept("null"):
            pass
        elif p.accept("default"):
            default = _default(p, kind)
        elif p.accept("generated"):
            if not p.accept("always"):
                p.expect("by")
                p.expect("default")
            p.expect("as")
            p.expect("identity")
            generated = True
        elif p.accept("constraint"):
            p.name()
        elif tok.text in _REFUSED:
            raise FeatureNotSupported(_REFUSED[tok.text])
        else:
            break
    if generated and kind not in INT_KEY_TYPES:
        raise DBError("identity column type must be smallint, integer, or bigint", "22023")
    if generated:
        if default is not None:
            raise SyntaxError_(
                f'multiple default values specified for column "{name}" of a SERIAL or'
                " identity column"
            )
        default = {"serial": True}
    if default is not None and "value" in default:
        default = {"value": fit(TableColumn(name, kind, typmod=typmod), default["value"])}
    return [name, kind, not_null, default, typmod], is_key, generated


def _column_type(p: Parser) -> tuple[str, bool, int]:
    """A column's type: its TABLE_TYPES name, whether it is a SERIAL type, and its type
    modifier (PostgreSQL's atttypmod: varchar(n) n + 4, numeric(p, s) (p << 16 | s) + 4,
    else -1)."""
    word = p.name()
    if word in _SERIALS:
        return _SERIALS[word], True, -1
    if word == "double":
        p.expect("precision")
        kind = "float8"
    elif word == "character":
        kind = "varchar" if p.accept("varying") else "text"
    elif word == "float":
        kind = "float8"
        if p.accept("("):
            bits = _whole_number(p)
            p.expect(")")
            if not 1 <= bits <= 53:
                raise DBError("precision for type float must be between 1 and 53 bits", "22023")
            kind = "float4" if bits <= 24 else "float8"
        return kind, False, -1
    elif word == "timestamp":
        kind = "timestamp"
        _modifiers(p)
        if p.accept("with"):
            kind = "timestamptz"
            p.expect("time")
            p.expect("zone")
        elif p.accept("without"):
            p.expect("time")
            p.expect("zone")
        return kind, False, -1
    elif word in _TYPE_WORDS:
        kind = _TYPE_WORDS[word]
    else:
        raise FeatureNotSupported(
            f"type {word} is not supported for a table column; the types are "
            + ", ".join(sorted(TABLE_TYPES))
        )
    mods = _modifiers(p)
    if p.accept("["):
        raise FeatureNotSupported("array columns are not supported in a table")
    return kind, False, _typmod(kind, mods)


def _typmod(kind: str, mods: list[int]) -> int:
    """The modifier kept for varchar(n) and numeric(p[, s]); others' are read and dropped
    (timestamp(p), char(n): char is read as text)."""
    if not mods or kind not in ("varchar", "numeric"):
        return -1
    if kind == "varchar":
        if not 1 <= mods[0] <= 10485760:
            raise DBError("length for type varchar must be between 1 and 10485760", "22023")
        return mods[0] + 4
    precision, scale = mods[0], mods[1] if len(mods) > 1 else 0
    if not 1 <= precision <= 1000:
        raise DBError(f"NUMERIC precision {precision} must be between 1 and 1000", "22023")
    if not 0 <= scale <= precision:
        raise DBError(f"NUMERIC scale {scale} must be between 0 and precision {precision}", "22023")
    return ((precision << 16) | scale) + 4


def _modifiers(p: Parser) -> list[int]:
    """``(n)`` or ``(p, s)`` after a type."""
    if not p.accept("("):
        return []
    mods = [_whole_number(p)]
    if p.accept(","):
        mods.append(_whole_number(p))
    p.expect(")")
    return mods


def _whole_number(p: Parser) -> int:
    tok = p.take()
    if tok.kind != "number" or not tok.text.isdigit():
        raise SyntaxError_(f'syntax error at or near "{tok.text}": expected a number')
    return int(tok.text)


def _default(p: Parser, kind: str) -> dict[str, Any]:
    """DEFAULT: a constant (cast to the column's type now, so a bad one is refused at
    CREATE), or the time of the INSERT (now(), CURRENT_TIMESTAMP)."""
    if p.accept("current_timestamp", "localtimestamp"):
        return {"now": True}
    tok = p.peek()
    if tok is not None and tok.is_kw("now", "transaction_timestamp", "statement_timestamp"):
        p.take()
        p.expect("(")
        p.expect(")")
        return {"now": True}
    value: Expr = p.value()
    if not isinstance(value, Const | Cast) or (
        isinstance(value, Cast) and not isinstance(value.inner, Const)
    ):
        raise FeatureNotSupported("a DEFAULT is a constant, now() or CURRENT_TIMESTAMP")
    v = value.eval({}, Ctx())
    oid = TABLE_TYPES[kind]
    if v is not None and oid not in (t.JSON, t.JSONB):
        v = cast_value(v, oid)
    return {"value": v}  # fitted to the column's modifier by column()


# What else PostgreSQL's ALTER TABLE does, refused by name.
_ALTER_ACTIONS = (
    "drop",
    "alter",
    "rename",
    "set",
    "reset",
    "owner",
    "enable",
    "disable",
    "validate",
    "attach",
    "detach",
    "inherit",
    "no",
    "replica",
    "cluster",
    "of",
    "not",
    "force",
)


def add_columns(p: Parser) -> ast.AddColumns:
    """ALTER TABLE [IF EXISTS] [ONLY] t ADD [COLUMN] [IF NOT EXISTS] c type .., ..."""
    if_exists = p.if_exists()
    p.accept("only")
    name = table_name(p)
    added: list[tuple[list[Any], bool]] = []
    while True:
        tok = p.peek()
        if not p.accept("add"):
            if tok is None or not tok.is_kw(*_ALTER_ACTIONS):
                raise p.error("expected ADD")
            what = tok.text.upper()
            raise FeatureNotSupported(f"ALTER TABLE .. {what} is not supported: only ADD COLUMN")
        p.accept("column")
        if (tok := p.peek()) is not None and tok.kind == "ident" and tok.text in _REFUSED:
            raise FeatureNotSupported(_REFUSED[tok.text])
        if (tok := p.peek()) is not None and tok.is_kw("primary", "constraint"):
            raise FeatureNotSupported("ALTER TABLE .. ADD CONSTRAINT is not supported")
        if_not_exists = p.if_not_exists()
        col, is_key, generated = column(p)
        if is_key or generated:
            raise FeatureNotSupported("a primary key is declared by CREATE TABLE")
        added.append((col, if_not_exists))
        if not p.accept(","):
            return ast.AddColumns(name, tuple(added), if_exists)


def drop_table(p: Parser) -> ast.DropCollection:
    if_exists = p.if_exists()
    name = table_name(p)
    if p.accept(","):
        raise FeatureNotSupported("DROP TABLE drops one table at a time")
    if not p.accept("cascade"):
        p.accept("restrict")
    return ast.DropCollection(name, purge=True, if_exists=if_exists, tag="DROP TABLE")


def refuse_unique_index(p: Parser) -> ast.Statement:
    raise FeatureNotSupported(
        "CREATE UNIQUE INDEX is not supported: only the primary key is unique"
    )


def table_name(p: Parser) -> str:
    """``name`` or ``public.name``: tables live in schema public."""
    name = p.name()
    if p.accept("."):
        if name != "public":
            raise DBError(f'schema "{name}" does not exist', "3F000")
        name = p.name()
    return name


def _name_list(p: Parser) -> list[str]:
    p.expect("(")
    names = [p.name()]
    while p.accept(","):
        names.append(p.name())
    p.expect(")")
    return names
