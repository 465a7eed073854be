"""The statements the server runs: one table, keyed by the statement's AST type.

Each family module under ``sql/exec/`` registers its statements with
``@statement(ast.Type, ...)``: how the statement runs, the columns it
describes, the expressions its parameters are typed from, whether it writes
(and so is refused while the WAL cannot be written), whether it may share the
implicit transaction of a multi-statement Query message. A statement that
streams (COPY) says so in its result (``Result.copy``). Adding a statement is an AST class, a parse rule and one registered
function; ``tests/unit/test_registry.py`` pins that every AST statement type
has an entry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from nodedb_server.errors import FeatureNotSupported
from nodedb_server.sql import ast
from nodedb_server.sql.expr import Expr
from nodedb_server.sql.result import Column, Result

if TYPE_CHECKING:
    from nodedb_server.sql.session import Session

# A statement's expressions, and the (field, expression) pairs it stores into fields.
Exprs = tuple[list[Expr], list[tuple[str, Expr]]]
ColumnsFn = Callable[["Session", Any, list[int]], "list[Column] | None"]
F = TypeVar("F", bound=Callable[..., Awaitable[Result]])


def _no_exprs(session: Session, stmt: Any) -> Exprs:
    return [], []


@dataclass(frozen=True)
class StatementSpec:
    run: Callable[..., Awaitable[Result]]  # (session, stmt, params[, columns])
    described: bool  # ``run`` takes the columns a Describe promised the client
    columns: ColumnsFn  # what its rows look like (None: it returns none)
    exprs: Callable[[Session, Any], Exprs]
    # Typing its parameters some other way than from ``exprs`` (catalog queries).
    param_types: Callable[[Session, Any, tuple[int, ...]], list[int]] | None
    writes: bool
    implicit: bool


SPECS: dict[type, StatementSpec] = {}


def statement(
    kind: type,
    *,
    columns: list[Column] | ColumnsFn | None = None,
    exprs: Callable[[Session, Any], Exprs] = _no_exprs,
    param_types: Callable[[Session, Any, tuple[int, ...]], list[int]] | None = None,
    writes: bool = True,
    implicit: bool = False,
    described: bool = False,
) -> Callable[[F], F]:
    """Register the decorated coroutine function as how ``kind`` runs."""
    columns_fn: ColumnsFn
    if columns is None or isinstance(columns, list):
        fixed = columns

        def fixed_columns(
            session: Session, stmt: Any, param_oids: list[int]
        ) -> list[Column] | None:
            return list(fixed) if fixed is not None else None

        columns_fn = fixed_columns
    else:
        columns_fn = columns

    def register(run: F) -> F:
        if kind in SPECS:
            raise RuntimeError(f"{kind.__name__} is registered twice")
        SPECS[kind] = StatementSpec(
            run, described, columns_fn, exprs, param_types, writes, implicit
        )
        return run

    return register


def spec_of(stmt: ast.Statement) -> StatementSpec:
    spec = SPECS.get(type(stmt))
    if spec is None:
        raise FeatureNotSupported(f"{type(stmt).__name__} is not supported")
    return spec


@dataclass
class Prepared:
    """A prepared statement, made by PREPARE or by the protocol's Parse."""

    sql: str
    stmt: ast.Statement
    param_oids: list[int]
    columns: list[Column] | None = None
    described: bool = False  # ``columns`` is what a Describe told the client
