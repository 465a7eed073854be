"""SQL cursors: DECLARE .. CURSOR FOR select, FETCH, MOVE, CLOSE.

A cursor's rows are read once, at DECLARE, as the session sees them then (an
insensitive cursor, as PostgreSQL's are by default), and FETCH hands them out
forward in batches; psycopg's named (server-side) cursors and JDBC's fetch size
work this way. A cursor lives until CLOSE or the end of its transaction; one
declared WITH HOLD outlives a COMMIT, and goes with a ROLLBACK of the block that
declared it. The protocol's Describe of a portal named like a cursor describes it
(psycopg asks that right after DECLARE).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nodedb_server.errors import DBError
from nodedb_server.sql import ast
from nodedb_server.sql.exec.rows import select_exprs
from nodedb_server.sql.registry import Exprs, statement
from nodedb_server.sql.result import Column, Result

if TYPE_CHECKING:
    from nodedb_server.sql.exec.txn import Txn
    from nodedb_server.sql.session import Session


@dataclass
class SqlCursor:
    columns: list[Column]
    rows: list[tuple[Any, ...]]
    hold: bool
    txn: Txn | None  # the block that declared it, until that block commits
    pos: int = 0


def _exprs(s: Session, stmt: ast.DeclareCursor) -> Exprs:
    return select_exprs(s, stmt.select)


@statement(ast.DeclareCursor, writes=False, exprs=_exprs)
async def run_declare(s: Session, stmt: ast.DeclareCursor, params: list[Any]) -> Result:
    if s.txn is None and not stmt.hold:
        raise DBError("DECLARE CURSOR can only be used in transaction blocks", "25P01")
    if stmt.name in s.cursors:
        raise DBError(f'cursor "{stmt.name}" already exists', "42P03")
    result = await s.execute(stmt.select, params)
    s.cursors[stmt.name] = SqlCursor(list(result.columns or []), result.rows, stmt.hold, s.txn)
    return Result(None, [], "DECLARE CURSOR")


def _fetch_columns(s: Session, stmt: ast.FetchCursor, param_oids: list[int]) -> list[Column] | None:
    cursor = s.cursors.get(stmt.name)
    return None if stmt.move or cursor is None else list(cursor.columns)


@statement(ast.FetchCursor, writes=False, columns=_fetch_columns, implicit=True)
async def run_fetch(s: Session, stmt: ast.FetchCursor, params: list[Any]) -> Result:
    cursor = s.cursors.get(stmt.name)
    if cursor is None:
        raise DBError(f'cursor "{stmt.name}" does not exist', "34000")
    end = len(cursor.rows) if stmt.count is None else min(len(cursor.rows), cursor.pos + stmt.count)
    rows = cursor.rows[cursor.pos : end]
    cursor.pos = end
    if stmt.move:
        return Result(None, [], f"MOVE {len(rows)}")
    return Result(list(cursor.columns), rows, f"FETCH {len(rows)}")


@statement(ast.CloseCursor, writes=False, implicit=True)
async def run_close(s: Session, stmt: ast.CloseCursor, params: list[Any]) -> Result:
    if stmt.name is None:
        s.cursors.clear()
    elif s.cursors.pop(stmt.name, None) is None:
        raise DBError(f'cursor "{stmt.name}" does not exist', "34000")
    return Result(None, [], "CLOSE CURSOR")
