"""The PostgreSQL protocol as a state machine with no I/O (after h11's design).

Feed it bytes with ``receive_data`` and pull events with ``next_event``; it
checks framing and which messages are legal in the current phase, and raises
``ProtocolViolation`` (08P01) for anything else. The server shell decides
what the events mean and tells the machine about phase changes.

Phases:

    STARTUP --Startup--> AUTH --auth_ok()--> READY <--> COPY_IN
       |  SSLRequest/GSSENCRequest: stays in STARTUP (answered 'N')
       +--CancelRequest--> CLOSED

In READY, after an error inside an extended-query batch, messages up to the
next Sync are dropped (protocol docs, "Extended Query": "the backend discards
frontend messages until a Sync is read").
"""

from __future__ import annotations

import enum
import struct

from nodedb_server.errors import ProtocolViolation
from nodedb_server.pgwire import messages as m

_LEN = struct.Struct("!i")
# A startup packet holds a few name/value pairs; PostgreSQL caps it at 10000.
MAX_STARTUP_BYTES = 10000
_EXTENDED = (m.Parse, m.Bind, m.Describe, m.Execute, m.Close, m.Flush)
_TAGS_IN_READY = frozenset(b"QPBDECSHXdcf")
_TAGS_IN_COPY = frozenset(b"dcfSHX")
_TAGS_IN_AUTH = frozenset(b"pX")
# Consumed bytes are dropped from the front of the buffer once there are this
# many, so a burst of small messages costs one memmove, not one per message.
_COMPACT_AT = 64 * 1024


class Phase(enum.Enum):
    STARTUP = "startup"
    AUTH = "auth"
    READY = "ready"
    COPY_IN = "copy_in"
    CLOSED = "closed"


_ALLOWED = {Phase.AUTH: _TAGS_IN_AUTH, Phase.READY: _TAGS_IN_READY, Phase.COPY_IN: _TAGS_IN_COPY}


class PgConnection:
    def __init__(self, max_message_bytes: int):
        self.max_message_bytes = max_message_bytes
        self.phase = Phase.STARTUP
        self._buf = bytearray()
        self._pos = 0  # bytes of _buf already consumed
        self._skip_until_sync = False

    def receive_data(self, data: bytes) -> None:
        if self._pos >= _COMPACT_AT or self._pos == len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_event(self) -> m.Event | None:
        """The next complete event, or None if more bytes are needed."""
        while True:
            event = self._next_raw()
            if event is None:
                return None
            if self._skip_until_sync:
                if isinstance(event, m.Sync):
                    self._skip_until_sync = False
                elif isinstance(event, _EXTENDED):
                    continue
            return event

    def _next_raw(self) -> m.Event | None:
        if self.phase is Phase.CLOSED:
            return None
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if self.phase is Phase.STARTUP:
            if avail < 4:
                return None
            (n,) = _LEN.unpack_from(buf, pos)
            if n < 8 or n > MAX_STARTUP_BYTES:
                raise ProtocolViolation("invalid length of startup packet")
            if avail < n:
                return None
            body = bytes(buf[pos + 4 : pos + n])
            self._pos = pos + n
            event = m.decode_startup(body)
            if isinstance(event, m.Startup):
                self.phase = Phase.AUTH
            elif isinstance(event, m.CancelRequest):
                self.phase = Phase.CLOSED
            return event
        if avail < 5:
            return None
        kind = buf[pos]
        (n,) = _LEN.unpack_from(buf, pos + 1)
        if n < 4:
            raise ProtocolViolation("invalid message length")
        if n > self.max_message_bytes:
            raise ProtocolViolation(f"message of {n} bytes exceeds max_message_bytes")
        if kind not in _ALLOWED[self.phase]:
            raise ProtocolViolation(
                f"unexpected message type 0x{kind:02x} in the {self.phase.value} phase"
            )
        if avail < n + 1:
            return None
        body = bytes(buf[pos + 5 : pos + n + 1])
        self._pos = pos + n + 1
        event = m.decode_message(kind, body)
        if isinstance(event, m.Terminate):
            self.phase = Phase.CLOSED
        return event

    # ---- transitions the server decides ------------------------------------------------

    def auth_ok(self) -> None:
        if self.phase is not Phase.AUTH:
            raise ProtocolViolation("authentication finished outside the auth phase")
        self.phase = Phase.READY

    def start_copy_in(self) -> None:
        self.phase = Phase.COPY_IN

    def end_copy_in(self) -> None:
        if self.phase is Phase.COPY_IN:
            self.phase = Phase.READY

    def discard_until_sync(self) -> None:
        self._skip_until_sync = True

    def close(self) -> None:
        self.phase = Phase.CLOSED
