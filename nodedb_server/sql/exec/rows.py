"""SELECT, INSERT, UPDATE, DELETE and EXPLAIN on document and key-value collections."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from nodedb_server import types as t
from nodedb_server.engines.base import Row, RowCollection, type_tag
from nodedb_server.engines.kv import KvCollection
from nodedb_server.engines.timeseries import (
    TimeseriesCollection,
)
from nodedb_server.errors import (
    DBError,
    SyntaxError_,
    duplicate_key,
)
from nodedb_server.sql import ast
from nodedb_server.sql.describe import (
    OID_TAGS,
    ast_cast,
    field_oid,
    fitted,
    infer,
    param_types,
    tags_oid,
    typed_target,
)
from nodedb_server.sql.exec.argcheck import int_clause
from nodedb_server.sql.exec.system_views import system_view, system_view_rows
from nodedb_server.sql.exec.timeseries import (
    insert_timeseries,
    timeseries_returning,
    timeseries_rows,
    timeseries_view,
)
from nodedb_server.sql.exec.txn import (
    Intent,
    Recompute,
    Txn,
    commit_or_buffer,
    fold,
    read_expiry,
    read_row,
    read_rows,
)
from nodedb_server.sql.exec.values import (
    assign,
    check_table_fields,
    key_value,
    live_row,
    new_row,
    now_ms,
)
from nodedb_server.sql.expr import (
    Const,
    Ctx,
    Expr,
    Field,
    Func,
    Star,
)
from nodedb_server.sql.plan import (
    Access,
    PartitionScan,
    RowsAccess,
    ViewScan,
    choose_probe,
    plan_select,
    plan_write,
)
from nodedb_server.sql.registry import Exprs, spec_of, statement
from nodedb_server.sql.result import Column, Result

if TYPE_CHECKING:
    from nodedb_server.sql.session import Session


# Rows examined between yields to the event loop, so a long scan can be
# cancelled and does not stall other sessions for long.
YIELD_EVERY = 5000


def _sort_key(v: Any) -> tuple[int, Any]:
    if v is None:
        return (9, 0)
    if isinstance(v, bool):
        return (1, v)
    if isinstance(v, int | float):
        return (2, v)
    if isinstance(v, str):
        return (3, v)
    if isinstance(v, dt.datetime):
        return (4, v)
    if isinstance(v, bytes):
        return (5, v)
    return (6, t.to_json(v))


class _Desc:
    """Reverses the order of a sort key (for DESC with mixed types)."""

    __slots__ = ("k",)

    def __init__(self, k: Any):
        self.k = k

    def __lt__(self, other: _Desc) -> bool:
        return bool(other.k < self.k)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self.k == other.k


def select_columns(s: Session, stmt: ast.Select, param_oids: list[int]) -> list[Column]:
    if stmt.source is not None and stmt.source.startswith("_system."):
        view_cols, _ = system_view(s, stmt.source, rows=False)
        if stmt.star:
            return view_cols
        types = dict(view_cols)
        return [(it.name, infer(it.expr, types, param_oids)) for it in stmt.items]
    engine = s.any_collection(stmt.source) if stmt.source else None
    aliases = [  # output names ORDER BY may use; a bare field's own name is none
        it.name
        for it in stmt.items
        if not isinstance(it.expr, Star)
        and not (isinstance(it.expr, Field) and it.expr.name == it.name)
    ]
    check_table_fields(engine, select_exprs(s, stmt)[0], aliases)
    if stmt.source and isinstance(engine, TimeseriesCollection):
        engine = timeseries_view(s, stmt.source, engine)  # columns it added
    cols: list[Column] = []
    for it in stmt.items:
        if isinstance(it.expr, Star):
            if engine is None:
                raise SyntaxError_("SELECT * needs a FROM clause")
            cols += [(f, field_oid(engine, f)) for f in engine.fields()]
        else:
            cols.append((it.name, infer(it.expr, engine, param_oids)))
    return cols


async def matching_rows(s: Session, step: RowsAccess, where: Expr | None, ctx: Ctx) -> list[Row]:
    """The rows of a collection step matching ``where`` (its Filter); ``s.examined``
    counts the rows looked at."""
    now = now_ms()
    coll, access = step.collection, step.access
    engine = s.collection(coll)
    if access.kind == "scan":
        out: list[Row] = []
        rows_read = iter(read_rows(s, coll, engine, now))
        examined = 0
        while chunk := list(itertools.islice(rows_read, YIELD_EVERY)):
            examined += len(chunk)
            if where is None:
                out += chunk
            else:
                out += [row for row in chunk if where.eval(row, ctx) is True]
            if len(chunk) == YIELD_EVERY:
                await asyncio.sleep(0)
        s.examined = examined
        return out
    if access.kind == "key":
        keys: Iterable[Any] = (key_value(engine, k.eval({}, ctx)) for k in access.values)
    else:
        keys = index_keys(engine, access, ctx)
    seen: set[Any] = set()
    rows = []
    for key in keys:
        if key in seen:
            continue
        seen.add(key)
        found = read_row(s, coll, engine, key, now)
        if found is not None and (where is None or where.eval(found, ctx) is True):
            rows.append(found)
    over = s.txn.overlay.get(coll) if s.txn is not None else None
    if access.kind == "index" and over:
        for key, entry in over.items():
            pending = live_row(entry, now)
            if (
                key not in seen
                and pending is not None
                and (where is None or where.eval(pending, ctx) is True)
            ):
                seen.add(key)
                rows.append(pending)
    s.examined = len(seen)
    return rows


def index_keys(engine: RowCollection, access: Access, ctx: Ctx) -> Iterable[Any]:
    """Keys from the probe that expects the fewest rows for these parameter values."""
    probe, values = choose_probe(engine, access, ctx)
    index = engine.indexes[probe.field]
    if probe.values:
        keys: set[Any] = set()
        for v in values:
            keys |= index.equal(v)
        return keys
    low, high = values
    if (probe.low is not None and low is None) or (probe.high is not None and high is None):
        return ()  # a NULL bound matches nothing
    return list(index.range(low, probe.low_inclusive, high, probe.high_inclusive))


def select_exprs(s: Session, stmt: ast.Select) -> Exprs:
    exprs = [it.expr for it in stmt.items] + list(stmt.group_by)
    exprs += [o.expr for o in stmt.order_by if o.expr is not None]
    exprs += [stmt.where] if stmt.where is not None else []
    # LIMIT $1 and OFFSET $2 are counts.
    exprs += [ast_cast(e, t.INT8) for e in (stmt.limit, stmt.offset) if e is not None]
    return exprs, []


def insert_rows(s: Session, stmt: ast.Insert) -> list[list[tuple[str, Expr]]]:
    """An INSERT's rows as (column, value) pairs; without a column list, a table's
    columns in their order take the values (and the rest their defaults)."""
    if not stmt.positional or stmt.query is not None:
        return stmt.rows
    engine = s.any_collection(stmt.collection)
    if not isinstance(engine, RowCollection) or engine.table is None:
        raise SyntaxError_("INSERT needs a field list: INSERT INTO c (f, ..) VALUES (..)")
    names = engine.fields()
    if any(len(row) > len(names) for row in stmt.rows):
        raise SyntaxError_("INSERT has more expressions than target columns")
    return [[(names[i], e) for i, (_, e) in enumerate(row)] for row in stmt.rows]


async def selected_rows(
    s: Session, stmt: ast.Insert, params: list[Any]
) -> list[list[tuple[str, Expr]]]:
    """The rows of INSERT .. SELECT's query, as (column, value) pairs."""
    assert stmt.query is not None
    names: list[str] = list(stmt.columns)
    if not names:
        engine = s.any_collection(stmt.collection)
        if not isinstance(engine, RowCollection) or engine.table is None:
            raise SyntaxError_("INSERT needs a field list: INSERT INTO c (f, ..) SELECT ..")
        names = engine.fields()
    result = await s.execute(stmt.query, params)
    width = len(result.columns or [])
    if width > len(names):
        raise SyntaxError_("INSERT has more expressions than target columns")
    if width < len(names) and stmt.columns:
        raise SyntaxError_("INSERT has more target columns than expressions")
    return [[(n, Const(v)) for n, v in zip(names, row, strict=False)] for row in result.rows]


def insert_exprs(s: Session, stmt: ast.Insert) -> Exprs:
    pairs = [p for row in insert_rows(s, stmt) for p in row]
    if stmt.on_conflict is not None:
        pairs += stmt.on_conflict.assignments
    return [e for _, e in pairs] + [it.expr for it in stmt.returning], pairs


def update_exprs(s: Session, stmt: ast.Update) -> Exprs:
    exprs = [e for _, e in stmt.assignments] + ([stmt.where] if stmt.where else [])
    return exprs + [it.expr for it in stmt.returning], list(stmt.assignments)


def delete_exprs(s: Session, stmt: ast.Delete) -> Exprs:
    return ([stmt.where] if stmt.where else []) + [it.expr for it in stmt.returning], []


def explain_exprs(s: Session, stmt: ast.Explain) -> Exprs:
    return spec_of(stmt.statement).exprs(s, stmt.statement)


def written_columns(
    s: Session, stmt: ast.Insert | ast.Update | ast.Delete, param_oids: list[int]
) -> list[Column] | None:
    """A write returns rows only with RETURNING."""
    return returning_columns(s, stmt, param_oids) if stmt.returning else None


@statement(
    ast.Select,
    columns=select_columns,
    exprs=select_exprs,
    writes=False,
    implicit=True,
    described=True,
)
async def run_select(
    s: Session, stmt: ast.Select, params: list[Any], columns: list[Column] | None = None
) -> Result:
    ctx = s.ctx(params)
    if stmt.source is not None and "vector_distance" in stmt.functions:
        found = s.tenant.state.collection(stmt.source)
        ctx.engine = found[1] if found and isinstance(found[1], RowCollection) else None
    await _wait_if_asked(stmt, ctx)
    if columns is None or (stmt.star and len(stmt.items) > 1):
        columns = select_columns(s, stmt, [])
    plan = plan_select(stmt, s.any_collection)
    leaf, where = plan.leaf, stmt.where if plan.filter is not None else None
    fast: list[tuple[Any, ...]] | None = None
    if isinstance(leaf, RowsAccess):
        rows = await matching_rows(s, leaf, where, ctx)
    elif isinstance(leaf, PartitionScan):
        ts_engine = s.any_collection(leaf.collection)
        assert isinstance(ts_engine, TimeseriesCollection)
        ts_view = timeseries_view(s, leaf.collection, ts_engine)
        rows, fast = timeseries_rows(s, stmt, plan, ts_view, ctx)
    elif isinstance(leaf, ViewScan):
        view_rows = await system_view_rows(s, leaf.view)
        rows = [r for r in view_rows if where is None or where.eval(r, ctx) is True]
    else:  # one row, unless the WHERE (constant here) is not true
        rows = [{}] if where is None or where.eval({}, ctx) is True else []
    star_fields = [c for c, _ in columns] if stmt.star else []
    items: list[tuple[Row, Ctx]]
    if fast is not None:
        items, out = [({}, ctx)] * len(fast), fast
    elif plan.aggregate is not None:
        aggs = plan.aggregate.aggs
        if stmt.star:
            raise SyntaxError_(
                "SELECT * cannot be combined with GROUP BY or aggregates", sqlstate="42803"
            )
        groups: dict[tuple[Any, ...], list[Row]] = {}
        if not plan.aggregate.group_by:
            groups[()] = rows  # one group of every row (of none, for count(*) = 0)
        for r in rows if plan.aggregate.group_by else ():
            gk = tuple(_hashable(g.eval(r, ctx)) for g in plan.aggregate.group_by)
            groups.setdefault(gk, []).append(r)
        items = []
        for members in groups.values():
            gctx = Ctx(
                params=params,
                session=s,
                engine=ctx.engine,
                aggs={id(a): a.compute(members, ctx) for a in aggs},
            )
            rep = members[0] if members else {}
            items.append((rep, gctx))
    else:
        items = [(r, ctx) for r in rows]
    if fast is None:
        out = []
        for rep, c in items:
            if stmt.star:
                out.append(tuple(rep.get(f) for f in star_fields))
            else:
                out.append(tuple(it.expr.eval(rep, c) for it in stmt.items))
    if plan.sort is not None:
        order_by = plan.sort.order_by
        order = list(range(len(out)))

        def key(i: int) -> list[Any]:
            ks = []
            rep, c = items[i]
            for o in order_by:
                v = out[i][o.position] if o.position is not None else o.expr.eval(rep, c)  # type: ignore[union-attr]
                k = _sort_key(v)
                ks.append(_Desc(k) if o.desc else k)
            return ks

        order.sort(key=key)
        out = [out[i] for i in order]
    if plan.limit is not None:
        offset = int_clause(plan.limit.offset, ctx, "OFFSET")
        limit = int_clause(plan.limit.limit, ctx, "LIMIT")
        if offset:
            out = out[offset:]
        if limit is not None:
            out = out[:limit]
    return Result(columns, out, f"SELECT {len(out)}")


async def _wait_if_asked(stmt: ast.Select, ctx: Ctx) -> None:
    """Await the functions of the output list that wait (``SELECT pg_sleep(1)``)."""
    for it in stmt.items:
        e = it.expr
        if isinstance(e, Func) and e.fn is not None and e.fn.wait is not None:
            await e.fn.wait(ctx, *(a.eval({}, ctx) for a in e.args))


@statement(
    ast.Explain, columns=[("QUERY PLAN", t.TEXT)], exprs=explain_exprs, writes=False, implicit=True
)
async def run_explain(s: Session, stmt: ast.Explain, params: list[Any]) -> Result:
    inner = stmt.statement
    plan = (
        plan_select(inner, s.any_collection)
        if isinstance(inner, ast.Select)
        else plan_write(inner, s.any_collection)
    )
    lines = plan.explain(s, s.ctx(params))
    if stmt.analyze and isinstance(inner, ast.Select):
        result = await run_select(s, inner, params)
        lines.append(f"Rows examined: {s.examined}, rows returned: {len(result.rows)}")
    return Result([("QUERY PLAN", t.TEXT)], [(line,) for line in lines], "EXPLAIN")


@statement(ast.Insert, columns=written_columns, exprs=insert_exprs, implicit=True, described=True)
async def run_insert(
    s: Session, stmt: ast.Insert, params: list[Any], columns: list[Column] | None = None
) -> Result:
    any_engine = s.any_collection(stmt.collection)
    if isinstance(any_engine, TimeseriesCollection):
        return await insert_timeseries(s, stmt, any_engine, params)
    engine = s.collection(stmt.collection)
    ctx = s.ctx(params)
    now = now_ms()
    kf = engine.key_field
    intents: list[Intent] = []
    pending: dict[Any, Row] = {}
    rows_in = await selected_rows(s, stmt, params) if stmt.query else insert_rows(s, stmt)
    for fields in rows_in:
        row, expires = new_row(engine, fields, ctx, stmt.object_form, now)
        key = row[kf]
        old = pending.get(key) or read_row(s, stmt.collection, engine, key, now)
        if old is None:
            intents.append(("insert", key, row, expires))
            pending[key] = row
            continue
        if stmt.upsert:
            intents.append(("put", key, row, expires))
        elif stmt.on_conflict is None:
            raise duplicate_key(stmt.collection, kf, key)
        elif stmt.on_conflict.action == "nothing":
            continue
        else:
            uctx = Ctx(params=params, session=s, excluded=row)
            new = assign(engine, old, stmt.on_conflict.assignments, uctx)
            keep = read_expiry(s, stmt.collection, engine, key)
            intents.append(("put", key, new, expires if expires is not None else keep))
            row = new
        pending[key] = row
    rows = [row for _, _, row, _ in intents]
    result = _written(s, stmt, f"INSERT 0 {len(intents)}", rows, columns, params)
    await commit_or_buffer(s, stmt.collection, intents)
    return result


async def _rows_to_write(
    s: Session, stmt: ast.Update | ast.Delete, ctx: Ctx
) -> tuple[RowCollection, list[Row]]:
    """The collection an UPDATE or DELETE changes, and the rows its plan finds."""
    engine = s.collection(stmt.collection)
    exprs = update_exprs(s, stmt) if isinstance(stmt, ast.Update) else delete_exprs(s, stmt)
    check_table_fields(engine, exprs[0])
    plan = plan_write(stmt, s.any_collection)
    assert isinstance(plan.leaf, RowsAccess)  # s.collection above refused a timeseries
    return engine, await matching_rows(s, plan.leaf, stmt.where, ctx)


@statement(ast.Update, columns=written_columns, exprs=update_exprs, implicit=True, described=True)
async def run_update(
    s: Session, stmt: ast.Update, params: list[Any], columns: list[Column] | None = None
) -> Result:
    ctx = s.ctx(params)
    engine, rows = await _rows_to_write(s, stmt, ctx)
    kf = engine.key_field
    new_rows = [assign(engine, r, stmt.assignments, ctx) for r in rows]
    # An UPDATE keeps its SET list: at COMMIT it is applied again to the row as it is
    # then (as PostgreSQL re-evaluates on the newest row version), so concurrent
    # transactions doing n = n + 1 lose no increment.
    intents: list[Intent] = [
        (
            "update",
            new[kf],
            Recompute(new, stmt.assignments, ctx),
            read_expiry(s, stmt.collection, engine, new[kf]),
        )
        for new in new_rows
    ]
    result = _written(s, stmt, f"UPDATE {len(intents)}", new_rows, columns, params)
    await commit_or_buffer(s, stmt.collection, intents)
    return result


@statement(ast.Delete, columns=written_columns, exprs=delete_exprs, implicit=True, described=True)
async def run_delete(
    s: Session, stmt: ast.Delete, params: list[Any], columns: list[Column] | None = None
) -> Result:
    engine, rows = await _rows_to_write(s, stmt, s.ctx(params))
    kf = engine.key_field
    result = _written(s, stmt, f"DELETE {len(rows)}", rows, columns, params)
    await commit_or_buffer(s, stmt.collection, [("delete", r[kf], None, None) for r in rows])
    return result


@statement(ast.Truncate)
async def run_truncate(s: Session, stmt: ast.Truncate, params: list[Any]) -> Result:
    """Every row of each collection deleted, all of them in one commit (or in the
    transaction): the collections, their indexes and definitions stay."""
    now = now_ms()
    intents: list[tuple[Any, ...]] = []
    for name in dict.fromkeys(stmt.collections):
        engine = s.collection(name)
        kf = engine.key_field
        keys = [r[kf] for r in read_rows(s, name, engine, now)]
        intents.append((name, [("delete", k, None, None) for k in keys]))
    if s.txn is not None:
        for name, ops in intents:
            await commit_or_buffer(s, name, ops)
    else:
        batch = Txn([(i, name, k, r, e) for name, ops in intents for i, k, r, e in ops])
        if batch.intents:
            await s.tenant.commit_ops(fold(s, batch))
    return Result(None, [], "TRUNCATE TABLE")


def returning_columns(
    s: Session, stmt: ast.Insert | ast.Update | ast.Delete, param_oids: list[int]
) -> list[Column]:
    """A field the statement writes is typed by what it held and what is written into
    it, so that a value of a new type is still sent as its column says."""
    engine = s.any_collection(stmt.collection)
    if isinstance(engine, TimeseriesCollection):
        raise timeseries_returning(stmt.collection)
    written = _written_tags(s, stmt, engine, param_oids)

    def oid(name: str) -> int:
        if name not in written or name == engine.key_field or typed_target(engine, name):
            return field_oid(engine, name)
        return tags_oid(engine.field_types.get(name, set()) | written[name])

    cols: list[Column] = []
    for it in stmt.returning:
        if isinstance(it.expr, Star):
            typed = list(engine.typed_fields) if isinstance(engine, KvCollection) else []
            names = dict.fromkeys([*engine.fields(), *typed, *written])
            cols += [(name, oid(name)) for name in names]
        elif isinstance(it.expr, Field):
            cols.append((it.name, oid(it.expr.name)))
        else:
            cols.append((it.name, infer(it.expr, engine, param_oids)))
    return cols


def _written_tags(
    s: Session,
    stmt: ast.Insert | ast.Update | ast.Delete,
    engine: RowCollection,
    param_oids: list[int],
) -> dict[str, set[str]]:
    """The value types a write stores into each field, as known before it runs."""
    pairs = spec_of(stmt).exprs(s, stmt)[1]
    if isinstance(stmt, ast.Insert) and stmt.object_form and isinstance(engine, KvCollection):
        pairs = [(name, e) for name, e in pairs if name != "ttl"]  # the expiry, not a field
    tags: dict[str, set[str]] = {}
    for name, e in pairs:
        tag = (
            type_tag(e.value)
            if isinstance(e, Const)
            else OID_TAGS.get(infer(e, engine, param_oids), "object")
        )
        tags.setdefault(name, set()).add(tag)
    return tags


def _written(
    s: Session,
    stmt: ast.Insert | ast.Update | ast.Delete,
    tag: str,
    rows: list[Row],
    described: list[Column] | None,
    params: list[Any],
) -> Result:
    """A write's result: its tag, and with RETURNING its list for each row written,
    worked out before the write commits, so that an error in it changes nothing."""
    if not stmt.returning:
        return Result(None, [], tag)
    columns = described or returning_columns(s, stmt, param_types(s, stmt, ()))
    ctx = s.ctx(params)
    stars = sum(isinstance(it.expr, Star) for it in stmt.returning)
    per_star = (len(columns) - len(stmt.returning) + stars) // stars if stars else 0
    outputs: list[str | Expr] = []  # a field a star stands for, or an expression
    for it in stmt.returning:
        if isinstance(it.expr, Star):
            outputs += [name for name, _ in columns[len(outputs) : len(outputs) + per_star]]
        else:
            outputs.append(it.expr)
    out = [tuple(r.get(o) if isinstance(o, str) else o.eval(r, ctx) for o in outputs) for r in rows]
    sent = fitted(columns, out)
    if described and sent != described:
        name = next(a[0] for a, b in zip(described, sent, strict=True) if a != b)
        raise DBError(
            f'RETURNING column "{name}" was described with the type its field has outside '
            "this transaction, which stored a value of another type in it: cast it "
            f"(RETURNING {name}::text)",
            sqlstate="42804",
        )
    return Result(sent, out, tag)


def _hashable(v: Any) -> Any:
    return t.to_json(v) if isinstance(v, dict | list) else v
