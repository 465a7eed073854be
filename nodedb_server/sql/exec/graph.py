"""Graph edges: GRAPH INSERT/DELETE EDGE, traversals and algorithms."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from nodedb_server import types as t
from nodedb_server.engines.base import RowCollection
from nodedb_server.engines.graph import EdgeStore
from nodedb_server.errors import (
    DataError,
    InvalidTextRepresentation,
    UndefinedTable,
)
from nodedb_server.sql import ast
from nodedb_server.sql.describe import ast_cast, describe
from nodedb_server.sql.exec.argcheck import node_name, whole_number
from nodedb_server.sql.exec.ddl import create_collection
from nodedb_server.sql.exec.txn import commit_or_buffer, own_writes
from nodedb_server.sql.registry import Exprs, statement
from nodedb_server.sql.result import Column, Result

if TYPE_CHECKING:
    from nodedb_server.sql.session import Session


def edge_exprs(s: Session, stmt: ast.GraphEdgeWrite) -> Exprs:
    return [e for e in (stmt.source, stmt.target, stmt.label, stmt.properties) if e], []


def graph_query_exprs(s: Session, stmt: ast.GraphQuery) -> Exprs:
    exprs = [e for e in (stmt.start, stmt.target, stmt.label) if e is not None]
    return exprs + ([ast_cast(stmt.depth, t.INT8)] if stmt.depth is not None else []), []


def graph_algo_exprs(s: Session, stmt: ast.GraphAlgo) -> Exprs:
    return [
        ast_cast(e, oid)
        for e, oid in ((stmt.damping, t.FLOAT8), (stmt.iterations, t.INT8))
        if e is not None
    ], []


GRAPH_QUERY_COLUMNS: dict[str, list[Column]] = {
    "neighbors": [("node", t.TEXT), ("label", t.TEXT), ("properties", t.JSONB)],
    "traverse": [("node", t.TEXT), ("depth", t.INT8)],
    "path": [("step", t.INT8), ("node", t.TEXT)],
}


def graph_query_columns(s: Session, stmt: ast.GraphQuery, param_oids: list[int]) -> list[Column]:
    return GRAPH_QUERY_COLUMNS[stmt.kind]


def graph_algo_columns(s: Session, stmt: ast.GraphAlgo, param_oids: list[int]) -> list[Column]:
    if stmt.algorithm == "wcc":
        return [("node", t.TEXT), ("component", t.INT8)]
    return [("node", t.TEXT), ("rank", t.FLOAT8)]


@statement(ast.GraphEdgeWrite, exprs=edge_exprs, implicit=True)
async def graph_write(s: Session, stmt: ast.GraphEdgeWrite, params: list[Any]) -> Result:
    if s.tenant.state.collection(stmt.collection) is None:
        if stmt.delete:
            raise UndefinedTable(f'collection "{stmt.collection}" does not exist')
        await create_collection(s, ast.CreateCollection(stmt.collection, "document", {}), params)
    engine = s.collection(stmt.collection)
    ctx = s.ctx(params)
    key = [
        node_name(e.eval({}, ctx), what)
        for e, what in ((stmt.source, "FROM"), (stmt.target, "TO"), (stmt.label, "TYPE"))
    ]
    if stmt.delete:
        exists = edges_seen(s, stmt.collection, engine).get(*key) is not None
        if exists:
            await commit_or_buffer(s, stmt.collection, [("edge_delete", key, None, None)])
        return Result(None, [], f"GRAPH DELETE EDGE {int(exists)}")
    props = _properties(stmt.properties.eval({}, ctx) if stmt.properties is not None else None)
    await commit_or_buffer(s, stmt.collection, [("edge_put", key, props, None)])
    return Result(None, [], "GRAPH INSERT EDGE 1")


def edges_seen(s: Session, coll: str, engine: RowCollection) -> EdgeStore:
    """The edges as this session sees them: committed, plus its transaction's."""
    own = own_writes(s, coll, ("edge_put", "edge_delete"))
    return engine.edges.overlaid(own) if own else engine.edges


@statement(
    ast.GraphQuery,
    columns=graph_query_columns,
    exprs=graph_query_exprs,
    writes=False,
    implicit=True,
)
async def graph_query(s: Session, stmt: ast.GraphQuery, params: list[Any]) -> Result:
    edges = edges_seen(s, stmt.collection, s.collection(stmt.collection))
    ctx = s.ctx(params)
    start = node_name(stmt.start.eval({}, ctx), "start node")
    label = node_name(stmt.label.eval({}, ctx), "LABEL") if stmt.label is not None else None
    columns = describe(s, stmt, [])
    rows: list[tuple[Any, ...]]
    if stmt.kind == "neighbors":
        rows = [tuple(n) for n in edges.neighbors(start, label, stmt.direction)]
    else:
        assert stmt.depth is not None
        depth = whole_number(stmt.depth.eval({}, ctx), "DEPTH")
        if stmt.kind == "traverse":
            rows = list(edges.traverse(start, depth, label, stmt.direction))
        else:
            assert stmt.target is not None
            target = node_name(stmt.target.eval({}, ctx), "TO")
            path = edges.shortest_path(start, target, depth, label, stmt.direction)
            rows = list(enumerate(path))
    return Result(columns, rows, f"SELECT {len(rows)}")


@statement(
    ast.GraphAlgo, columns=graph_algo_columns, exprs=graph_algo_exprs, writes=False, implicit=True
)
async def graph_algo(s: Session, stmt: ast.GraphAlgo, params: list[Any]) -> Result:
    edges = edges_seen(s, stmt.collection, s.collection(stmt.collection))
    ctx = s.ctx(params)
    columns = describe(s, stmt, [])
    rows: list[tuple[str, Any]]
    if stmt.algorithm == "wcc":
        comp = edges.components()
        rows = sorted(comp.items(), key=lambda kv: (kv[1], kv[0]))
    else:
        damping = float(stmt.damping.eval({}, ctx)) if stmt.damping is not None else 0.85
        iterations = (
            whole_number(stmt.iterations.eval({}, ctx), "ITERATIONS")
            if stmt.iterations is not None
            else 20
        )
        if not 0.0 <= damping <= 1.0:
            raise DataError("DAMPING must lie between 0 and 1")
        loop = asyncio.get_running_loop()
        ranks = await loop.run_in_executor(None, edges.pagerank, damping, iterations)
        rows = sorted(ranks.items(), key=lambda kv: (-kv[1], kv[0]))
    return Result(columns, [tuple(r) for r in rows], f"SELECT {len(rows)}")


def _properties(v: Any) -> dict[str, Any]:
    """Edge PROPERTIES: an object literal, or JSON object text."""
    if v is None:
        return {}
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except json.JSONDecodeError:
            raise InvalidTextRepresentation("PROPERTIES is not valid JSON") from None
    if not isinstance(v, dict):
        raise DataError("PROPERTIES must be an object")
    return v
