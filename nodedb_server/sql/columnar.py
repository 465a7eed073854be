"""Reading timeseries collections a column at a time with pyarrow compute.

A SELECT on a timeseries collection first narrows the partitions by the time
range its WHERE implies, then filters and aggregates whole columns:
``time_bucket`` + GROUP BY + COUNT/SUM/AVG/MIN/MAX run as Arrow kernels, not
row by row in Python. Whatever cannot be expressed that way (LIKE, arbitrary
expressions) falls back to the row path with the same results.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from nodedb_server.engines.timeseries import (
    KINDS,
    TimeseriesCollection,
    TimeseriesError,
    to_micros,
    to_python,
)
from nodedb_server.errors import DataError
from nodedb_server.sql import ast
from nodedb_server.sql.expr import (
    Agg,
    And,
    Cast,
    Cmp,
    Const,
    Ctx,
    Expr,
    Field,
    Func,
    In,
    IsNull,
    Not,
    Or,
)
from nodedb_server.sql.scalars import parse_interval

_OPS = {
    "=": "equal",
    "<>": "not_equal",
    "<": "less",
    "<=": "less_equal",
    ">": "greater",
    ">=": "greater_equal",
}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "=", "<>": "<>"}
_PA_AGG = {"sum": "sum", "avg": "mean", "min": "min", "max": "max", "count": "count"}


def constant(e: Expr) -> bool:
    """True if ``e`` reads no field (so it can be evaluated once, before the scan)."""
    return not any(isinstance(n, Field) for n in e.walk())


def _micros(v: Any) -> int | None:
    if v is None:
        return None
    try:
        return to_micros(v)
    except TimeseriesError as e:
        raise DataError(str(e)) from None


def time_bounds(
    where: Expr | None, engine: TimeseriesCollection, ctx: Ctx
) -> tuple[int | None, int | None]:
    """The [low, high] time range (µs, inclusive) the WHERE's conjuncts imply."""
    lo: int | None = None
    hi: int | None = None
    stack = [where] if where is not None else []
    while stack:
        e = stack.pop()
        if isinstance(e, And):
            stack += [e.left, e.right]
            continue
        if not isinstance(e, Cmp):
            continue
        for a, b, op in ((e.left, e.right, e.op), (e.right, e.left, _FLIP[e.op])):
            if isinstance(a, Field) and a.name == engine.time_key and constant(b):
                v = _micros(b.eval({}, ctx))
                if v is None:
                    continue
                if op in (">", ">=", "="):
                    low = v + 1 if op == ">" else v
                    lo = low if lo is None else max(lo, low)
                if op in ("<", "<=", "="):
                    high = v - 1 if op == "<" else v
                    hi = high if hi is None else min(hi, high)
    return lo, hi


def _scalar(v: Any, kind: str) -> pa.Scalar:
    if kind == "timestamp":
        return pa.scalar(_micros(v), pa.int64()).cast(KINDS["timestamp"])
    if kind in ("int", "float") and isinstance(v, str):
        try:
            v = float(v) if kind == "float" or "." in v else int(v)
        except ValueError:
            raise DataError(f'invalid input syntax for a number: "{v[:40]}"') from None
    return pa.scalar(v, KINDS[kind])


def arrow_filter(e: Expr, engine: TimeseriesCollection, ctx: Ctx) -> pc.Expression | None:
    """The WHERE as an Arrow expression, or None where it cannot be one."""
    if isinstance(e, And | Or):
        a, b = arrow_filter(e.left, engine, ctx), arrow_filter(e.right, engine, ctx)
        if a is None or b is None:
            return None
        return (a & b) if isinstance(e, And) else (a | b)
    if isinstance(e, Not):
        inner = arrow_filter(e.inner, engine, ctx)
        return None if inner is None else ~inner
    if isinstance(e, IsNull) and isinstance(e.inner, Field) and e.inner.name in engine.columns:
        return pc.field(e.inner.name).is_null()
    if isinstance(e, In) and isinstance(e.inner, Field) and e.inner.name in engine.columns:
        if not all(constant(i) for i in e.items):
            return None
        kind = engine.columns[e.inner.name]
        if kind == "timestamp":  # through int64: see engines.timeseries.to_python
            micros = [_micros(i.eval({}, ctx)) for i in e.items]
            return pc.field(e.inner.name).isin(pa.array(micros, pa.int64()).cast(KINDS[kind]))
        values = [_scalar(i.eval({}, ctx), kind) for i in e.items]
        return pc.field(e.inner.name).isin(pa.array([v.as_py() for v in values], KINDS[kind]))
    if isinstance(e, Cmp):
        for a, b, op in ((e.left, e.right, e.op), (e.right, e.left, _FLIP[e.op])):
            if isinstance(a, Field) and a.name in engine.columns and constant(b):
                v = b.eval({}, ctx)
                if v is None:
                    return pc.scalar(False)
                scalar = _scalar(v, engine.columns[a.name])
                return getattr(pc, _OPS[op])(pc.field(a.name), scalar)
    return None


def _bucket_width(e: Func, ctx: Ctx) -> int:
    spec = e.args[0].eval({}, ctx)
    delta = spec if isinstance(spec, dt.timedelta) else parse_interval(str(spec))
    width = int(delta.total_seconds() * 1_000_000)
    if width <= 0:
        raise DataError("time_bucket() needs a positive interval")
    return width


def _key_column(
    e: Expr, table: pa.Table, engine: TimeseriesCollection, ctx: Ctx
) -> pa.Array | None:
    if isinstance(e, Field) and e.name in engine.columns:
        return table.column(e.name)
    if (
        isinstance(e, Func)
        and e.name == "time_bucket"
        and len(e.args) == 2
        and isinstance(e.args[1], Field)
        and e.args[1].name == engine.time_key
        and isinstance(e.args[0], Const | Cast)
        and constant(e.args[0])
    ):
        width = _bucket_width(e, ctx)
        ts = pc.cast(table.column(engine.time_key), pa.int64())
        q = pc.floor(pc.divide(pc.cast(ts, pa.float64()), float(width)))
        return pc.multiply(pc.cast(q, pa.int64()), width).cast(KINDS["timestamp"])
    return None


def vector_aggregate(
    stmt: ast.Select, table: pa.Table, engine: TimeseriesCollection, ctx: Ctx
) -> list[tuple[Any, ...]] | None:
    """GROUP BY and aggregates as Arrow kernels; None if the query needs the row path."""
    keys = []
    for g in stmt.group_by:
        col = _key_column(g, table, engine, ctx)
        if col is None:
            return None
        keys.append((g, col))
    plan: list[tuple[str, int]] = []  # per select item: ("key", i) or ("agg", j)
    aggs: list[Agg] = []
    for item in stmt.items:
        e = item.expr
        key_index = next((i for i, (g, _) in enumerate(keys) if g is e or _same_field(g, e)), None)
        if key_index is not None:
            plan.append(("key", key_index))
        elif (
            isinstance(e, Agg)
            and not e.distinct
            and e.name in _PA_AGG
            and (e.arg is None or (isinstance(e.arg, Field) and e.arg.name in engine.columns))
        ):
            plan.append(("agg", len(aggs)))
            aggs.append(e)
        else:
            return None
    if any(o.expr is not None for o in stmt.order_by):
        return None
    work = pa.table(
        {f"k{i}": col for i, (_, col) in enumerate(keys)} or {"_": pa.nulls(table.num_rows)}
    )
    specs: list[tuple[Any, str]] = []
    for j, a in enumerate(aggs):
        if not isinstance(a.arg, Field):
            specs.append(([], "count_all"))
        else:
            work = work.append_column(f"a{j}", table.column(a.arg.name))
            specs.append((f"a{j}", _PA_AGG[a.name]))
    if not keys:
        return [tuple(_whole(a, work, j) for j, a in enumerate(aggs))] if plan else []
    grouped = work.group_by([f"k{i}" for i in range(len(keys))], use_threads=False).aggregate(specs)
    names = grouped.column_names
    out_cols = []
    for kind, i in plan:
        if kind == "key":
            out_cols.append(to_python(grouped.column(f"k{i}")))
        else:
            name = "count_all" if aggs[i].arg is None else f"a{i}_{_PA_AGG[aggs[i].name]}"
            out_cols.append(to_python(grouped.column(names.index(name))))
    return [_fix_types(row, plan, aggs) for row in zip(*out_cols, strict=True)]


def _same_field(g: Expr, e: Expr) -> bool:
    return isinstance(g, Field) and isinstance(e, Field) and g.name == e.name


def _whole(a: Agg, work: pa.Table, j: int) -> Any:
    if a.arg is None:
        return work.num_rows
    col = work.column(f"a{j}")
    if a.name == "count":
        return pc.count(col).as_py()
    if col.null_count == len(col):
        return None
    if pa.types.is_timestamp(col.type) and a.name in ("min", "max"):
        return to_python(pa.array([{"min": pc.min, "max": pc.max}[a.name](col)]))[0]
    return {"sum": pc.sum, "avg": pc.mean, "min": pc.min, "max": pc.max}[a.name](col).as_py()


def _fix_types(
    row: tuple[Any, ...], plan: list[tuple[str, int]], aggs: list[Agg]
) -> tuple[Any, ...]:
    """AVG is float8 even over integers, as in PostgreSQL."""
    out = list(row)
    for pos, (kind, i) in enumerate(plan):
        if kind == "agg" and aggs[i].name == "avg" and out[pos] is not None:
            out[pos] = float(out[pos])
    return tuple(out)
