"""Reads the native planner does not take, run by DataFusion (sql/relational.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodedb_server.sql import ast, relational
from nodedb_server.sql.registry import statement
from nodedb_server.sql.result import Column, Result

if TYPE_CHECKING:
    from nodedb_server.sql.session import Session


def relational_columns(
    s: Session, stmt: ast.RelationalQuery, param_oids: list[int]
) -> list[Column]:
    return relational.describe(s, stmt.query, param_oids)


def relational_param_types(
    s: Session, stmt: ast.RelationalQuery, declared: tuple[int, ...]
) -> list[int]:
    return stmt.query.param_types(declared, s)


@statement(
    ast.RelationalQuery,
    columns=relational_columns,
    param_types=relational_param_types,
    writes=False,
    implicit=True,
)
async def relational_query(s: Session, stmt: ast.RelationalQuery, params: list[Any]) -> Result:
    columns, rows = await relational.run(s, stmt.query, params, [])
    return Result(columns, rows, f"SELECT {len(rows)}")
