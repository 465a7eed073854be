"""Change streams and consumer groups: CREATE/DROP CHANGE STREAM, SHOW CHANGE STREAMS,
CREATE/DROP CONSUMER GROUP, SELECT * FROM STREAM .. CONSUMER GROUP, COMMIT OFFSETS.

Streams, groups and committed offsets are catalog records of the tenant (in its
WAL, then its checkpoints), so a ``kill -9`` loses none of them. A read returns
the changes after the group's committed offset, read from the WAL itself
(events/changes.py); the session remembers how far it read, and COMMIT OFFSETS
commits that. Delivery is at-least-once: what is read and not committed is
read again, by this session or the next.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING, Any

from nodedb_server import types as t
from nodedb_server.errors import (
    DuplicateObject,
    FeatureNotSupported,
    InsufficientPrivilege,
    InvalidParameterValue,
    ObjectNotInPrerequisiteState,
    UndefinedObject,
    UndefinedTable,
)
from nodedb_server.events.changes import (
    Change,
    ChangeBatch,
    WalGone,
    collect,
    commit_time,
    read_changes,
)
from nodedb_server.events.live import LivePlane, LiveQuery
from nodedb_server.events.notify import Notification, check_notification
from nodedb_server.sql import ast
from nodedb_server.sql.exec.values import now_ms
from nodedb_server.sql.registry import statement
from nodedb_server.sql.result import Result
from nodedb_server.tenants.catalog import GroupMeta, StreamMeta

if TYPE_CHECKING:
    from nodedb_server.sql.session import Session
    from nodedb_server.tenants.tenant import Tenant

# A read with no LIMIT returns at most this many changes (and whole transactions).
DEFAULT_BATCH = 1000

SHOW_STREAMS_COLUMNS = [
    ("name", t.TEXT),
    ("collection", t.TEXT),
    ("compaction", t.TEXT),
    ("created_lsn", t.INT8),
    ("groups", t.INT8),
]
CHANGE_COLUMNS = [
    ("lsn", t.INT8),
    ("op", t.TEXT),
    ("collection", t.TEXT),
    ("id", t.TEXT),
    ("new_value", t.JSONB),
    ("old_value", t.JSONB),
    ("ts", t.TIMESTAMPTZ),
]


# A read of at most this many records from memory runs on the event loop: about half
# a millisecond, less than handing it to a worker thread and back costs.
INLINE_RECORDS = 256


def _stream(s: Session, name: str) -> StreamMeta:
    stream = s.tenant.state.streams.get(name)
    if stream is None:
        raise UndefinedObject(f'change stream "{name}" does not exist')
    return stream


def _group(s: Session, stream: str, name: str) -> GroupMeta:
    _stream(s, stream)
    group = s.tenant.state.groups.get((stream, name))
    if group is None:
        raise UndefinedObject(f'consumer group "{name}" does not exist on change stream "{stream}"')
    return group


@statement(ast.CreateChangeStream)
async def create_change_stream(
    s: Session, stmt: ast.CreateChangeStream, params: list[Any]
) -> Result:
    if stmt.name in s.tenant.state.streams:
        if stmt.if_not_exists:
            notice = f'change stream "{stmt.name}" already exists, skipping'
            return Result(None, [], "CREATE CHANGE STREAM", [notice])
        raise DuplicateObject(f'change stream "{stmt.name}" already exists')
    if s.tenant.state.collection(stmt.collection) is None:
        raise UndefinedTable(f'collection "{stmt.collection}" does not exist')
    args = {"name": stmt.name, "collection": stmt.collection, "compaction": stmt.compaction}
    await s.tenant.commit_catalog("create_stream", args)
    return Result(None, [], "CREATE CHANGE STREAM")


@statement(ast.DropChangeStream)
async def drop_change_stream(s: Session, stmt: ast.DropChangeStream, params: list[Any]) -> Result:
    if stmt.name not in s.tenant.state.streams:
        if stmt.if_exists:
            notice = f'change stream "{stmt.name}" does not exist, skipping'
            return Result(None, [], "DROP CHANGE STREAM", [notice])
        raise UndefinedObject(f'change stream "{stmt.name}" does not exist')
    await s.tenant.commit_catalog("drop_stream", {"name": stmt.name})
    for key in [k for k in s.stream_reads if k[0] == stmt.name]:
        del s.stream_reads[key]
    return Result(None, [], "DROP CHANGE STREAM")


@statement(ast.ShowChangeStreams, columns=SHOW_STREAMS_COLUMNS, writes=False, implicit=True)
async def show_change_streams(s: Session, stmt: ast.ShowChangeStreams, params: list[Any]) -> Result:
    st = s.tenant.state
    rows = [
        (
            m.name,
            m.collection,
            m.compaction or None,
            m.created_lsn,
            sum(k[0] == m.name for k in st.groups),
        )
        for _, m in sorted(st.streams.items())
    ]
    return Result(list(SHOW_STREAMS_COLUMNS), rows, f"SHOW {len(rows)}")


@statement(ast.CreateConsumerGroup)
async def create_consumer_group(
    s: Session, stmt: ast.CreateConsumerGroup, params: list[Any]
) -> Result:
    _stream(s, stmt.stream)
    if (stmt.stream, stmt.name) in s.tenant.state.groups:
        if stmt.if_not_exists:
            notice = f'consumer group "{stmt.name}" already exists, skipping'
            return Result(None, [], "CREATE CONSUMER GROUP", [notice])
        raise DuplicateObject(
            f'consumer group "{stmt.name}" already exists on change stream "{stmt.stream}"'
        )
    await s.tenant.commit_catalog("create_group", {"name": stmt.name, "stream": stmt.stream})
    return Result(None, [], "CREATE CONSUMER GROUP")


@statement(ast.DropConsumerGroup)
async def drop_consumer_group(s: Session, stmt: ast.DropConsumerGroup, params: list[Any]) -> Result:
    _stream(s, stmt.stream)
    if (stmt.stream, stmt.name) not in s.tenant.state.groups:
        if stmt.if_exists:
            notice = f'consumer group "{stmt.name}" does not exist, skipping'
            return Result(None, [], "DROP CONSUMER GROUP", [notice])
        _group(s, stmt.stream, stmt.name)
    await s.tenant.commit_catalog("drop_group", {"name": stmt.name, "stream": stmt.stream})
    s.stream_reads.pop((stmt.stream, stmt.name), None)
    return Result(None, [], "DROP CONSUMER GROUP")


def _row(c: Change) -> tuple[Any, ...]:
    ts = dt.datetime.fromtimestamp(c.commit_us / 1e6, dt.UTC)
    return (c.lsn, c.op, c.collection, str(c.id), c.new_value, None, ts)


def compacted(changes: list[Change]) -> list[Change]:
    """The newest change per id, in LSN order (compaction = 'key')."""
    newest = {(c.collection, c.id): c for c in changes}
    return sorted(newest.values(), key=lambda c: c.lsn)


@statement(ast.ReadStream, columns=CHANGE_COLUMNS, writes=False)
async def read_stream(s: Session, stmt: ast.ReadStream, params: list[Any]) -> Result:
    stream = _stream(s, stmt.stream)
    group = _group(s, stmt.stream, stmt.group)
    tenant = s.tenant
    wal = tenant.store.wal
    head = wal.durable_lsn if wal is not None else tenant.state.last_lsn
    limit = stmt.limit if stmt.limit is not None else DEFAULT_BATCH
    if limit == 0:
        return Result(list(CHANGE_COLUMNS), [], "SELECT 0")
    wanted = {stream.collection}
    notices = []
    after = group.committed_lsn
    while True:
        try:
            batch = await _read(tenant, wanted, after, head, limit)
            break
        except WalGone as e:
            if e.oldest - 1 <= after:  # cannot happen: the WAL reaches back that far
                raise
            # Evicted past [events] max_retained_bytes: go on from what is left, saying so.
            notices.append(
                f'consumer group "{group.name}" of change stream "{stream.name}" fell behind '
                f"the retained WAL: {e.oldest - after - 1} records after LSN {after} were "
                f"evicted; reading from LSN {e.oldest}, the oldest still available"
            )
            after = e.oldest - 1
    s.stream_reads[(stream.name, group.name)] = batch.read_to
    changes = compacted(batch.changes) if stream.compaction == "key" else batch.changes
    rows = [_row(c) for c in changes]
    return Result(list(CHANGE_COLUMNS), rows, f"SELECT {len(rows)}", notices)


async def _read(
    tenant: Tenant, wanted: set[str], after: int, head: int, limit: int, since_us: int = 0
) -> ChangeBatch:
    """From memory if it reaches back far enough, else from the segment files."""
    loop = asyncio.get_running_loop()
    recent = tenant.recent.after(after, head)
    if recent is not None:
        if len(recent) <= INLINE_RECORDS:
            return collect(recent, wanted, after, limit, since_us)
        return await loop.run_in_executor(None, collect, recent, wanted, after, limit, since_us)
    store = tenant.store
    return await loop.run_in_executor(
        None,
        read_changes,
        store.wal_dir,
        store.aead,
        tenant.id,
        wanted,
        after,
        head,
        limit,
        since_us,
        tenant.wal_positions,
    )


@statement(ast.CommitOffsets)
async def commit_offsets(s: Session, stmt: ast.CommitOffsets, params: list[Any]) -> Result:
    group = _group(s, stmt.stream, stmt.group)
    tag = "COMMIT OFFSETS" if stmt.lsn is None else "COMMIT OFFSET"
    lsn = stmt.lsn
    if lsn is None:
        lsn = s.stream_reads.get((stmt.stream, stmt.group))
        if lsn is None:
            raise ObjectNotInPrerequisiteState(
                f'this session has read nothing from change stream "{stmt.stream}" for '
                f'consumer group "{stmt.group}" to commit'
            )
    elif lsn > s.tenant.last_lsn:
        raise InvalidParameterValue(
            f"LSN {lsn} is past the tenant's last committed LSN {s.tenant.last_lsn}"
        )
    if lsn <= group.committed_lsn:
        notice = (
            f'consumer group "{stmt.group}" has committed LSN {group.committed_lsn} already; '
            f"offsets never move backwards, LSN {lsn} changes nothing"
        )
        return Result(None, [], tag, [notice])
    await s.tenant.commit_catalog(
        "commit_offset", {"name": stmt.group, "stream": stmt.stream, "lsn": lsn}
    )
    return Result(None, [], tag)


@statement(ast.ShowChanges, columns=CHANGE_COLUMNS, writes=False, implicit=True)
async def show_changes(s: Session, stmt: ast.ShowChanges, params: list[Any]) -> Result:
    """The retained changes of a collection since an LSN or a time, no stream needed."""
    tenant = s.tenant
    if tenant.state.collection(stmt.collection) is None:
        raise UndefinedTable(f'collection "{stmt.collection}" does not exist')
    wal = tenant.store.wal
    head = wal.durable_lsn if wal is not None else tenant.state.last_lsn
    limit = stmt.limit if stmt.limit is not None else DEFAULT_BATCH
    notices = []
    if stmt.since_lsn is not None:
        after, since_us = stmt.since_lsn, 0
    else:
        # From the oldest retained record on, skipping those committed before the time.
        segments = wal.segments if wal is not None else []
        after, since_us = (segments[0].first_lsn - 1 if segments else head), stmt.since_us or 0
    loop = asyncio.get_running_loop()
    store = tenant.store
    try:
        batch = await _read(tenant, {stmt.collection}, after, head, limit, since_us)
    except WalGone as e:
        if stmt.since_lsn is not None:
            raise ObjectNotInPrerequisiteState(
                f"the WAL no longer holds LSN {stmt.since_lsn + 1}: the oldest LSN retained "
                f"is {e.oldest}"
            ) from None
        raise  # the oldest segment went meanwhile: cannot be, it was just listed
    if stmt.since_lsn is None and after > 0:
        first_us = await loop.run_in_executor(None, commit_time, store.wal_dir, after + 1)
        if first_us is not None and first_us > (stmt.since_us or 0):
            notices.append(
                f"the WAL is retained from LSN {after + 1} on: changes committed before "
                f"{dt.datetime.fromtimestamp(first_us / 1e6, dt.UTC).isoformat()} are not "
                "shown"
            )
    if len(batch.changes) >= limit or batch.read_to < head:
        notices.append(f"more changes follow: SHOW CHANGES .. SINCE LSN {batch.read_to}")
    rows = [_row(c) for c in batch.changes]
    return Result(list(CHANGE_COLUMNS), rows, f"SHOW {len(rows)}", notices)


# ---- LISTEN / NOTIFY -------------------------------------------------------------------


@statement(ast.Listen, writes=False, implicit=True)
async def listen(s: Session, stmt: ast.Listen, params: list[Any]) -> Result:
    if s.deliver is None:
        raise FeatureNotSupported("LISTEN needs a client connection")
    s.manager.notify_hub.listen(s.tenant.name, stmt.channel, s.pid, s.deliver)
    s.listening.add(stmt.channel)
    return Result(None, [], "LISTEN")


@statement(ast.Unlisten, writes=False, implicit=True)
async def unlisten(s: Session, stmt: ast.Unlisten, params: list[Any]) -> Result:
    channels = set(s.listening) if stmt.channel is None else {stmt.channel}
    s.manager.notify_hub.unlisten_all(s.tenant.name, channels, s.pid)
    s.listening -= channels
    return Result(None, [], "UNLISTEN")


def notify(s: Session, channel: str, payload: str) -> None:
    """NOTIFY and pg_notify: now, or at the COMMIT of the transaction block."""
    check_notification(channel, payload)
    note = Notification(s.pid, channel, payload)
    if s.txn is not None:
        s.txn.notes.append(note)
    else:
        s.manager.notify_hub.publish(s.tenant.name, [note])


@statement(ast.Notify, writes=False, implicit=True)
async def run_notify(s: Session, stmt: ast.Notify, params: list[Any]) -> Result:
    notify(s, stmt.channel, stmt.payload)
    return Result(None, [], "NOTIFY")


# ---- LIVE SELECT ---------------------------------------------------------------------

LIVE_COLUMNS = [("subscription_id", t.TEXT), ("channel", t.TEXT)]


@statement(ast.LiveSelect, columns=LIVE_COLUMNS, writes=False)
async def live_select(s: Session, stmt: ast.LiveSelect, params: list[Any]) -> Result:
    if s.deliver is None:
        raise FeatureNotSupported("LIVE SELECT needs a client connection")
    tenant = s.tenant
    collection = stmt.select.source
    assert collection is not None
    engine = s.collection(collection)  # 42P01 if there is none
    wal = tenant.store.wal
    head = wal.durable_lsn if wal is not None else tenant.state.last_lsn
    ctx = s.ctx(params)
    query = LiveQuery(
        LivePlane.new_id(), collection, stmt.select.where, ctx, s.pid, s.deliver, start_after=head
    )
    if query.where is not None:  # the rows that match now: one leaving later is a DELETE
        key = engine.key_field
        for row in engine.scan(now_ms()):
            if query.where.eval(row, ctx) is True:
                query.matching[row[key]] = row
    if stmt.since_lsn is not None:
        query.backlog = []
    tenant.live.add(query)
    s.live_queries.add(query.id)
    if stmt.since_lsn is not None:
        try:
            await _send_history(tenant, query, stmt.since_lsn, head)
        except BaseException:
            tenant.live.remove(query.id)
            s.live_queries.discard(query.id)
            raise
        query.end_history()
    return Result(list(LIVE_COLUMNS), [(query.id, query.channel)], "SELECT 1")


async def _send_history(tenant: Tenant, query: LiveQuery, since: int, head: int) -> None:
    """The retained changes after ``since`` up to ``head``, in order (55000 if the WAL
    no longer reaches back to it)."""
    after = since
    while after < head:
        try:
            batch = await _read(tenant, {query.collection}, after, head, DEFAULT_BATCH)
        except WalGone as e:
            raise ObjectNotInPrerequisiteState(
                f"the WAL no longer holds LSN {after + 1}: the oldest LSN retained is "
                f"{e.oldest}; LIVE SELECT .. SINCE LSN cannot fill the gap"
            ) from None
        for change in batch.changes:
            query.send_change(change)
        if batch.read_to <= after:
            break  # a segment stopped early: what follows comes live
        after = batch.read_to


@statement(ast.KillLive, writes=False)
async def kill_live(s: Session, stmt: ast.KillLive, params: list[Any]) -> Result:
    query = s.tenant.live.queries.get(stmt.query_id)
    if query is None:
        raise UndefinedObject(f'live query "{stmt.query_id}" does not exist')
    if query.pid != s.pid and not s.user["superuser"]:
        raise InsufficientPrivilege("a live query of another session needs the superuser")
    s.tenant.live.remove(stmt.query_id)
    s.live_queries.discard(stmt.query_id)
    return Result(None, [], "KILL")
