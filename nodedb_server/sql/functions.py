"""Every function a statement can call: one table.

Each entry gives the function's result type, the types of its arguments (which
type an untyped parameter passed to it: ``crdt_state($1, $2)``), how many
arguments it takes, whether its implementation reads the session (through the
evaluation context), and the implementation. A function that waits
(``pg_sleep``) also has ``wait``, awaited before its statement's rows are
computed, since expressions are evaluated without awaiting.

The implementations that belong to a statement family (CRDT, settings,
vectors) live with it under ``sql/exec/`` and are imported when first called
(those modules import ``expr.py``, which imports this table); the
scalar helpers come from ``sql/scalars.py``.

Aggregates (count, sum, avg, min, max) are not functions here: they are their
own expression (``expr.Agg``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nodedb_server import SERVER_VERSION
from nodedb_server import types as t
from nodedb_server.errors import DataError, FeatureNotSupported, InvalidParameterValue
from nodedb_server.sql.scalars import doc_get, number, time_bucket

if TYPE_CHECKING:
    from nodedb_server.sql.expr import Ctx


@dataclass(frozen=True)
class Function:
    name: str
    result: int  # type OID
    args: tuple[int, ...] = ()  # declared argument types, as far as they are known
    arity: int | None = None  # arguments it takes; None: any number
    impl: Callable[..., Any] = lambda *a: None
    session: bool = False  # ``impl`` takes the evaluation context first
    wait: Callable[..., Awaitable[None]] | None = None  # (ctx, *args), see above


def _text(v: Any) -> Any:
    return v if v is None or isinstance(v, str) else t.to_json(v)


def _doc_get(value: Any, path: Any) -> Any:
    return _text(doc_get(value, path))


def _abs(v: Any) -> Any:
    return None if v is None else abs(number(v))


def _crdt_state(ctx: Ctx, coll: Any, doc_id: Any) -> bytes | None:
    from nodedb_server.sql.exec.crdt import crdt_state

    return crdt_state(ctx.session, coll, doc_id)


def _crdt_apply(ctx: Ctx, *args: Any) -> Any:
    raise FeatureNotSupported(
        "crdt_apply() writes, so it is a statement of its own: "
        "SELECT crdt_apply(collection, id, update)"
    )


def _current_setting(ctx: Ctx, name: Any) -> str:
    from nodedb_server.sql.exec.admin import current_setting

    return current_setting(ctx.session, name)


def _set_config(ctx: Ctx, name: Any, value: Any, is_local: Any = False) -> str:
    from nodedb_server.sql.exec.admin import set_config

    return set_config(ctx.session, name, value, is_local)


def _pg_notify(ctx: Ctx, channel: Any, payload: Any) -> None:
    from nodedb_server.sql.exec.events import notify

    if channel is None:
        raise InvalidParameterValue("channel name cannot be empty")
    notify(ctx.session, str(channel), "" if payload is None else str(payload))


def _vector_distance(ctx: Ctx, value: Any, query: Any) -> float | None:
    from nodedb_server.sql.exec.vector import vector_distance

    return vector_distance(ctx.engine, value, query)


async def _sleep(ctx: Ctx, seconds: Any = None) -> None:
    """Waits without blocking other sessions (cancellable)."""
    try:
        await asyncio.sleep(max(0.0, float(seconds)))
    except (TypeError, ValueError):
        raise DataError("pg_sleep() takes a number of seconds") from None


def _sequence(fn: str) -> Callable[..., Any]:
    """One of sql/exec/sequences.py's functions, imported when first called."""

    def call(ctx: Ctx, *args: Any) -> Any:
        from nodedb_server.sql.exec import sequences

        return getattr(sequences, fn)(ctx, *args)

    return call


def _now(ctx: Ctx) -> dt.datetime:
    return dt.datetime.now(dt.UTC)


FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in (
        Function("doc_get", t.TEXT, (t.JSONB, t.TEXT), 2, _doc_get),
        Function("lower", t.TEXT, (t.TEXT,), 1, lambda v: None if v is None else str(v).lower()),
        Function("upper", t.TEXT, (t.TEXT,), 1, lambda v: None if v is None else str(v).upper()),
        Function("length", t.INT4, (), 1, lambda v: None if v is None else len(v)),
        Function("abs", t.FLOAT8, (), 1, _abs),
        Function(
            "coalesce", t.TEXT, (), None, lambda *vs: next((v for v in vs if v is not None), None)
        ),
        Function("time_bucket", t.TIMESTAMPTZ, (), 2, time_bucket),
        Function("version", t.TEXT, (), 0, lambda c: f"PostgreSQL {SERVER_VERSION}", True),
        Function("current_database", t.TEXT, (), 0, lambda c: c.session.database, True),
        Function("current_user", t.NAME, (), 0, lambda c: c.session.user["name"], True),
        Function("session_user", t.NAME, (), 0, lambda c: c.session.user["name"], True),
        Function("current_schema", t.NAME, (), 0, lambda c: "public", True),
        Function("now", t.TIMESTAMPTZ, (), 0, _now, True),
        Function("current_timestamp", t.TIMESTAMPTZ, (), 0, _now, True),
        Function("current_lsn", t.INT8, (), 0, lambda c: c.session.tenant.last_lsn, True),
        Function("pg_backend_pid", t.INT4, (), 0, lambda c: c.session.pid, True),
        Function("pg_sleep", t.VOID, (t.FLOAT8,), 1, lambda c, s=None: None, True, _sleep),
        Function("crdt_state", t.BYTEA, (t.TEXT, t.TEXT), 2, _crdt_state, True),
        Function("crdt_apply", t.BOOL, (t.TEXT, t.TEXT, t.BYTEA), 3, _crdt_apply, True),
        Function("current_setting", t.TEXT, (t.TEXT,), None, _current_setting, True),
        Function("set_config", t.TEXT, (t.TEXT, t.TEXT, t.BOOL), 3, _set_config, True),
        Function("pg_notify", t.VOID, (t.TEXT, t.TEXT), 2, _pg_notify, True),
        Function("nextval", t.INT8, (t.TEXT,), 1, _sequence("nextval"), True),
        Function("currval", t.INT8, (t.TEXT,), 1, _sequence("currval"), True),
        Function("setval", t.INT8, (t.TEXT, t.INT8, t.BOOL), None, _sequence("setval"), True),
        Function(
            "pg_get_serial_sequence",
            t.TEXT,
            (t.TEXT, t.TEXT),
            2,
            _sequence("serial_sequence"),
            True,
        ),
        Function(
            "vector_distance",
            t.FLOAT8,
            (t.FLOAT4_ARRAY, t.FLOAT4_ARRAY),
            2,
            _vector_distance,
            True,
        ),
    )
}
