"""The sequence functions over a SERIAL (or identity) key's sequence: nextval, currval,
setval, pg_get_serial_sequence.

The server keeps no sequence objects of their own: the sequence of table t's SERIAL
key id, named t_id_seq as PostgreSQL names it, is the table's key generator
(engines/document.py DocumentCollection.next_serial). It never hands out a value
twice while the server runs, and after a restart it goes on past the largest key
stored; unlike PostgreSQL's, a value taken by nextval and never stored may be handed
out again after a restart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodedb_server.engines.document import DocumentCollection
from nodedb_server.errors import DBError, UndefinedTable

if TYPE_CHECKING:
    from nodedb_server.sql.expr import Ctx
    from nodedb_server.sql.session import Session


def _table_of(s: Session, sequence: Any) -> DocumentCollection:
    name = str(sequence).strip()
    if name.startswith('"') and name.endswith('"'):
        name = name[1:-1]
    name = name.removeprefix("public.")
    for meta in s.tenant.state.active():
        engine = s.tenant.state.engines[meta.name]
        if isinstance(engine, DocumentCollection) and engine.sequence == name:
            return engine
    raise UndefinedTable(f'relation "{sequence}" does not exist')


def nextval(ctx: Ctx, sequence: Any) -> int | None:
    if sequence is None:
        return None
    s = ctx.session
    value = _table_of(s, sequence).next_serial()
    s.sequence_values[str(sequence).removeprefix("public.")] = value
    return value


def currval(ctx: Ctx, sequence: Any) -> int | None:
    if sequence is None:
        return None
    _table_of(ctx.session, sequence)
    value = ctx.session.sequence_values.get(str(sequence).removeprefix("public."))
    if value is None:
        raise DBError(
            f'currval of sequence "{sequence}" is not yet defined in this session', "55000"
        )
    return value


def setval(ctx: Ctx, sequence: Any, value: Any, is_called: Any = True) -> int | None:
    if sequence is None or value is None:
        return None
    n = int(value)
    if n < 1:
        raise DBError(
            f'setval: value {n} is out of bounds for sequence "{sequence}" (1..'
            "9223372036854775807)",
            "22003",
        )
    _table_of(ctx.session, sequence).set_serial(n + 1 if is_called is not False else n)
    if is_called is not False:
        ctx.session.sequence_values[str(sequence).removeprefix("public.")] = n
    return n


def serial_sequence(ctx: Ctx, table: Any, column: Any) -> str | None:
    """pg_get_serial_sequence('t', 'id'): public.t_id_seq, or NULL if id is no SERIAL."""
    if table is None or column is None:
        return None
    found = ctx.session.tenant.state.collection(str(table).removeprefix("public.").strip('"'))
    if found is None:
        raise UndefinedTable(f'relation "{table}" does not exist')
    engine = found[1]
    if isinstance(engine, DocumentCollection) and engine.sequence and engine.key_field == column:
        return f"public.{engine.sequence}"
    return None
