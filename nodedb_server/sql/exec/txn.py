"""Transactions: BEGIN, COMMIT, ROLLBACK, and reads and writes as a transaction sees them.

Writes are computed against what the session sees (committed state plus its
own transaction) and become row operations. Outside a transaction they are
committed at once; inside one they are kept as intents and committed as one
WAL record at COMMIT, after their constraints are checked again against the
state at that moment (read committed, as SQL.md says).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from nodedb_server.engines.base import Row, RowCollection
from nodedb_server.errors import (
    DBError,
    duplicate_key,
)
from nodedb_server.events.notify import Notification
from nodedb_server.sql import ast
from nodedb_server.sql.exec.values import assign, live_row, now_ms
from nodedb_server.sql.expr import (
    Ctx,
    Expr,
)
from nodedb_server.sql.registry import statement
from nodedb_server.sql.result import Result
from nodedb_server.storage.records import OpKind
from nodedb_server.tenants.catalog import Op

if TYPE_CHECKING:
    from nodedb_server.sql.session import Session


# What a write wants done: "insert" (the key must be new at COMMIT), "put" (insert or
# replace), "update" (a SET list applied again at COMMIT), "delete", or one of the
# PASS_THROUGH kinds below.
IntentKind = Literal["insert", "put", "update", "delete", "edge_put", "edge_delete", "crdt", "ts"]
# A write a statement wants: (kind, key, row or payload, expires_ms); see fold.
Intent = tuple[IntentKind, Any, Any, int | None]

# Transaction intents that become one operation as they are, checked against nothing.
PASS_THROUGH: dict[IntentKind, OpKind] = {
    "edge_put": OpKind.EDGE_PUT,
    "edge_delete": OpKind.EDGE_DELETE,
    "crdt": OpKind.CRDT_APPLY,
    "ts": OpKind.TS_APPEND,
}


@dataclass(frozen=True)
class Recompute:
    """An UPDATE's result as the transaction sees it, and how to compute it again."""

    row: Row
    assignments: list[tuple[str, Expr]]
    ctx: Ctx


@dataclass
class Txn:
    # (kind, collection, key, row or payload, expires_ms), in the order they were made
    intents: list[tuple[IntentKind, str, Any, Any, int | None]] = field(default_factory=list)
    overlay: dict[str, dict[Any, tuple[Row | None, int | None]]] = field(default_factory=dict)
    failed: bool = False
    # NOTIFYs made in the block: delivered at its COMMIT, dropped by a ROLLBACK.
    notes: list[Notification] = field(default_factory=list)
    # SAVEPOINTs, oldest first: what ROLLBACK TO puts back.
    savepoints: list[SavedPoint] = field(default_factory=list)

    def mark(self, name: str, cursors: frozenset[str]) -> None:
        overlay = {coll: dict(rows) for coll, rows in self.overlay.items()}
        point = SavedPoint(name, len(self.intents), overlay, len(self.notes), cursors)
        self.savepoints.append(point)

    def find(self, name: str) -> int:
        """The index of the newest savepoint called ``name`` (3B001 if there is none)."""
        for i in range(len(self.savepoints) - 1, -1, -1):
            if self.savepoints[i].name == name:
                return i
        raise DBError(f'savepoint "{name}" does not exist', "3B001")

    def roll_back_to(self, i: int) -> None:
        """Undo what was done after savepoint ``i``, which stays (as in PostgreSQL);
        a failed block is usable again."""
        point = self.savepoints[i]
        del self.savepoints[i + 1 :]
        del self.intents[point.intents :]
        del self.notes[point.notes :]
        self.overlay = {coll: dict(rows) for coll, rows in point.overlay.items()}
        self.failed = False


@dataclass(frozen=True)
class SavedPoint:
    name: str
    intents: int  # how many intents the block held
    overlay: dict[str, dict[Any, tuple[Row | None, int | None]]]  # a copy, as it was
    notes: int
    cursors: frozenset[str]  # the session's cursors then: later ones go with a rollback to it


@statement(ast.Begin, writes=False)
async def run_begin(s: Session, stmt: ast.Begin, params: list[Any]) -> Result:
    notices = []
    if s.txn is not None:
        notices.append("there is already a transaction in progress")
    else:
        s.txn = Txn()
    return Result(None, [], "BEGIN", notices)


@statement(ast.Commit)
async def run_commit(s: Session, stmt: ast.Commit, params: list[Any]) -> Result:
    txn, s.txn = s.txn, None
    if txn is None:
        return Result(None, [], "COMMIT", ["there is no transaction in progress"])
    if txn.failed:
        end_of_block(s, txn, committed=False)
        return Result(None, [], "ROLLBACK")
    committed = False
    try:
        await s.tenant.commit_ops(fold(s, txn))
        committed = True
    finally:
        end_of_block(s, txn, committed)
    if txn.notes:
        s.manager.notify_hub.publish(s.tenant.name, txn.notes)
    return Result(None, [], "COMMIT")


@statement(ast.Rollback, writes=False)
async def run_rollback(s: Session, stmt: ast.Rollback, params: list[Any]) -> Result:
    notices = [] if s.txn is not None else ["there is no transaction in progress"]
    if s.txn is not None:
        end_of_block(s, s.txn, committed=False)
    s.txn = None
    return Result(None, [], "ROLLBACK", notices)


@statement(ast.SetTransaction, writes=False)
async def run_set_transaction(s: Session, stmt: ast.SetTransaction, params: list[Any]) -> Result:
    return Result(None, [], "SET")


def end_of_block(s: Session, txn: Txn, committed: bool) -> None:
    """A transaction block ended: its cursors go, but those declared WITH HOLD in it
    stay if it committed; a held cursor from an earlier block always stays."""
    for name, cursor in list(s.cursors.items()):
        if cursor.txn is not txn:
            continue
        if committed and cursor.hold:
            cursor.txn = None
        else:
            del s.cursors[name]


def _in_block(s: Session, what: str) -> Txn:
    if s.txn is None:
        raise DBError(f"{what} can only be used in transaction blocks", "25P01")
    return s.txn


@statement(ast.Savepoint, writes=False)
async def run_savepoint(s: Session, stmt: ast.Savepoint, params: list[Any]) -> Result:
    _in_block(s, "SAVEPOINT").mark(stmt.name, frozenset(s.cursors))
    return Result(None, [], "SAVEPOINT")


@statement(ast.ReleaseSavepoint, writes=False)
async def run_release(s: Session, stmt: ast.ReleaseSavepoint, params: list[Any]) -> Result:
    """Forget the savepoint and every later one; what they covered stays done."""
    txn = _in_block(s, "RELEASE SAVEPOINT")
    del txn.savepoints[txn.find(stmt.name) :]
    return Result(None, [], "RELEASE")


@statement(ast.RollbackTo, writes=False)
async def run_rollback_to(s: Session, stmt: ast.RollbackTo, params: list[Any]) -> Result:
    txn = _in_block(s, "ROLLBACK TO SAVEPOINT")
    i = txn.find(stmt.name)
    kept = txn.savepoints[i].cursors
    txn.roll_back_to(i)
    for name in [n for n, c in s.cursors.items() if c.txn is txn and n not in kept]:
        del s.cursors[name]  # declared after the savepoint
    return Result(None, [], "ROLLBACK")


def fold(s: Session, txn: Txn) -> list[Op]:
    """Turn a transaction's intents into operations against the state now."""
    now = now_ms()
    current: dict[tuple[str, Any], Row | None] = {}
    ops: list[Op] = []
    for intent, coll, key, row, expires in txn.intents:
        if intent in PASS_THROUGH:
            ops.append((PASS_THROUGH[intent], coll, key, row, None))
            continue
        engine = s.collection(coll)
        ck = (coll, key)
        old = current[ck] if ck in current else engine.get(key, now)
        if intent == "delete":
            if old is not None:
                ops.append((OpKind.DELETE, coll, key, old, None))
            current[ck] = None
            continue
        if intent == "update":
            if old is None:
                continue  # deleted meanwhile: nothing left to update
            row = assign(engine, old, row.assignments, row.ctx)
        elif intent == "insert" and old is not None:
            raise duplicate_key(coll, engine.key_field, key)
        ops.append((OpKind.UPDATE if old is not None else OpKind.INSERT, coll, key, row, expires))
        current[ck] = row
    return ops


def read_row(s: Session, coll: str, engine: RowCollection, key: Any, now: int) -> Row | None:
    if s.txn is not None:
        over = s.txn.overlay.get(coll)
        if over is not None and key in over:
            return live_row(over[key], now)
    return engine.get(key, now)


def read_rows(s: Session, coll: str, engine: RowCollection, now: int) -> Iterable[Row]:
    over = s.txn.overlay.get(coll) if s.txn is not None else None
    if not over:
        return engine.scan(now)
    kf = engine.key_field
    rows = [r for r in engine.scan(now) if r[kf] not in over]
    return rows + [r for r in (live_row(e, now) for e in over.values()) if r is not None]


def read_expiry(s: Session, coll: str, engine: RowCollection, key: Any) -> int | None:
    """A key's expiry as this session sees it (its transaction may have set it)."""
    over = s.txn.overlay.get(coll) if s.txn is not None else None
    if over is not None and key in over:
        return over[key][1]
    return engine.expires_at(key)


def own_writes(s: Session, coll: str, kinds: tuple[str, ...]) -> list[tuple[Any, Any]]:
    """(key, payload) of this transaction's buffered writes of ``kinds`` to ``coll``:
    what reads of edges, CRDT documents and timeseries add to the committed state."""
    if s.txn is None:
        return []
    return [(k, r) for i, c, k, r, _ in s.txn.intents if c == coll and i in kinds]


async def commit_or_buffer(s: Session, coll: str, intents: list[Intent]) -> None:
    """Commit now (outside a transaction) or add to the transaction."""
    if s.txn is None:
        await s.tenant.commit_ops(fold(s, Txn([(i, coll, k, r, e) for i, k, r, e in intents])))
        return
    over = s.txn.overlay.setdefault(coll, {})
    for intent, key, row, expires in intents:
        s.txn.intents.append((intent, coll, key, row, expires))
        if intent not in PASS_THROUGH:  # the others are read back through _pending
            over[key] = (row.row if isinstance(row, Recompute) else row, expires)
