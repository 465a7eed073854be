"""Checking a statement's argument values."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodedb_server import types as t
from nodedb_server.errors import (
    DataError,
)
from nodedb_server.sql.expr import (
    Ctx,
    Expr,
)

if TYPE_CHECKING:
    pass


def node_name(v: Any, what: str) -> str:
    if v is None:
        raise DataError(f"{what} must not be NULL")
    return v if isinstance(v, str) else t.encode_text(t.TEXT, v)


def whole_number(v: Any, what: str) -> int:
    try:
        n = int(v)
    except (TypeError, ValueError):
        raise DataError(f"{what} must be a whole number") from None
    if n < 0:
        raise DataError(f"{what} must not be negative")
    return n


def int_clause(e: Expr | None, ctx: Ctx, what: str) -> int | None:
    if e is None:
        return None
    v = e.eval({}, ctx)
    if v is None:
        return None
    try:
        n = int(v)
    except (TypeError, ValueError):
        raise DataError(f"{what} must be an integer") from None
    if n < 0:
        raise DataError(
            f"{what} must not be negative", sqlstate="2201W" if what == "LIMIT" else "2201X"
        )
    return n
