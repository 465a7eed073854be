"""CRDT documents (Loro): crdt_apply and crdt_state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodedb_server import types as t
from nodedb_server.engines.crdt import CrdtError, check_update
from nodedb_server.errors import (
    DataError,
)
from nodedb_server.sql import ast
from nodedb_server.sql.exec.argcheck import node_name
from nodedb_server.sql.exec.txn import commit_or_buffer, own_writes
from nodedb_server.sql.expr import Func
from nodedb_server.sql.registry import Exprs, statement
from nodedb_server.sql.result import Result

if TYPE_CHECKING:
    from nodedb_server.sql.session import Session


def crdt_exprs(s: Session, stmt: ast.CrdtApply) -> Exprs:
    # Typed as the function's arguments: crdt_apply($1, $2, $3) takes text, text, bytea.
    return [Func("crdt_apply", [stmt.collection, stmt.doc_id, stmt.data])], []


@statement(ast.CrdtApply, columns=[("crdt_apply", t.BOOL)], exprs=crdt_exprs, implicit=True)
async def crdt_apply(s: Session, stmt: ast.CrdtApply, params: list[Any]) -> Result:
    ctx = s.ctx(params)
    coll = node_name(stmt.collection.eval({}, ctx), "collection")
    doc_id = node_name(stmt.doc_id.eval({}, ctx), "document id")
    data = stmt.data.eval({}, ctx)
    if isinstance(data, str):
        data = t.parse_bytea(data)
    if not isinstance(data, bytes):
        raise DataError("crdt_apply() takes the update as bytea")
    s.collection(coll)
    try:
        check_update(data)
    except CrdtError as e:
        raise DataError(f"crdt_apply(): {e}") from None
    await commit_or_buffer(s, coll, [("crdt", doc_id, data, None)])
    return Result([("crdt_apply", t.BOOL)], [(True,)], "SELECT 1")


def crdt_state(s: Session, coll: Any, doc_id: Any) -> bytes | None:
    name, doc = node_name(coll, "collection"), node_name(doc_id, "document id")
    engine = s.collection(name)
    own = [data for key, data in own_writes(s, name, ("crdt",)) if key == doc]
    return engine.crdt.merged(doc, own) if own else engine.crdt.snapshot(doc)
