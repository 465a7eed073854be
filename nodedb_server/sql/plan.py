"""Plans: how a SELECT, UPDATE or DELETE finds its rows and what it does with them.

A plan is a chain of steps, leaf first: where the rows come from (no
collection, a system view, a primary-key lookup, an index probe, a full scan,
a timeseries partition scan), then Filter, Aggregate, Project, Sort, Limit as
the statement needs them. The executor (``sql/exec/rows.py``) runs exactly the
steps of the plan and EXPLAIN prints them, so what EXPLAIN says is what runs.

Each step holds its input, so steps that take two inputs (a join, a union) or a
plan of their own (a subquery) fit without reshaping the rest. An engine may
answer a step natively: a timeseries partition scan applies its Filter as an
Arrow expression and, where it can, computes the Aggregate with Arrow kernels.

Plans are kept on the parsed statement (``stmt.plans``), one per shape of the
collection it reads (engine kind, key field, indexed fields), so a prepared
statement is planned once until an index is created or dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from nodedb_server.engines.base import RowCollection
from nodedb_server.errors import (
    DBError,
)
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
    In,
    Param,
)
from nodedb_server.sql.scalars import number

if TYPE_CHECKING:
    from nodedb_server.sql.session import Session


def conjuncts(e: Expr | None) -> list[Expr]:
    if e is None:
        return []
    if isinstance(e, And):
        return conjuncts(e.left) + conjuncts(e.right)
    return [e]


def _key_values(where: Expr | None, key_field: str) -> list[Expr] | None:
    """Expressions giving the primary keys a WHERE pins down, or None if it needs a scan."""
    for c in conjuncts(where):
        if isinstance(c, Cmp) and c.op == "=":
            for a, b in ((c.left, c.right), (c.right, c.left)):
                if (
                    isinstance(a, Field)
                    and a.name == key_field
                    and isinstance(b, Const | Param | Cast)
                ):
                    return [b]
        if (
            isinstance(c, In)
            and isinstance(c.inner, Field)
            and c.inner.name == key_field
            and all(isinstance(i, Const | Param) for i in c.items)
        ):
            return list(c.items)
    return None


_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "="}

_VALUE = (Const, Param, Cast)  # what an index or key lookup can be probed with
AccessKind = Literal["key", "index", "scan"]


@dataclass(frozen=True)
class Probe:
    """One way an index can answer part of a WHERE: equality values or a range."""

    field: str
    values: tuple[Expr, ...] = ()
    low: Expr | None = None
    low_inclusive: bool = True
    high: Expr | None = None
    high_inclusive: bool = True


@dataclass(frozen=True)
class Access:
    """How a statement finds its rows: by primary key, through an index, or by a scan.
    With several usable index probes, the one expecting fewest rows is chosen when the
    parameter values are known."""

    kind: AccessKind
    values: tuple[Expr, ...] = ()  # primary key values
    probes: tuple[Probe, ...] = ()


def plan_access(where: Expr | None, key_field: str, indexed: frozenset[str]) -> Access:
    keys = _key_values(where, key_field)
    if keys is not None:
        return Access("key", tuple(keys))
    conj = conjuncts(where)
    probes: list[Probe] = []
    bounds: dict[str, dict[str, tuple[Expr, bool]]] = {}
    for c in conj:
        if isinstance(c, Cmp):
            for a, b, op in ((c.left, c.right, c.op), (c.right, c.left, _FLIP.get(c.op, ""))):
                if not (isinstance(a, Field) and a.name in indexed and isinstance(b, _VALUE)):
                    continue
                if op == "=":
                    probes.append(Probe(a.name, (b,)))
                elif op in ("<", "<=", ">", ">="):
                    side = "low" if op in (">", ">=") else "high"
                    bounds.setdefault(a.name, {})[side] = (b, op in (">=", "<="))
        elif (
            isinstance(c, In)
            and isinstance(c.inner, Field)
            and c.inner.name in indexed
            and all(isinstance(i, _VALUE) for i in c.items)
        ):
            probes.append(Probe(c.inner.name, tuple(c.items)))
    for f, bnd in bounds.items():
        low, high = bnd.get("low"), bnd.get("high")
        probes.append(
            Probe(
                f,
                (),
                low[0] if low else None,
                low[1] if low else True,
                high[0] if high else None,
                high[1] if high else True,
            )
        )
    if probes:
        return Access("index", probes=tuple(probes))
    return Access("scan")


def choose_probe(engine: RowCollection, access: Access, ctx: Ctx) -> tuple[Probe, list[Any]]:
    best: tuple[float, Probe, list[Any]] | None = None
    for p in access.probes:
        index = engine.indexes[p.field]
        numeric = bool(engine.field_types.get(p.field, set()) & {"int", "float"})
        if p.values:
            values = [_probe_value(e.eval({}, ctx), numeric) for e in p.values]
            cost = float(sum(index.count_equal(v) for v in values))
        else:
            values = [
                _probe_value(e.eval({}, ctx), numeric) if e is not None else None
                for e in (p.low, p.high)
            ]
            cost = index.estimate_range(values[0], p.low_inclusive, values[1], p.high_inclusive)
        if best is None or cost < best[0]:
            best = (cost, p, values)
    assert best is not None
    return best[1], best[2]


def _probe_value(v: Any, numeric: bool) -> Any:
    """Untyped text probing a numeric field is read as a number (as comparisons do)."""
    if numeric and isinstance(v, str):
        try:
            return number(v)
        except DBError:
            return v
    return v


# ---- steps --------------------------------------------------------------------------


class Step:
    """One step of a plan; ``explain`` gives its lines of EXPLAIN output."""

    def explain(self, s: Session, ctx: Ctx) -> list[str]:
        return []


@dataclass(frozen=True)
class NoSource(Step):
    """A SELECT without FROM: one empty row."""

    def explain(self, s: Session, ctx: Ctx) -> list[str]:
        return ["Result (no collection)"]


@dataclass(frozen=True)
class ViewScan(Step):
    view: str  # "_system.<name>"

    def explain(self, s: Session, ctx: Ctx) -> list[str]:
        return [f"System view {self.view}"]


@dataclass(frozen=True)
class RowsAccess(Step):
    """A document or key-value collection read by primary key, index probe or scan."""

    collection: str
    access: Access

    def explain(self, s: Session, ctx: Ctx) -> list[str]:
        engine = s.collection(self.collection)
        access = self.access
        if access.kind == "key":
            n = len(access.values)
            return [
                f"Point lookup on {self.collection} by primary key {engine.key_field} "
                f"({n} key{'s' if n != 1 else ''})"
            ]
        if access.kind == "index":
            probe, _ = choose_probe(engine, access, ctx)
            n = len(probe.values)
            how = f"equality, {n} value{'s' if n != 1 else ''}" if n else "range"
            return [
                f"Index scan on {self.collection} using {engine.indexes[probe.field].name} "
                f"({probe.field}, {how})"
            ]
        return [f"Full scan of {self.collection} ({len(engine)} rows)"]


@dataclass(frozen=True)
class PartitionScan(Step):
    """A timeseries collection's partitions in the WHERE's time range."""

    collection: str
    where: Expr | None

    def explain(self, s: Session, ctx: Ctx) -> list[str]:
        from nodedb_server.engines.timeseries import TimeseriesCollection
        from nodedb_server.sql.columnar import time_bounds

        engine = s.any_collection(self.collection)
        assert isinstance(engine, TimeseriesCollection)
        lo, hi = time_bounds(self.where, engine, ctx)
        _, read, skipped = engine.table(lo, hi)
        return [
            f"Partition scan on {self.collection}: {read} partitions read, "
            f"{skipped} skipped by the time range"
        ]


@dataclass(frozen=True)
class Filter(Step):
    input: Step
    where: Expr
    columnar: bool = False  # evaluated as an Arrow expression where it can be

    def explain(self, s: Session, ctx: Ctx) -> list[str]:
        return ["  Filter: WHERE clause (columnar)" if self.columnar else "  Filter: WHERE clause"]


@dataclass(frozen=True)
class Aggregate(Step):
    input: Step
    group_by: tuple[Expr, ...]
    aggs: tuple[Agg, ...]

    def explain(self, s: Session, ctx: Ctx) -> list[str]:
        return ["  Aggregate"]


@dataclass(frozen=True)
class Project(Step):
    """The output list (or ``*``); not a line of its own in EXPLAIN."""

    input: Step
    items: tuple[ast.SelectItem, ...]
    star: bool


@dataclass(frozen=True)
class Sort(Step):
    input: Step
    order_by: tuple[ast.OrderItem, ...]

    def explain(self, s: Session, ctx: Ctx) -> list[str]:
        return ["  Sort"]


@dataclass(frozen=True)
class Limit(Step):
    input: Step
    limit: Expr | None
    offset: Expr | None

    def explain(self, s: Session, ctx: Ctx) -> list[str]:
        return ["  Limit"]


@dataclass(frozen=True)
class Plan:
    """A plan's last step, and each step by its kind for the executor (None: absent)."""

    root: Step
    leaf: Step
    filter: Filter | None = None
    aggregate: Aggregate | None = None
    project: Project | None = None
    sort: Sort | None = None
    limit: Limit | None = None

    def steps(self) -> list[Step]:
        """The steps, leaf first."""
        out: list[Step] = []
        step: Step | None = self.root
        while step is not None:
            out.append(step)
            step = getattr(step, "input", None)
        return out[::-1]

    def explain(self, s: Session, ctx: Ctx) -> list[str]:
        return [line for step in self.steps() for line in step.explain(s, ctx)]


# ---- planning -------------------------------------------------------------------------


# The collection of a name, or 42P01 (Session.any_collection).
Lookup = Callable[[str], Any]


def _shape(collection: Lookup, source: str | None) -> tuple[Any, ...]:
    """What a plan of a statement reading ``source`` depends on."""
    if source is None or source.startswith("_system."):
        return (source,)
    engine = collection(source)
    if isinstance(engine, RowCollection):
        return (type(engine), engine.key_field, frozenset(engine.indexes))
    return (type(engine),)


def _leaf(collection: Lookup, source: str | None, where: Expr | None) -> tuple[Step, Filter | None]:
    if source is None:
        leaf: Step = NoSource()
    elif source.startswith("_system."):
        leaf = ViewScan(source)
    else:
        engine = collection(source)
        if not isinstance(engine, RowCollection):
            leaf = PartitionScan(source, where)
            return leaf, Filter(leaf, where, columnar=True) if where is not None else None
        leaf = RowsAccess(source, plan_access(where, engine.key_field, frozenset(engine.indexes)))
    return leaf, Filter(leaf, where) if where is not None else None


def plan_select(stmt: ast.Select, collection: Lookup) -> Plan:
    shape = _shape(collection, stmt.source)
    plan = stmt.plans.get(shape)
    if plan is not None:
        return plan
    leaf, where = _leaf(collection, stmt.source, stmt.where)
    step: Step = where or leaf
    aggregate = None
    if stmt.aggregates or stmt.group_by:
        step = aggregate = Aggregate(step, tuple(stmt.group_by), stmt.aggregates)
    step = project = Project(step, tuple(stmt.items), stmt.star)
    sort = limit = None
    if stmt.order_by:
        step = sort = Sort(step, tuple(stmt.order_by))
    if stmt.limit is not None or stmt.offset is not None:
        step = limit = Limit(step, stmt.limit, stmt.offset)
    plan = Plan(step, leaf, where, aggregate, project, sort, limit)
    stmt.plans[shape] = plan
    return plan


def plan_write(stmt: ast.Update | ast.Delete, collection: Lookup) -> Plan:
    """The rows an UPDATE or DELETE changes: a leaf and its filter."""
    shape = _shape(collection, stmt.collection)
    plan = stmt.plans.get(shape)
    if plan is None:
        leaf, where = _leaf(collection, stmt.collection, stmt.where)
        plan = stmt.plans[shape] = Plan(where or leaf, leaf, where)
    return plan
