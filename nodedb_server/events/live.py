"""LIVE SELECT: committed changes of a collection pushed to the subscribing session.

``LIVE SELECT * FROM coll [WHERE ..] [SINCE LSN n]`` answers one row (its
subscription id and channel), then sends each matching change as a
NotificationResponse on that channel, payload the change as JSON (lsn, op,
collection, id, new_value, old_value, ts).

Fed like the change streams: the tenant's WAL hands each durable batch to
``LivePlane.feed``, which only queues it; one task per tenant decodes the
records and offers each change to the subscriptions on its collection, so a
subscription never delays a writer. The WHERE is applied to the new row; a
row that matched and no longer does is sent as a DELETE (its old_value the
row last seen matching), and one that starts to match as an INSERT. Which
rows match is known from the collection when the subscription starts and
from every change after it.

``SINCE LSN n`` first sends the retained changes after n (changes arriving
meanwhile wait behind them), so a client that reconnects with the last LSN it
saw misses nothing the WAL still holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nodedb_server import types as t
from nodedb_server.events.changes import Change, record_changes
from nodedb_server.events.notify import Deliver, Notification
from nodedb_server.sql.expr import Ctx, Expr
from nodedb_server.storage.records import Record

log = logging.getLogger("nodedb.events")


@dataclass
class LiveQuery:
    id: str
    collection: str
    where: Expr | None
    ctx: Ctx
    pid: int
    deliver: Deliver
    # The rows matching the WHERE as last seen, by id (None: known to match, row unseen).
    matching: dict[Any, dict[str, Any] | None] = field(default_factory=dict)
    # The last LSN durable when it started: later ones come live, earlier ones only as
    # SINCE's history, which is sent while live changes wait in ``backlog``.
    start_after: int = 0
    backlog: list[Change] | None = None

    @property
    def channel(self) -> str:
        return f"live_{self.id}"

    def offer(self, change: Change) -> None:
        """A live change (from the plane)."""
        if change.lsn <= self.start_after:
            return  # durable before the subscription: history's, if anyone's
        if self.backlog is not None:
            self.backlog.append(change)
        else:
            self.send_change(change)

    def send_change(self, change: Change) -> None:
        """Apply the WHERE to a change and send what it means to this subscription."""
        new = change.new_value
        matches = new is not None and (self.where is None or self._matches(new))
        was = change.id in self.matching
        if matches:
            op = change.op if was or self.where is None or change.op == "INSERT" else "INSERT"
            old = self.matching.get(change.id)
            self.matching[change.id] = new
            self._send(change, op, new, old)
        elif was or (self.where is None and change.op == "DELETE"):
            old = self.matching.pop(change.id, None)
            self._send(change, "DELETE", None, old)

    def end_history(self) -> None:
        """SINCE's history is sent: the changes that waited behind it follow."""
        backlog, self.backlog = self.backlog or [], None
        for change in backlog:
            self.send_change(change)

    def _matches(self, row: dict[str, Any]) -> bool:
        assert self.where is not None
        try:
            return self.where.eval(row, self.ctx) is True
        except Exception:  # a row the WHERE cannot be applied to does not match
            return False

    def _send(
        self, c: Change, op: str, new: dict[str, Any] | None, old: dict[str, Any] | None
    ) -> None:
        payload = {
            "lsn": c.lsn,
            "op": op,
            "collection": c.collection,
            "id": c.id,
            "new_value": new,
            "old_value": old,
            "ts": dt.datetime.fromtimestamp(c.commit_us / 1e6, dt.UTC).isoformat(),
        }
        self.deliver(Notification(self.pid, self.channel, t.to_json(payload)))


class LivePlane:
    """A tenant's LIVE SELECT subscriptions and the task that feeds them."""

    def __init__(self) -> None:
        self.queries: dict[str, LiveQuery] = {}
        self._queue: list[Record] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(8)

    def add(self, query: LiveQuery) -> None:
        self.queries[query.id] = query
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="live-select")

    def remove(self, query_id: str) -> LiveQuery | None:
        return self.queries.pop(query_id, None)

    def remove_session(self, pid: int) -> None:
        for qid in [q.id for q in self.queries.values() if q.pid == pid]:
            del self.queries[qid]

    def feed(self, records: list[Record]) -> None:
        """Durable records, on the event loop; only queued here."""
        if self.queries:
            self._queue.extend(records)
            self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue, []
            try:
                self._dispatch(batch)
            except Exception:
                log.exception("LIVE SELECT: delivering changes failed")
            await asyncio.sleep(0)  # let sessions run between batches

    def _dispatch(self, batch: list[Record]) -> None:
        by_collection: dict[str, list[LiveQuery]] = {}
        for q in self.queries.values():
            by_collection.setdefault(q.collection, []).append(q)
        if not by_collection:
            return
        wanted = set(by_collection)
        for rec in batch:
            for change in record_changes(rec.lsn, rec.rtype, rec.commit_us, rec.body, wanted):
                for q in by_collection[change.collection]:
                    q.offer(change)


Feed = Callable[[list[Record]], None]
