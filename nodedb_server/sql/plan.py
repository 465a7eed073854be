"""How a statement finds its rows: by primary key, through an index, or by a scan."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
    Func,
    In,
    Param,
    _num,
)

if TYPE_CHECKING:
    from nodedb_server.sql.session import Session


def _larger_than(e: Expr | None, n: int) -> bool:
    """Whether the tree has more than ``n`` nodes, looking at no more than n + 1."""
    stack = [e] if e is not None else []
    seen = 0
    while stack:
        seen += 1
        if seen > n:
            return True
        stack.extend(stack.pop().children())
    return False


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

    kind: str  # "key" | "index" | "scan"
    values: tuple[Expr, ...] = ()  # primary key values
    probes: tuple[Probe, ...] = ()


@functools.lru_cache(maxsize=4096)
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


def access_for(s: Session, engine: RowCollection, where: Expr | None) -> Access:
    indexed = frozenset(engine.indexes)
    if _larger_than(where, 256):
        # Plans are cached by the WHERE tree's identity; a large one (a long IN
        # list) comes from a statement too long for the parse cache, so it is new
        # each time and caching its plan would only hold it in memory.
        return plan_access.__wrapped__(where, engine.key_field, indexed)
    return plan_access(where, engine.key_field, indexed)


def choose_probe(s, engine: RowCollection, access: Access, ctx: Ctx) -> tuple[Probe, list[Any]]:
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


def uses_function(stmt: ast.Select, func: str) -> bool:
    return any(isinstance(n, Func) and n.name == func for n in select_nodes(stmt)[1])


def aggregates(stmt: ast.Select) -> list[Agg]:
    """The aggregate calls of a SELECT's output and ORDER BY."""
    return [n for n in select_nodes(stmt)[0] if isinstance(n, Agg)]


_NODE_CACHE: dict[int, tuple[ast.Select, tuple[list[Expr], list[Expr]]]] = {}


def select_nodes(stmt: ast.Select) -> tuple[list[Expr], list[Expr]]:
    """(nodes of the output and ORDER BY, nodes of everything), once per parsed statement."""
    hit = _NODE_CACHE.get(id(stmt))
    if hit is not None and hit[0] is stmt:
        return hit[1]
    out_roots = [it.expr for it in stmt.items] + [o.expr for o in stmt.order_by if o.expr]
    other_roots = [e for e in (stmt.where, *stmt.group_by) if e is not None]
    output = [n for r in out_roots for n in r.walk()]
    nodes = (output, output + [n for r in other_roots for n in r.walk()])
    if len(nodes[1]) > 1024:
        return nodes  # a large statement is rarely repeated: not worth holding
    if len(_NODE_CACHE) > 4096:
        _NODE_CACHE.clear()
    _NODE_CACHE[id(stmt)] = (stmt, nodes)
    return nodes


def _probe_value(v: Any, numeric: bool) -> Any:
    """Untyped text probing a numeric field is read as a number (as comparisons do)."""
    if numeric and isinstance(v, str):
        try:
            return _num(v)
        except DBError:
            return v
    return v
