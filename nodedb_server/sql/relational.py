"""Relational SQL beyond the native planner, run by DataFusion over Arrow views.

The native planner (plan.py) keeps what it does well: point lookups, index probes,
timeseries kernels, one-collection filters and aggregates. A read it does not take
(JOIN, DISTINCT, CASE, subqueries, CTEs, UNION/INTERSECT/EXCEPT, HAVING, window
functions, and the scalar functions it lacks) comes here: the collections it names
become Arrow tables as the session sees them (committed rows plus its transaction's
own writes), and DataFusion plans and runs the SQL.

Why DataFusion and not DuckDB (``python -m bench.relational_engines``, 2 cores, the
same in-memory Arrow tables, each engine set up per statement as here, median of 5):
a 1M x 100k hash JOIN with GROUP BY took 141 ms in DataFusion 55 and 142 ms in
DuckDB 2.0; the same JOIN returning 500k rows 90 ms against 97 ms; a 3-row JOIN
2.1 ms against 5.0 ms. So the large joins are a draw and the per-statement cost,
which most queries pay, is less than half. What decided it is that DataFusion
answers as PostgreSQL does where DuckDB does not: ``7 / 2`` is 3 (DuckDB 3.5), NULLs
sort last ascending and first descending (DuckDB last both ways), and division by
zero is an error (DuckDB returns inf). Writing our own join engine would be slower
than either.

The tree is sqlglot's (PostgreSQL dialect). Before DataFusion sees it: unquoted
names fold to lower case and every name is quoted, so a field named ``userId`` is
found only as ``"userId"``, as in PostgreSQL; each output column gets a private
alias so that DataFusion's unique-name rule never refuses what PostgreSQL allows,
and the names PostgreSQL would give are put back on the result; parameters become
typed literals; ``to_char`` patterns are translated. jsonb fields travel as Arrow
``large_string`` (JSON text), which DataFusion keeps through projections, so a
jsonb column comes back typed jsonb.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import functools
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.time import format_time

from nodedb_server import types as t
from nodedb_server.engines.base import RowCollection, type_tag
from nodedb_server.engines.timeseries import TimeseriesCollection
from nodedb_server.errors import (
    DataError,
    DBError,
    FeatureNotSupported,
    SyntaxError_,
    UndefinedColumn,
    UndefinedFunction,
    UndefinedTable,
)
from nodedb_server.sql.describe import tags_oid

if TYPE_CHECKING:
    import datafusion

    from nodedb_server.sql.result import Column
    from nodedb_server.sql.session import Session

log = logging.getLogger("nodedb.relational")

READS = (exp.Select, exp.Union, exp.Intersect, exp.Except)
_ALIAS = "__nodedb_c{}"


@dataclass(frozen=True)
class _DataFusion:
    module: Any
    options: Any  # reads only: no DDL, DML or statements
    config: Any
    udfs: dict[str, Any]


def warm() -> None:
    """Import, on a worker thread once the server listens, what the first relational or
    columnar statement would otherwise wait for: DataFusion, and the pandas that pyarrow
    imports (when it is installed) the first time it converts Python values. That first
    statement (a timeseries COPY, say) took 0.3 s longer than the next. A failure here
    is only logged: the statement that needs the module meets it again and reports it."""
    try:
        _datafusion()
        pa.array([0.0])
    except Exception:
        log.exception("importing DataFusion ahead of the first relational query failed")


@functools.cache
def _datafusion() -> _DataFusion:
    """DataFusion, imported when the first relational query needs it: with the pandas it
    imports, it was a third of the server's start-up (0.33 of 1.08 s of imports), which a
    restart after a crash waits for."""
    import datafusion as df

    return _DataFusion(
        df,
        df.SQLOptions().with_allow_ddl(False).with_allow_dml(False).with_allow_statements(False),
        # now() and friends are timestamptz in UTC, as the server's TimeZone is.
        df.SessionConfig().set("datafusion.execution.time_zone", "+00:00"),
        {
            _RINT: df.udf(
                lambda a: pc.round(a, ndigits=0, round_mode="half_to_even"),
                [pa.float64()],
                pa.float64(),
                "immutable",
                _RINT,
            ),
        },
    )


_UTC_US = pa.timestamp("us", "UTC")
# The Arrow type a column of each PostgreSQL type travels as.
_ARROW = {
    t.INT8: pa.int64(),
    t.FLOAT8: pa.float64(),
    t.BOOL: pa.bool_(),
    t.TEXT: pa.string(),
    t.BYTEA: pa.binary(),
    t.TIMESTAMPTZ: _UTC_US,
    t.FLOAT4_ARRAY: pa.list_(pa.float32()),
    t.JSONB: pa.large_string(),
    # The other types a table's columns declare (engines/document.py TABLE_TYPES).
    # numeric is read as float8 here: DataFusion's decimals need one scale per column.
    t.INT4: pa.int32(),
    t.INT2: pa.int16(),
    t.FLOAT4: pa.float32(),
    t.VARCHAR: pa.string(),
    t.NUMERIC: pa.float64(),
    t.TIMESTAMP: pa.timestamp("us"),
}


def is_relational(tree: exp.Expr) -> bool:
    return isinstance(tree, READS)


@dataclass(frozen=True)
class Query:
    """A relational read: its tree with names folded, the collections it names, and the
    names of its output columns as PostgreSQL gives them (None: from a ``*``)."""

    tree: exp.Expr
    tables: tuple[str, ...]
    names: tuple[str | None, ...]
    params: int

    @staticmethod
    def of(tree: exp.Expr, sql: str = "") -> Query:
        for select in tree.find_all(exp.Select):
            for clause, words in (("into", "SELECT INTO"), ("locks", "FOR UPDATE/SHARE")):
                if select.args.get(clause):
                    raise FeatureNotSupported(f"{words} is not supported")
        tree = tree.copy()
        # sqlglot reads substr() as substring(); PostgreSQL names the column by the word used
        substr = bool(_SUBSTR.search(sql)) and not _SUBSTRING.search(sql)
        _fold_names(tree)
        _name_unnests(tree)
        tables = _collections(tree)
        first = _leftmost(tree)
        names: list[str | None] = []
        items = list(first.expressions)
        stars = any(_is_star(node) for node in items)
        aliases = [node.alias for node in items if isinstance(node, exp.Alias)]
        for i, node in enumerate(items):
            if _is_star(node):
                names.append(None)
                continue
            name = output_name(node)
            names.append("substr" if substr and name == "substring" else name)
            # A user's alias is kept, so ORDER BY / GROUP BY can name it, unless a * sits
            # beside it (its columns are told apart by the private aliases) or it repeats.
            if isinstance(node, exp.Alias) and not stars and aliases.count(node.alias) == 1:
                continue
            inner = node.this if isinstance(node, exp.Alias) else node
            node.replace(exp.alias_(inner.copy(), _ALIAS.format(i), quoted=True))
        _rewrite(tree)
        for call in tree.find_all(exp.Anonymous):
            name = str(call.this).lower()
            if name not in known_functions() and name not in _datafusion().udfs:
                raise UndefinedFunction(f"function {name}() does not exist")
        params = max((_param_number(p) for p in tree.find_all(exp.Parameter)), default=0)
        return Query(tree, tables, tuple(names), params)

    def param_types(self, declared: tuple[int, ...], session: Session) -> list[int]:
        """A parameter's type: declared, else a cast's, else that of the column it is
        compared with (SQL.md "Types on the wire"), else text."""
        found: dict[int, int] = {}
        fields = _field_types(session, self.tables)
        for p in self.tree.find_all(exp.Parameter):
            n = _param_number(p)
            parent = p.parent
            if isinstance(parent, exp.Cast):
                found.setdefault(n, _cast_oid(parent.to))
            elif isinstance(parent, exp.Binary | exp.In | exp.Between):
                for other in parent.iter_expressions():
                    if isinstance(other, exp.Column) and other.name in fields:
                        found.setdefault(n, fields[other.name])
        out = []
        for i in range(self.params):
            d = declared[i] if i < len(declared) else 0
            out.append(d or found.get(i + 1, t.TEXT))
        return out

    def sql(self, params: list[Any] | None, oids: list[int]) -> str:
        tree = self.tree
        if self.params:
            tree = tree.copy()
            for p in list(tree.find_all(exp.Parameter)):
                n = _param_number(p)
                value = params[n - 1] if params is not None and n <= len(params) else None
                oid = oids[n - 1] if n <= len(oids) else t.TEXT
                p.replace(_literal(value, oid))
        return tree.sql(dialect="postgres", identify=True)


def _is_star(node: exp.Expression) -> bool:
    return isinstance(node, exp.Star) or (
        isinstance(node, exp.Column) and isinstance(node.this, exp.Star)
    )


_SUBSTR = re.compile(r"(?i)\bsubstr\s*\(")
_SUBSTRING = re.compile(r"(?i)\bsubstring\s*\(")


def _name_unnests(tree: exp.Expr) -> None:
    """``FROM unnest(..)``: its column is named unnest, or the alias, as PostgreSQL names
    it (DataFusion would name it after the whole call)."""
    for node in tree.find_all(exp.Unnest):
        if not isinstance(node.parent, exp.From | exp.Join):
            continue
        alias = node.args.get("alias")
        if alias is None:
            name = exp.to_identifier("unnest")
            node.set("alias", exp.TableAlias(this=name, columns=[name.copy()]))
        elif not alias.columns and len(node.expressions) == 1:  # AS u: the column is u too
            alias.set("columns", [alias.this.copy()])


def output_name(node: exp.Expression) -> str:
    """The name PostgreSQL gives an output column (its FigureColname rules)."""
    if isinstance(node, exp.Alias):
        return node.alias
    if isinstance(node, exp.Column):
        return node.name
    if isinstance(node, exp.Cast):  # the name of what is cast, if it has one
        inner = output_name(node.this)
        return inner if inner != "?column?" else _type_name(node.to)
    if isinstance(node, exp.Window):
        return output_name(node.this)
    if isinstance(node, exp.Case):
        return "case"
    if isinstance(node, exp.Subquery) and isinstance(node.this, exp.Select):
        items = node.this.expressions
        return output_name(items[0]) if len(items) == 1 else "?column?"
    if isinstance(node, exp.Exists):
        return "exists"
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    if isinstance(node, exp.Func) and not isinstance(node, exp.Binary | exp.Unary):
        return _FUNC_NAMES.get(type(node), node.sql_name().lower())
    return "?column?"


_FUNC_NAMES: dict[type, str] = {
    exp.TimestampTrunc: "date_trunc",
    exp.TimeToStr: "to_char",
    exp.DateTrunc: "date_trunc",
    exp.Substring: "substring",
    exp.Trim: "btrim",
    exp.CurrentTimestamp: "now",
    exp.Ceil: "ceil",
    exp.StrPosition: "strpos",
    exp.Length: "length",
    exp.ArrayAgg: "array_agg",
    exp.GroupConcat: "string_agg",
    exp.RowNumber: "row_number",
    exp.Pow: "power",
    exp.Extract: "extract",
    exp.Nullif: "nullif",
    exp.Coalesce: "coalesce",
    exp.Greatest: "greatest",
    exp.Least: "least",
}


def _type_name(to: exp.Expression) -> str:
    oid = _cast_oid(to)
    return t.TYPE_NAMES.get(oid, to.sql(dialect="postgres").lower())


def _cast_oid(to: exp.Expression) -> int:
    if isinstance(to, exp.DataType):
        name = to.sql(dialect="postgres").lower().split("(")[0]
        return t.CAST_NAMES.get(name, t.TEXT)
    return t.TEXT


def _param_number(p: exp.Parameter) -> int:
    return int(p.this.this) if isinstance(p.this, exp.Literal) else int(p.name)


def _fold_names(tree: exp.Expr) -> None:
    """Unquoted identifiers fold to lower case, as PostgreSQL reads them."""
    for ident in tree.find_all(exp.Identifier):
        if not ident.args.get("quoted"):
            ident.set("this", ident.this.lower())


def _leftmost(tree: exp.Expr) -> exp.Select:
    node: exp.Expr = tree
    while isinstance(node, exp.SetOperation):
        node = node.this
    if isinstance(node, exp.Subquery):
        node = node.unnest()
    if not isinstance(node, exp.Select):
        raise FeatureNotSupported(f"{type(node).__name__.upper()} is not supported here")
    return node


def _collections(tree: exp.Expr) -> tuple[str, ...]:
    """The collections a query reads: its table names, less its CTEs' names."""
    ctes = {c.alias_or_name for c in tree.find_all(exp.CTE)}
    names: list[str] = []
    for table in tree.find_all(exp.Table):
        if not table.name:
            raise FeatureNotSupported("table functions are not supported here")
        schema = table.db
        if table.catalog or (schema and schema != "public"):
            raise FeatureNotSupported(
                f'"{table.sql(dialect="postgres")}" cannot be read in a query that joins, '
                "combines or nests: only the tenant's collections can"
            )
        if schema:
            table.set("db", None)
        if table.name not in ctes and table.name not in names:
            names.append(table.name)
    return tuple(names)


# PostgreSQL's to_char template patterns and the chrono (strftime) ones DataFusion's
# to_char takes, longest first so that "Month" is read before "Mon" and "MM".
_TO_CHAR = [
    ("YYYY", "%Y"),
    ("Month", "%B"),
    ("MONTH", "%B"),
    ("Mon", "%b"),
    ("MON", "%b"),
    ("HH24", "%H"),
    ("HH12", "%I"),
    ("Day", "%A"),
    ("Dy", "%a"),
    ("DDD", "%j"),
    ("YY", "%y"),
    ("MM", "%m"),
    ("DD", "%d"),
    ("HH", "%I"),
    ("MI", "%M"),
    ("SS", "%S"),
    ("MS", "%3f"),
    ("US", "%6f"),
    ("AM", "%p"),
    ("PM", "%p"),
    ("TZ", "%Z"),
]
_TO_CHAR_RE = re.compile("|".join(re.escape(p) for p, _ in _TO_CHAR))


def to_chrono(pattern: str) -> str:
    table = dict(_TO_CHAR)
    out = pattern.replace("%", "%%")
    return _TO_CHAR_RE.sub(lambda m: table[m.group(0)], out)


def _rewrite(tree: exp.Expr) -> None:
    """What DataFusion reads differently from PostgreSQL, said its way."""
    for node in list(tree.find_all(exp.TimeToStr)):
        fmt = node.args.get("format")
        if isinstance(fmt, exp.Literal) and fmt.is_string:
            # sqlglot translated the pattern partly; take PostgreSQL's back and translate it whole
            pg = format_time(fmt.this, Postgres.INVERSE_TIME_MAPPING, Postgres.INVERSE_TIME_TRIE)
            node.replace(
                exp.Anonymous(
                    this="to_char", expressions=[node.this, exp.Literal.string(to_chrono(pg or ""))]
                )
            )
    for rounding in list(tree.find_all(exp.Round)):
        if rounding.args.get("decimals") is None:  # round(float8) rounds half to even (rint)
            rounding.replace(exp.Anonymous(this=_RINT, expressions=[rounding.this]))
    for cast in list(tree.find_all(exp.Cast)):
        if _cast_oid(cast.to) == t.TIMESTAMPTZ:
            cast.replace(
                exp.Anonymous(
                    this="arrow_cast",
                    expressions=[
                        cast.this,
                        exp.Literal.string('Timestamp(Microsecond, Some("UTC"))'),
                    ],
                )
            )


def _literal(value: Any, oid: int) -> exp.Expression:
    if value is None:
        arrow = _ARROW.get(oid)
        if oid == t.TEXT or arrow is None:
            return exp.cast(exp.null(), "text")
        return exp.Anonymous(
            this="arrow_cast", expressions=[exp.null(), exp.Literal.string(_arrow_name(arrow))]
        )
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int | float | decimal.Decimal):
        return (
            exp.Literal.number(str(value))
            if value >= 0
            else exp.Neg(this=exp.Literal.number(str(-value)))
        )
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return exp.Anonymous(
            this="arrow_cast",
            expressions=[
                exp.Literal.string(value.isoformat()),
                exp.Literal.string('Timestamp(Microsecond, Some("UTC"))'),
            ],
        )
    if isinstance(value, bytes):
        return exp.Anonymous(
            this="decode", expressions=[exp.Literal.string(value.hex()), exp.Literal.string("hex")]
        )
    if isinstance(value, list | dict):
        return exp.Literal.string(t.to_json(value))
    return exp.Literal.string(str(value))


def _arrow_name(arrow: pa.DataType) -> str:
    return {
        pa.int64(): "Int64",
        pa.float64(): "Float64",
        pa.bool_(): "Boolean",
        pa.binary(): "Binary",
        _UTC_US: 'Timestamp(Microsecond, Some("UTC"))',
        pa.large_string(): "LargeUtf8",
    }.get(arrow, "Utf8")


# ---- the collections as Arrow tables -------------------------------------------------


def _field_types(session: Session, names: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name in names:
        found = session.tenant.state.collection(name)
        if found is None:
            continue
        for field, oid, _ in _schema(session, name, found[1]):
            out.setdefault(field, oid)
    return out


# (field, type, its Arrow type) of a relation's column
Col = tuple[str, int, pa.DataType]


def _col(name: str, oid: int) -> Col:
    return name, oid, _ARROW.get(oid, pa.large_string())


def _schema(session: Session, name: str, engine: Any) -> list[Col]:
    """(field, type, Arrow type) of a collection as this session sees it: the types of
    its own uncommitted writes count too. A table's numeric(p, s) is decimal(p, s)."""
    if isinstance(engine, TimeseriesCollection):
        from nodedb_server.sql.describe import TS_KIND_OIDS

        return [_col(f, TS_KIND_OIDS.get(k, t.TEXT)) for f, k in engine.columns.items()]
    assert isinstance(engine, RowCollection)
    over = session.txn.overlay.get(name) if session.txn is not None else None
    fields = [f for f in engine.fields() if not (engine.hidden_key and f == engine.key_field)]
    tags = {f: set(engine.field_types.get(f, set())) for f in fields}
    if over:
        for entry in over.values():
            row = entry[0]
            if row is None:
                continue
            for f, v in row.items():
                if engine.table is not None and f not in tags:
                    continue  # a table's hidden key
                if f not in tags:
                    fields.append(f)
                    tags[f] = set()
                tags[f].add(type_tag(v))
    out = []
    for f in fields:
        declared = engine.column_oid(f)
        col = engine.table.column(f) if engine.table is not None else None
        if col is not None and col.precision is not None:
            precision, scale = col.precision
            out.append((f, t.NUMERIC, pa.decimal128(min(precision, 38), scale)))
        elif declared is not None:
            out.append(_col(f, declared if declared in _ARROW else t.JSONB))
        elif f == engine.key_field:
            out.append(_col(f, t.TEXT))
        else:
            oid = tags_oid(tags[f])
            out.append(_col(f, oid if oid in _ARROW else t.JSONB))
    return out


def _arrow_schema(cols: list[Col]) -> pa.Schema:
    return pa.schema([(f, arrow) for f, _, arrow in cols])


def _column(values: list[Any], oid: int, arrow: pa.DataType) -> pa.Array:
    if arrow == pa.large_string():
        return pa.array([None if v is None else t.to_json(v) for v in values], arrow)
    if pa.types.is_decimal(arrow):  # numeric(p, s), exact
        return pa.array([None if v is None else decimal.Decimal(str(v)) for v in values], arrow)
    if oid in (t.FLOAT8, t.NUMERIC):
        values = [None if v is None else float(v) for v in values]
    elif oid == t.TIMESTAMP:  # stored as UTC; the column has no zone
        values = [_wall_clock(v) for v in values]
    return pa.array(values, arrow)


def _wall_clock(v: Any) -> Any:
    if isinstance(v, dt.datetime) and v.tzinfo is not None:
        return v.astimezone(dt.UTC).replace(tzinfo=None)
    return v


def _table(rows: list[dict[str, Any]], cols: list[Col]) -> pa.Table:
    arrays = [_column([r.get(f) for r in rows], oid, arrow) for f, oid, arrow in cols]
    return pa.Table.from_arrays(arrays, schema=_arrow_schema(cols))


# ---- running -------------------------------------------------------------------------

_PG_OIDS = [
    (pa.types.is_int64, t.INT8),
    (pa.types.is_int32, t.INT4),
    (pa.types.is_int16, t.INT2),
    (pa.types.is_int8, t.INT2),
    (pa.types.is_unsigned_integer, t.INT8),
    (pa.types.is_float64, t.FLOAT8),
    (pa.types.is_floating, t.FLOAT4),
    (pa.types.is_boolean, t.BOOL),
    (pa.types.is_large_string, t.JSONB),
    (pa.types.is_string, t.TEXT),
    (pa.types.is_binary, t.BYTEA),
    (pa.types.is_large_binary, t.BYTEA),
    (pa.types.is_decimal, t.NUMERIC),
]
_LIST_OIDS = {
    t.FLOAT4: t.FLOAT4_ARRAY,
    t.FLOAT8: t.FLOAT8_ARRAY,
    t.INT8: t.INT8_ARRAY,
    t.INT4: t.INT4_ARRAY,
    t.INT2: t.INT2_ARRAY,
    t.TEXT: t.TEXT_ARRAY,
    t.BOOL: t.BOOL_ARRAY,
}


def pg_oid(arrow: pa.DataType) -> int:
    if pa.types.is_timestamp(arrow):
        return t.TIMESTAMPTZ if arrow.tz is not None else t.TIMESTAMP
    if pa.types.is_list(arrow) or pa.types.is_large_list(arrow):
        return _LIST_OIDS.get(pg_oid(arrow.value_type), t.JSONB)
    if str(arrow) == "string_view":
        return t.TEXT
    for test, oid in _PG_OIDS:
        if test(arrow):
            return oid
    return t.TEXT


_RINT = "nodedb_rint"


@functools.cache
def known_functions() -> frozenset[str]:
    """The functions DataFusion has (read once from its information_schema)."""
    df = _datafusion().module
    ctx = df.SessionContext(df.SessionConfig().with_information_schema(True))
    found = ctx.sql("SELECT DISTINCT routine_name FROM information_schema.routines").to_pydict()
    return frozenset(str(n).lower() for n in found["routine_name"])


def _register(ctx: datafusion.SessionContext, name: str, table: pa.Table) -> None:
    if table.num_rows:
        ctx.register_record_batches(name, [table.combine_chunks().to_batches()])
    else:
        ctx.register_table(name, ctx.from_arrow(table))


def _plan(tables: dict[str, pa.Table], sql: str) -> datafusion.DataFrame:
    df = _datafusion()
    ctx = df.module.SessionContext(df.config)
    for name, table in tables.items():
        _register(ctx, name, table)
    for name, udf in df.udfs.items():
        if name in sql.lower():
            ctx.register_udf(udf)
    try:
        return ctx.sql_with_options(sql, df.options)  # type: ignore[no-any-return]
    except Exception as e:  # DataFusion raises plain exceptions with its message
        raise _error(e) from None


def _error(e: Exception) -> DBError:
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    for prefix in (
        "Error during planning: ",
        "Schema error: ",
        "DataFusion error: ",
        "Execution error: ",
        "Arrow error: ",
        "SQL error: ",
    ):
        first = first.replace(prefix, "")
    if "Divide by zero" in text:
        return DataError("division by zero", sqlstate="22012")
    if "ParserError" in text:
        return SyntaxError_(f"syntax error: {first}")
    if "Ambiguous reference" in text:
        m = re.search(r"unqualified field (\S+)", text)
        return DBError(f'column reference "{m.group(1) if m else ""}" is ambiguous', "42702")
    if "No field named" in text:
        m = re.search(r"No field named (.+?)\.?(?:\n|$)", text)
        name = m.group(1).replace('"', "") if m else "?"
        return UndefinedColumn(f'column "{name}" does not exist')
    if "Invalid function" in text or "No function matches" in text:
        m = re.search(r"Invalid function '([^']+)'", text)
        return UndefinedFunction(f"function {m.group(1)} does not exist" if m else first)
    if (
        "Cannot infer common" in text
        or "Cannot coerce" in text
        or "There isn't a common type" in text
    ):
        return UndefinedFunction(f"operator does not exist: {first}")
    if "not implemented" in text.lower() or "Unsupported" in text:
        return FeatureNotSupported(first)
    if "Cast error" in text or "Cannot cast" in text:
        return DataError(first, sqlstate="22P02")
    return FeatureNotSupported(first)


def _values(col: pa.ChunkedArray, oid: int) -> list[Any]:
    if pa.types.is_timestamp(col.type):
        # Converted here, not by pyarrow: its time-zone lookup (a std::regex over the
        # zone's name) crashed the process on a worker thread (pyarrow 26).
        tz = dt.UTC if col.type.tz is not None else None
        epoch = dt.datetime(1970, 1, 1, tzinfo=tz)
        micros = pc.cast(col, pa.timestamp("us"), safe=False).cast(pa.int64()).to_pylist()
        return [None if v is None else epoch + dt.timedelta(microseconds=v) for v in micros]
    values = col.to_pylist()
    if oid == t.JSONB:
        return [None if v is None else json.loads(v) for v in values]
    if pa.types.is_date(col.type) or pa.types.is_time(col.type) or pa.types.is_duration(col.type):
        return [None if v is None else str(v) for v in values]
    return values


def describe(session: Session, q: Query, param_oids: list[int]) -> list[Column]:
    tables = {name: _arrow_schema(_visible(session, name)).empty_table() for name in q.tables}
    df = _plan(tables, q.sql(None, q.param_types(tuple(param_oids), session)))
    return _columns(q, df.schema())


def _visible(session: Session, name: str) -> list[Col]:
    found = session.tenant.state.collection(name)
    if found is None:
        raise UndefinedTable(f'relation "{name}" does not exist')
    return _schema(session, name, found[1])


def _columns(q: Query, schema: pa.Schema) -> list[Column]:
    cols: list[Column] = []
    fields = list(schema)
    i = 0
    for name in q.names:
        if name is None:  # a * expands to the fields up to the next private alias
            while i < len(fields) and not fields[i].name.startswith("__nodedb_c"):
                cols.append((fields[i].name, pg_oid(fields[i].type)))
                i += 1
            continue
        cols.append((name, pg_oid(fields[i].type)))
        i += 1
    return cols


async def run(
    session: Session, q: Query, params: list[Any], param_oids: list[int]
) -> tuple[list[Column], list[tuple[Any, ...]]]:
    from nodedb_server.sql.exec.txn import read_rows
    from nodedb_server.sql.exec.values import now_ms

    now = now_ms()
    snapshot: dict[str, tuple[list[Col], Any]] = {}
    for name in q.tables:
        found = session.tenant.state.collection(name)
        if found is None:
            raise UndefinedTable(f'relation "{name}" does not exist')
        engine = found[1]
        cols = _schema(session, name, engine)
        if isinstance(engine, TimeseriesCollection):
            from nodedb_server.sql.exec.timeseries import timeseries_view

            snapshot[name] = (cols, timeseries_view(session, name, engine).table()[0])
        else:
            snapshot[name] = (cols, list(read_rows(session, name, engine, now)))
    sql = q.sql(params, q.param_types(tuple(param_oids), session))

    def execute() -> tuple[list[Column], list[tuple[Any, ...]]]:
        tables = {
            name: rows if isinstance(rows, pa.Table) else _table(rows, cols)
            for name, (cols, rows) in snapshot.items()
        }
        df = _plan(tables, sql)
        try:
            result = df.to_arrow_table()
        except Exception as e:
            raise _error(e) from None
        columns = _columns(q, result.schema)
        data = [_values(result.column(i), oid) for i, (_, oid) in enumerate(columns)]
        return columns, list(zip(*data, strict=True)) if data else []

    return await asyncio.to_thread(execute)
