"""LISTEN / NOTIFY: channels within a tenant, delivered as PostgreSQL delivers them.

A session listens on channels of its own tenant; NOTIFY (or pg_notify) outside
a transaction block delivers at once, inside one at its COMMIT (in commit
order; a ROLLBACK drops them), to every session of the tenant listening on the
channel, the sender included. A session gets a notification between statements
or while idle, never in the middle of a statement's reply (pgwire/server.py).
Notifications live in memory only, as in PostgreSQL: a session that is not
connected when one is sent never gets it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nodedb_server.errors import InvalidParameterValue

# PostgreSQL's limit on a payload (it is the size of its queue pages, less a header).
MAX_PAYLOAD_BYTES = 8000


@dataclass(frozen=True)
class Notification:
    pid: int  # the sending session
    channel: str
    payload: str


# How a listening session takes a notification (the connection writes or queues it).
Deliver = Callable[[Notification], None]


class NotifyHub:
    """Who listens on what, per tenant."""

    def __init__(self) -> None:
        self._channels: dict[tuple[str, str], dict[int, Deliver]] = {}

    def listen(self, tenant: str, channel: str, pid: int, deliver: Deliver) -> None:
        self._channels.setdefault((tenant, channel), {})[pid] = deliver

    def unlisten(self, tenant: str, channel: str, pid: int) -> None:
        listeners = self._channels.get((tenant, channel))
        if listeners is not None:
            listeners.pop(pid, None)
            if not listeners:
                del self._channels[(tenant, channel)]

    def unlisten_all(self, tenant: str, channels: set[str], pid: int) -> None:
        for channel in channels:
            self.unlisten(tenant, channel, pid)

    def publish(self, tenant: str, notes: list[Notification]) -> None:
        """Hand each notification, in order, to every session listening on its channel."""
        for note in notes:
            for deliver in list(self._channels.get((tenant, note.channel), {}).values()):
                deliver(note)


def check_notification(channel: str, payload: str) -> None:
    if not channel:
        raise InvalidParameterValue("channel name cannot be empty")
    if len(payload.encode()) >= MAX_PAYLOAD_BYTES:
        raise InvalidParameterValue("payload string too long")
