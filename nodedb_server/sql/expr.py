"""Expressions: a small tree evaluated against a row, built from sqlglot's tree.

Comparison follows PostgreSQL where schemaless data lets it: NULL compares
as unknown (None), and an untyped text value (a parameter sent as text, as
pg8000 does) compared with a number is read as that number, like an
``unknown`` literal in PostgreSQL takes the type of the other side.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from nodedb_server import types as t
from nodedb_server.errors import (
    DataError,
    FeatureNotSupported,
    SyntaxError_,
    UndefinedFunction,
)
from nodedb_server.sql.functions import FUNCTIONS
from nodedb_server.sql.scalars import number, parse_interval


@dataclass
class Ctx:
    """What an expression may read besides the row."""

    params: list[Any] = field(default_factory=list)
    session: Any = None  # the Session, for functions that read it (functions.py)
    engine: Any = None  # the collection a SELECT reads, if any (vector_distance)
    aggs: dict[int, Any] | None = None
    excluded: dict[str, Any] | None = None


class Expr:
    oid_hint: int = t.TEXT

    def eval(self, row: dict[str, Any], ctx: Ctx) -> Any:
        raise NotImplementedError

    def children(self) -> list[Expr]:
        return []

    def walk(self) -> list[Expr]:
        out: list[Expr] = [self]
        for c in self.children():
            out += c.walk()
        return out


@dataclass(eq=False)
class Const(Expr):
    value: Any

    def eval(self, row: dict[str, Any], ctx: Ctx) -> Any:
        return self.value


@dataclass(eq=False)
class Param(Expr):
    index: int  # zero-based

    def eval(self, row: dict[str, Any], ctx: Ctx) -> Any:
        try:
            return ctx.params[self.index]
        except IndexError:
            raise SyntaxError_(f"there is no parameter ${self.index + 1}") from None


@dataclass(eq=False)
class Field(Expr):
    name: str
    table: str | None = None

    def eval(self, row: dict[str, Any], ctx: Ctx) -> Any:
        if self.table == "excluded" and ctx.excluded is not None:
            return ctx.excluded.get(self.name)
        return row.get(self.name)


def _nbase(x: decimal.Decimal) -> tuple[int, int]:
    """(weight, first digit) of x in PostgreSQL's base-10000 numeric digits."""
    if not x:
        return 0, 0
    weight = x.adjusted() // 4
    return weight, int(abs(x).scaleb(-4 * weight)) % 10000


def numeric_div(a: decimal.Decimal, b: decimal.Decimal) -> decimal.Decimal:
    """a / b as PostgreSQL's numeric division rounds it: to at least 16 significant
    digits, and no fewer places than either operand has (select_div_scale)."""
    (w1, d1), (w2, d2) = _nbase(a), _nbase(b)
    qweight = w1 - w2 - (1 if d1 <= d2 else 0)
    exponents = [x.as_tuple().exponent for x in (a, b)]
    scales = [-e for e in exponents if isinstance(e, int)]
    rscale = min(max(16 - qweight * 4, *scales, 0), 1000)
    with decimal.localcontext() as ctx:
        ctx.prec = 1100
        return (a / b).quantize(decimal.Decimal(1).scaleb(-rscale), decimal.ROUND_HALF_UP)


def _align(a: Any, b: Any) -> tuple[Any, Any]:
    ta, tb = type(a), type(b)
    if ta is tb:
        return a, b
    if (
        isinstance(a, str)
        and isinstance(b, int | float | decimal.Decimal)
        and not isinstance(b, bool)
    ):
        return number(a), b
    if (
        isinstance(b, str)
        and isinstance(a, int | float | decimal.Decimal)
        and not isinstance(a, bool)
    ):
        return a, number(b)
    if isinstance(a, bool) and isinstance(b, str):
        return a, t.parse_bool(b)
    if isinstance(b, bool) and isinstance(a, str):
        return t.parse_bool(a), b
    if isinstance(a, dt.datetime) and isinstance(b, str):
        return a, t.parse_timestamp(b, local=True)
    if isinstance(b, dt.datetime) and isinstance(a, str):
        return t.parse_timestamp(a, local=True), b
    # a numeric column's Decimal against a float literal: compared as the literal's
    # decimal text reads (0.30 = 0.3), not as the float's binary value
    if isinstance(a, decimal.Decimal) and isinstance(b, float):
        return a, decimal.Decimal(repr(b))
    if isinstance(b, decimal.Decimal) and isinstance(a, float):
        return decimal.Decimal(repr(a)), b
    return a, b


def compare(op: str, a: Any, b: Any) -> bool | None:
    if a is None or b is None:
        return None
    a, b = _align(a, b)
    try:
        if op == "=":
            return bool(a == b)
        if op == "<>":
            return bool(a != b)
        if op == "<":
            return bool(a < b)
        if op == "<=":
            return bool(a <= b)
        if op == ">":
            return bool(a > b)
        if op == ">=":
            return bool(a >= b)
    except TypeError:
        if op in ("=", "<>"):
            return op == "<>"
        raise DataError(f"cannot compare {type(a).__name__} with {type(b).__name__}") from None
    raise AssertionError(op)


@dataclass(eq=False)
class Cmp(Expr):
    op: str
    left: Expr
    right: Expr
    oid_hint = t.BOOL

    def eval(self, row: dict[str, Any], ctx: Ctx) -> Any:
        return compare(self.op, self.left.eval(row, ctx), self.right.eval(row, ctx))

    def children(self) -> list[Expr]:
        return [self.left, self.right]


@dataclass(eq=False)
class And(Expr):
    left: Expr
    right: Expr
    oid_hint = t.BOOL

    def eval(self, row: dict[str, Any], ctx: Ctx) -> Any:
        a = self.left.eval(row, ctx)
        if a is False:
            return False
        b = self.right.eval(row, ctx)
        if b is False:
            return False
        return None if a is None or b is None else True

    def children(self) -> list[Expr]:
        return [self.left, self.right]


@dataclass(eq=False)
class Or(Expr):
    left: Expr
    right: Expr
    oid_hint = t.BOOL

    def eval(self, row: dict[str, Any], ctx: Ctx) -> Any:
        a = self.left.eval(row, ctx)
        if a is True:
            return True
        b = self.right.eval(row, ctx)
        if b is True:
            return True
        return None if a is None or b is None else False

    def children(self) -> list[Expr]:
        return [self.left, self.right]


@dataclass(eq=False)
class Not(Expr):
    inner: Expr
    oid_hint = t.BOOL

    def eval(self, row: dict[str, Any], ctx: Ctx) -> Any:
        v = self.inner.eval(row, ctx)
        return None if v is None else not v

    def children(self) -> list[Expr]:
        return [self.inner]


@dataclass(eq=False)
class In(Expr):
    inner: Expr
    items: list[Expr]
    oid_hint = t.BOOL
    lookup_type: type | None = field(default=None, init=False, repr=False)
    lookup: frozenset[Any] = field(default=frozenset(), init=False, repr=False)

    def __post_init__(self) -> None:
        # Constants all of one type are also held as a set: a value of that same type
        # compares by plain equality, so a lookup gives the answer the comparisons would,
        # where a long list compared item by item would cost each row a pass over it.
        kinds = {type(i.value) if isinstance(i, Const) else None for i in self.items}
        kind = kinds.pop() if len(kinds) == 1 else None
        self.lookup_type = kind if kind in (int, str) else None
        if self.lookup_type is not None:
            self.lookup = frozenset(i.value for i in self.items if isinstance(i, Const))

    def eval(self, row: dict[str, Any], ctx: Ctx) -> Any:
        v = self.inner.eval(row, ctx)
        if v is None:
            return None
        if type(v) is self.lookup_type:
            return v in self.lookup
        saw_null = False
        for item in self.items:
            r = compare("=", v, item.eval(row, ctx))
            if r:
                return True
            saw_null = saw_null or r is None
        return None if saw_null else False

    def children(self) -> list[Expr]:
        return [self.inner, *self.items]


def like_regex(pattern: str, case_insensitive: bool) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
        i += 1
    return re.compile("".join(out), re.S | (re.I if case_insensitive else 0))


@dataclass(eq=False)
class Like(Expr):
    inner: Expr
    pattern: Expr
    ilike: bool = False
    oid_hint = t.BOOL
    _cache: dict[str, re.Pattern[str]] = field(default_factory=dict)

    def eval(self, row: dict[str, Any], ctx: Ctx) -> Any:
        v = self.inner.eval(row, ctx)
        p = self.pattern.eval(row, ctx)
        if v is None or p is None:
            return None
        rx = self._cache.get(p)
        if rx is None:
            rx = self._cache[p] = like_regex(str(p), self.ilike)
        return rx.fullmatch(v if isinstance(v, str) else str(v)) is not None

    def children(self) -> list[Expr]:
        return [self.inner, self.pattern]


@dataclass(eq=False)
class IsNull(Expr):
    inner: Expr
    oid_hint = t.BOOL

    def eval(self, row: dict[str, Any], ctx: Ctx) -> Any:
        return self.inner.eval(row, ctx) is None

    def children(self) -> list[Expr]:
        return [self.inner]


def _arith(op: str, a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if op == "||":
        return f"{t.encode_text(t.TEXT, a)}{t.encode_text(t.TEXT, b)}"
    if isinstance(a, dt.datetime) or isinstance(b, dt.datetime):
        if op == "+" and isinstance(b, dt.timedelta):
            return a + b
        if op == "-" and isinstance(b, dt.timedelta | dt.datetime):
            return a - b
        raise DataError("unsupported timestamp arithmetic")
    a, b = number(a), number(b)
    if (
        isinstance(a, bool)
        or isinstance(b, bool)
        or not all(isinstance(x, int | float | decimal.Decimal) for x in (a, b))
    ):
        raise DataError(f"operator {op} needs numbers")
    try:
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            if isinstance(a, int) and isinstance(b, int):
                q = abs(a) // abs(b)
                return q if (a >= 0) == (b >= 0) else -q
            return a / b
        if op == "%":
            return a - b * int(a / b) if isinstance(a, int) and isinstance(b, int) else a % b
    except ZeroDivisionError:
        raise DataError("division by zero", sqlstate="22012") from None
    raise AssertionError(op)


@dataclass(eq=False)
class Arith(Expr):
    op: str
    left: Expr
    right: Expr

    def eval(self, row: dict[str, Any], ctx: Ctx) -> Any:
        return _arith(self.op, self.left.eval(row, ctx), self.right.eval(row, ctx))

    def children(self) -> list[Expr]:
        return [self.left, self.right]


@dataclass(eq=False)
class Neg(Expr):
    inner: Expr

    def eval(self, row: dict[str, Any], ctx: Ctx) -> Any:
        v = number(self.inner.eval(row, ctx))
        return None if v is None else -v

    def children(self) -> list[Expr]:
        return [self.inner]


def cast_value(v: Any, oid: int) -> Any:
    """Convert a value to a type, as ``CAST`` does; bad text is 22P02."""
    if v is None:
        return None
    if oid in t.TEXTLIKE:
        return v if isinstance(v, str) else t.encode_text(t.TEXT, v)
    if isinstance(v, str):
        return t.decode_text(oid, v)
    try:
        if oid in (t.INT8, t.INT4, t.INT2):
            return int(round(v)) if isinstance(v, float) else int(v)
        if oid in (t.FLOAT8, t.FLOAT4):
            return float(v)
        if oid == t.NUMERIC:
            return t.numeric_value(decimal.Decimal(str(v)))
        if oid == t.BOOL:
            return bool(v)
    except (TypeError, ValueError):
        raise DataError(f"cannot cast {type(v).__name__} to {t.TYPE_NAMES.get(oid, oid)}") from None
    return v


INTERVAL = -1  # a cast target that is not a wire type


@dataclass(eq=False)
class Cast(Expr):
    inner: Expr
    oid: int

    def __post_init__(self) -> None:
        self.oid_hint = t.TEXT if self.oid == INTERVAL else self.oid

    def eval(self, row: dict[str, Any], ctx: Ctx) -> Any:
        v = self.inner.eval(row, ctx)
        if self.oid == INTERVAL:
            return v if isinstance(v, dt.timedelta) or v is None else parse_interval(str(v))
        return cast_value(v, self.oid)

    def children(self) -> list[Expr]:
        return [self.inner]


@dataclass(eq=False)
class ArrayExpr(Expr):
    items: list[Expr]
    oid_hint = t.JSONB

    def eval(self, row: dict[str, Any], ctx: Ctx) -> Any:
        return [i.eval(row, ctx) for i in self.items]

    def children(self) -> list[Expr]:
        return list(self.items)


@dataclass(eq=False)
class ObjectExpr(Expr):
    fields: list[tuple[str, Expr]]
    oid_hint = t.JSONB

    def eval(self, row: dict[str, Any], ctx: Ctx) -> Any:
        return {k: v.eval(row, ctx) for k, v in self.fields}

    def children(self) -> list[Expr]:
        return [v for _, v in self.fields]


@dataclass(eq=False)
class Func(Expr):
    name: str
    args: list[Expr]

    def __post_init__(self) -> None:
        self.fn = FUNCTIONS.get(self.name)
        if self.fn is not None:
            self.oid_hint = self.fn.result

    def eval(self, row: dict[str, Any], ctx: Ctx) -> Any:
        fn = self.fn
        if fn is None:
            raise UndefinedFunction(f"function {self.name}() does not exist")
        if fn.session:
            return fn.impl(ctx, *(a.eval(row, ctx) for a in self.args))
        return fn.impl(*(a.eval(row, ctx) for a in self.args))

    def children(self) -> list[Expr]:
        return list(self.args)


def call(name: str, args: list[Expr]) -> Func:
    """A call of a function of the table, with as many arguments as it takes (42883)."""
    fn = FUNCTIONS.get(name)
    if fn is None:
        raise UndefinedFunction(f"function {name}() does not exist")
    if fn.arity is not None and len(args) != fn.arity:
        raise UndefinedFunction(
            f"function {name}() takes {fn.arity} argument{'s' if fn.arity != 1 else ''}, "
            f"not {len(args)}"
        )
    return Func(name, args)


AGGREGATES = frozenset({"count", "sum", "avg", "min", "max"})


@dataclass(eq=False)
class Agg(Expr):
    name: str
    arg: Expr | None  # None for COUNT(*)
    distinct: bool = False

    def eval(self, row: dict[str, Any], ctx: Ctx) -> Any:
        if ctx.aggs is None:
            raise SyntaxError_(f"aggregate {self.name}() is not allowed here", sqlstate="42803")
        return ctx.aggs[id(self)]

    def children(self) -> list[Expr]:
        return [self.arg] if self.arg is not None else []

    def compute(self, rows: list[dict[str, Any]], ctx: Ctx) -> Any:
        if self.arg is None:
            return len(rows)
        values = [v for v in (self.arg.eval(r, ctx) for r in rows) if v is not None]
        if self.distinct:
            seen: list[Any] = []
            for v in values:
                if v not in seen:
                    seen.append(v)
            values = seen
        if self.name == "count":
            return len(values)
        if not values:
            return None
        if self.name in ("min", "max"):
            try:
                return min(values) if self.name == "min" else max(values)
            except TypeError:
                raise DataError(f"{self.name}() over values of different types") from None
        nums = [number(v) for v in values]
        if any(
            isinstance(v, bool) or not isinstance(v, int | float | decimal.Decimal) for v in nums
        ):
            raise DataError(f"{self.name}() needs numbers")
        total = sum(nums)
        if self.name == "sum":
            return total
        if isinstance(total, decimal.Decimal):  # avg of a numeric column stays exact
            return numeric_div(total, decimal.Decimal(len(nums)))
        return float(total) / len(nums)


@dataclass(eq=False)
class Star(Expr):
    def eval(self, row: dict[str, Any], ctx: Ctx) -> Any:
        raise SyntaxError_("* is not allowed here")


# ---- from sqlglot ------------------------------------------------------------------------

_CMP = {exp.EQ: "=", exp.NEQ: "<>", exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<="}
_ARITH = {exp.Add: "+", exp.Sub: "-", exp.Mul: "*", exp.Div: "/", exp.Mod: "%", exp.DPipe: "||"}
_NAMED_FUNCS = {
    exp.CurrentDatabase: "current_database",
    exp.CurrentUser: "current_user",
    exp.CurrentVersion: "version",
    exp.CurrentTimestamp: "now",
    exp.SessionUser: "session_user",
    exp.CurrentSchema: "current_schema",
    exp.Lower: "lower",
    exp.Upper: "upper",
    exp.Length: "length",
    exp.Abs: "abs",
    exp.Coalesce: "coalesce",
}
_AGG_CLASSES = {exp.Count: "count", exp.Sum: "sum", exp.Avg: "avg", exp.Min: "min", exp.Max: "max"}


def cast_oid(dtype: exp.DataType) -> int:
    name = dtype.sql("postgres").lower()
    base = re.sub(r"\(.*\)", "", name).strip()
    if base == "interval":
        return INTERVAL
    if base.endswith("[]"):
        elem = t.CAST_NAMES.get(base[:-2].strip())
        arrays = {v: k for k, v in t.ARRAY_ELEMENT.items()}
        if elem in arrays:
            return arrays[elem]
    oid = t.CAST_NAMES.get(base)
    if oid is None:
        raise FeatureNotSupported(f"type {base} is not supported")
    return oid


# How deep a statement's expression may nest. Pure Python meets its recursion limit at
# about this depth (a chain of 999 ORs is answered, of 1,000 is 54001); this module
# compiled with mypyc (nodedb_server/_hot.py) does not count its recursion at all, and a
# 100,000-term OR overflowed the C stack and killed the server. Checked once a tree,
# without recursing, so that every expression built here, and every walk or evaluation
# of it, stays this shallow.
MAX_EXPR_DEPTH = 1000


def from_sqlglot(node: Any) -> Expr:
    """Our expression for a sqlglot node; RecursionError (54001 where it is caught) if it
    nests deeper than MAX_EXPR_DEPTH."""
    stack = [(node, 1)]
    while stack:
        n, depth = stack.pop()
        if depth > MAX_EXPR_DEPTH:
            raise RecursionError(f"an expression nests deeper than {MAX_EXPR_DEPTH} levels")
        if isinstance(n, exp.Expression):
            stack.extend((child, depth + 1) for child in n.iter_expressions())
    return _convert(node)


def _convert(node: Any) -> Expr:
    """Our expression for a sqlglot node (sqlglot's node attributes are dynamic, hence Any)."""
    cls: Any = type(node)
    result: Expr
    if cls is exp.Paren:
        return _convert(node.this)
    if cls is exp.Literal:
        if node.is_string:
            return Const(node.this)
        text = node.this
        try:
            return Const(int(text))
        except ValueError:
            return Const(float(text))
    if cls is exp.Null:
        return Const(None)
    if cls is exp.Boolean:
        return Const(bool(node.this))
    if cls is exp.Parameter or cls is exp.Placeholder:
        inner = node.this
        text = inner.this if isinstance(inner, exp.Expression) else str(inner)
        if not str(text).isdigit() or int(text) < 1:
            raise SyntaxError_(f"bad parameter reference {node.sql()}")
        return Param(int(text) - 1)
    if cls is exp.Column:
        if isinstance(node.this, exp.Star):
            return Star()
        return Field(node.name, node.table or None)
    if cls is exp.Star:
        return Star()
    if cls in _CMP:
        return Cmp(_CMP[cls], _convert(node.this), _convert(node.expression))
    if cls in _ARITH:
        return Arith(_ARITH[cls], _convert(node.this), _convert(node.expression))
    if cls is exp.And:
        return And(_convert(node.this), _convert(node.expression))
    if cls is exp.Or:
        return Or(_convert(node.this), _convert(node.expression))
    if cls is exp.Not:
        return Not(_convert(node.this))
    if cls is exp.Neg:
        inner = _convert(node.this)
        if isinstance(inner, Const) and isinstance(inner.value, int | float):
            return Const(-inner.value)
        return Neg(inner)
    if cls is exp.In:
        if node.args.get("query") is not None:
            raise FeatureNotSupported("IN (SELECT ...) is not supported")
        result = In(_convert(node.this), [_convert(i) for i in node.expressions])
        return Not(result) if node.args.get("negate") else result
    if cls in (exp.Like, exp.ILike):
        result = Like(_convert(node.this), _convert(node.expression), cls is exp.ILike)
        return Not(result) if node.args.get("negate") else result
    if cls is exp.Is:
        if not isinstance(node.expression, exp.Null):
            raise FeatureNotSupported("only IS [NOT] NULL is supported")
        result = IsNull(_convert(node.this))
        return Not(result) if node.args.get("negate") else result
    if cls is exp.Between:
        inner = _convert(node.this)
        result = And(
            Cmp(">=", inner, _convert(node.args["low"])),
            Cmp("<=", inner, _convert(node.args["high"])),
        )
        return Not(result) if node.args.get("negate") else result
    if cls in (exp.Cast, exp.TryCast):
        return Cast(_convert(node.this), cast_oid(node.to))
    if cls is exp.Array:
        return ArrayExpr([_convert(e) for e in node.expressions])
    if cls is exp.Interval:
        return Cast(Const(f"{node.this.name} {node.unit.name if node.unit else ''}"), INTERVAL)
    if cls in _AGG_CLASSES:
        arg = node.this
        distinct = isinstance(arg, exp.Distinct)
        if distinct:
            arg = arg.expressions[0]
        if isinstance(arg, exp.Star) or arg is None:
            return Agg(_AGG_CLASSES[cls], None)
        return Agg(_AGG_CLASSES[cls], _convert(arg), distinct)
    if (
        cls is exp.Dot
        and isinstance(node.this, exp.Identifier)
        and node.this.name.lower() == "pg_catalog"
        and isinstance(node.expression, exp.Func)
    ):
        # pg_catalog.version(), as drivers call it (SQLAlchemy's first query): the
        # built-in functions are pg_catalog's, so the schema names the same one.
        return _convert(node.expression)
    if cls in _NAMED_FUNCS:
        args = [_convert(a) for a in node.iter_expressions()]
        return call(_NAMED_FUNCS[cls], args)
    if cls is exp.Anonymous:
        name = str(node.this).lower()
        if name in AGGREGATES:
            raise SyntaxError_(f"bad use of aggregate {name}()")
        return call(name, [_convert(a) for a in node.expressions])
    if isinstance(node, exp.Func):
        raise UndefinedFunction(f"function {node.sql_name().lower()}() is not supported")
    raise FeatureNotSupported(f"expression {node.sql('postgres')[:60]!r} is not supported")
