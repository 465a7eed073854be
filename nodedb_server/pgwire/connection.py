"""The PostgreSQL protocol (3.0) as a state machine with no I/O, after h11.

The server feeds the client's bytes to ``receive_data`` and takes what the client
said from ``next_event``; it hands each message it answers to ``send``, which
moves the state and returns the bytes to write. Nothing here touches a socket,
so every rule is tested with byte strings (tests/unit/test_pgwire_connection.py).
A message that is not legal in the current state, from either side, is refused
with ProtocolViolation (08P01) through the one transition function.

States ("<" a client message the machine reads, ">" a message the server sends):

    STARTUP          < SSLRequest, GSSENCRequest: > 'N', stays
                     < StartupMessage -> AUTH;  < CancelRequest -> CLOSED
    AUTH             < password or SASL message;  > AuthenticationSASL*
                     > AuthenticationOk -> AUTHENTICATED
    AUTHENTICATED    > ParameterStatus, BackendKeyData;  > ReadyForQuery -> IDLE
    IDLE             < Query -> SIMPLE_QUERY;  < Sync -> SYNC;  < Flush: stays
                     < Parse, Bind, Describe, Execute, Close -> EXTENDED
    SIMPLE_QUERY     > results, ErrorResponse (the Query goes on to its end)
                     > CopyInResponse -> COPY_IN;  > CopyOutResponse -> COPY_OUT
                     > ReadyForQuery -> IDLE
    EXTENDED         < Parse .. Close, Flush: stays;  < Sync -> SYNC
                     < Query -> SIMPLE_QUERY (it ends the batch, as in PostgreSQL)
                     > ParseComplete .. PortalSuspended, results;  > Copy*Response
                     > ErrorResponse -> SKIP_UNTIL_SYNC
    SKIP_UNTIL_SYNC  < Sync -> SYNC; any other message is dropped unread
    SYNC             > ErrorResponse (the batch's commit at its Sync failed): stays
                     > ReadyForQuery -> IDLE
    COPY_IN          < CopyData;  < CopyDone, CopyFail -> where the COPY ran
                     > ErrorResponse: the COPY fails where it ran
    COPY_OUT         > CopyData;  > CopyDone -> where the COPY ran;  > ErrorResponse
    any state        < Terminate -> CLOSED;  > a FATAL ErrorResponse -> CLOSED
                     > NoticeResponse, ParameterStatus once authenticated

The rules, from the PostgreSQL docs ("Frontend/Backend Protocol") and postgres.c:

- After an error in extended query "the backend discards frontend messages until
  a Sync is read, then issues ReadyForQuery". Bodies are not decoded while
  skipping, but the framing and message types are still checked.
- An unnamed portal "is destroyed at the end of the transaction, or as soon as the
  next Bind statement specifying the unnamed portal as destination is issued".
  A named portal "lasts till the end of the current transaction, unless explicitly
  destroyed". The machine sees a transaction end in the ReadyForQuery that says
  "I": every portal ends there. Inside a block they last across Syncs; a Query
  replaces the unnamed one, as a Bind of it does.
- "The backend will ignore Flush and Sync messages received during copy-in
  mode"; any other message but CopyData, CopyDone, CopyFail and Terminate
  there is a protocol violation.
- CopyData, CopyDone and CopyFail outside COPY are ignored (postgres.c: "we
  probably got here because a COPY failed, and the frontend is still sending
  data"), so after a failed COPY FROM STDIN the rest of its data is dropped.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from typing import Generic, TypeVar

from nodedb_server.errors import DBError, ProtocolViolation
from nodedb_server.pgwire import messages as m

_LEN = struct.Struct("!i")
# A startup packet holds a few name/value pairs; PostgreSQL caps it at 10000.
MAX_STARTUP_BYTES = 10000
# Consumed bytes are dropped from the front of the buffer once there are this
# many, so a burst of small messages costs one memmove, not one per message.
_COMPACT_AT = 64 * 1024

_QUERY, _SYNC, _FLUSH, _TERMINATE, _EXECUTE = b"QSHXE"
_SYNC_MESSAGE = b"S\0\0\0\4"
_COPY_DATA, _COPY_DONE, _COPY_FAIL = b"dcf"
_BATCH_MESSAGES = frozenset(b"PBDEC")  # Parse, Bind, Describe, Execute, Close


class State(enum.Enum):
    # Enum.__hash__ is Python code; the identity hash (members are singletons) makes each
    # table lookup by state a C call: 3x faster, and there are a dozen per Bind/Execute/Sync.
    __hash__ = object.__hash__

    STARTUP = "startup"
    AUTH = "auth"
    AUTHENTICATED = "authenticated"
    IDLE = "idle"
    SIMPLE_QUERY = "simple_query"
    EXTENDED = "extended"
    SKIP_UNTIL_SYNC = "skip_until_sync"
    SYNC = "sync"
    COPY_IN = "copy_in"
    COPY_OUT = "copy_out"
    CLOSED = "closed"


_COPY = frozenset({State.COPY_IN, State.COPY_OUT})

# Every legal move; the one transition function refuses any other.
_TRANSITIONS: dict[State, frozenset[State]] = {
    State.STARTUP: frozenset({State.AUTH, State.CLOSED}),
    State.AUTH: frozenset({State.AUTHENTICATED, State.CLOSED}),
    State.AUTHENTICATED: frozenset({State.IDLE, State.CLOSED}),
    State.IDLE: frozenset({State.SIMPLE_QUERY, State.EXTENDED, State.SYNC, State.CLOSED}),
    State.SIMPLE_QUERY: frozenset({State.IDLE, State.COPY_IN, State.COPY_OUT, State.CLOSED}),
    State.EXTENDED: frozenset(
        {
            State.SIMPLE_QUERY,
            State.SKIP_UNTIL_SYNC,
            State.SYNC,
            State.COPY_IN,
            State.COPY_OUT,
            State.CLOSED,
        }
    ),
    State.SKIP_UNTIL_SYNC: frozenset({State.SYNC, State.CLOSED}),
    State.SYNC: frozenset({State.IDLE, State.CLOSED}),
    State.COPY_IN: frozenset(
        {State.SIMPLE_QUERY, State.EXTENDED, State.SKIP_UNTIL_SYNC, State.CLOSED}
    ),
    State.COPY_OUT: frozenset(
        {State.SIMPLE_QUERY, State.EXTENDED, State.SKIP_UNTIL_SYNC, State.CLOSED}
    ),
    State.CLOSED: frozenset(),
}

# The message types the machine reads in each state (the others read nothing: the
# server is answering). Checked on the type byte, before the body is buffered.
_QUERY_TAGS = frozenset(b"QPBDECSHXdcf")
_RECEIVES: dict[State, frozenset[int]] = {
    State.AUTH: frozenset(b"pX"),
    State.IDLE: _QUERY_TAGS,
    State.EXTENDED: _QUERY_TAGS,
    State.SKIP_UNTIL_SYNC: _QUERY_TAGS,
    State.COPY_IN: frozenset(b"dcfSHX"),
}

Moves = dict[type, State | None]  # message sent -> the state it moves to (None: stays)
# PostgreSQL docs, "Asynchronous Operations": these may come at any time.
_ASYNC: Moves = {m.NoticeResponse: None, m.ParameterStatus: None, m.NotificationResponse: None}
_RESULTS: Moves = {
    **_ASYNC,
    m.RowDescription: None,
    m.CommandComplete: None,
    m.EmptyQueryResponse: None,
    m.CopyInResponse: State.COPY_IN,
    m.CopyOutResponse: State.COPY_OUT,
}
# What the server may send in each state. ErrorResponse, and CopyDone ending COPY
# OUT, move to a state that depends on where they come from: see ``send``.
_SENDS: dict[State, Moves] = {
    State.STARTUP: {m.NoEncryption: None},
    State.AUTH: {
        m.AuthenticationSASL: None,
        m.AuthenticationSASLContinue: None,
        m.AuthenticationSASLFinal: None,
        m.AuthenticationOk: State.AUTHENTICATED,
    },
    State.AUTHENTICATED: {**_ASYNC, m.BackendKeyData: None, m.ReadyForQuery: State.IDLE},
    State.IDLE: _ASYNC,
    State.SIMPLE_QUERY: {**_RESULTS, m.ReadyForQuery: State.IDLE},
    State.EXTENDED: {
        **_RESULTS,
        m.ParseComplete: None,
        m.BindComplete: None,
        m.CloseComplete: None,
        m.NoData: None,
        m.PortalSuspended: None,
        m.ParameterDescription: None,
    },
    State.SKIP_UNTIL_SYNC: _ASYNC,
    State.SYNC: {**_ASYNC, m.ReadyForQuery: State.IDLE},
    State.COPY_IN: _ASYNC,
    State.COPY_OUT: {**_ASYNC, m.CopyData: None},
    State.CLOSED: {},
}

ReceiveMethod = Callable[[int, bytes], m.Event | None]
PortalT = TypeVar("PortalT")


class PgConnection(Generic[PortalT]):
    """One client connection's protocol state. Portals are kept here by name, because
    when they end is protocol; what a portal holds (``PortalT``) is the server's."""

    def __init__(self, max_message_bytes: int):
        self.max_message_bytes = max_message_bytes
        self.state = State.STARTUP
        self.portals: dict[str, PortalT] = {}
        self._copy_from = State.SIMPLE_QUERY  # where the current COPY ran
        self._buf = bytearray()
        self._pos = 0  # bytes of _buf already consumed
        # Each reading state: the message types it reads, and its method that reads them.
        self._readers: dict[State, tuple[frozenset[int], ReceiveMethod]] = {
            state: (_RECEIVES[state], reader)
            for state, reader in (
                (State.AUTH, self._receive_auth),
                (State.IDLE, self._receive_query),
                (State.EXTENDED, self._receive_query),
                (State.SKIP_UNTIL_SYNC, self._receive_skipping),
                (State.COPY_IN, self._receive_copy),
            )
        }

    def _set_state(self, new: State) -> None:
        """The one place the state changes (staying is always legal); an illegal move is
        a protocol violation."""
        old = self.state
        if new is old:
            return
        if new not in _TRANSITIONS[old]:
            raise ProtocolViolation(f"the protocol cannot go from {old.value} to {new.value}")
        if new is State.COPY_IN or new is State.COPY_OUT:
            self._copy_from = old
        self.state = new

    # ---- client to server ----------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if self._pos >= _COMPACT_AT or self._pos == len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def sync_is_next(self) -> bool:
        """Whether the next buffered message is a Sync (False when nothing is buffered)."""
        return self._pos < len(self._buf) and self._buf[self._pos] == _SYNC

    def take_execute_sync(self) -> m.Execute | None:
        """Right after a Bind that opened a batch: if the next two buffered messages are an
        Execute of the unnamed portal and a Sync (a driver's usual
        one-statement batch), read both and return the Execute; else read nothing and
        return None. The caller answers the three messages as one, and then reads the
        Sync with ``sync``. Anything unusual (even a malformed Execute) is left to be read
        message by message, where it is answered as it is there."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 10 or buf[pos] != _EXECUTE:
            return None
        (n,) = _LEN.unpack_from(buf, pos + 1)
        end = pos + 1 + n
        if n != 9 or buf[end : end + 5] != _SYNC_MESSAGE or buf[pos + 5] != 0:
            return None  # only an unnamed portal's Execute is 9 bytes long with a 0 first
        self._pos = end + 5
        return m.Execute("", _LEN.unpack_from(buf, pos + 6)[0])

    def sync(self) -> None:
        """The Sync that ``take_execute_sync`` read, acted on after its batch's answers."""
        self._set_state(State.SYNC)

    def next_event(self) -> m.Event | None:
        """The next client message the server must act on, or None if more bytes are
        needed. Messages the protocol says to drop are dropped here."""
        while True:
            state = self.state
            if state is State.STARTUP:
                return self._startup_packet()
            if state is State.CLOSED:
                return None
            reading = self._readers.get(state)
            if reading is None:
                raise ProtocolViolation(f"the server reads no message in the {state.value} state")
            buf = self._buf
            pos = self._pos
            avail = len(buf) - pos
            if avail < 5:
                return None
            kind = buf[pos]
            (n,) = _LEN.unpack_from(buf, pos + 1)
            if n < 4:
                raise ProtocolViolation("invalid message length")
            if n > self.max_message_bytes:
                raise ProtocolViolation(f"message of {n} bytes exceeds max_message_bytes")
            legal, reader = reading
            if kind not in legal:
                raise ProtocolViolation(
                    f"unexpected message type 0x{kind:02x} in the {state.value} state"
                )
            if avail < n + 1:
                return None
            body = bytes(buf[pos + 5 : pos + n + 1])
            self._pos = pos + n + 1
            event = reader(kind, body)
            if event is not None:
                return event

    def _startup_packet(self) -> m.Event | None:
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
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
            self._set_state(State.AUTH)
        elif isinstance(event, m.CancelRequest):
            self._set_state(State.CLOSED)  # a cancel connection says nothing more
        return event

    def _receive_auth(self, kind: int, body: bytes) -> m.Event | None:
        if kind == _TERMINATE:
            self._set_state(State.CLOSED)
        return m.decode_message(kind, body)

    def _receive_query(self, kind: int, body: bytes) -> m.Event | None:
        """IDLE and EXTENDED read the same messages; a batch message opens a batch."""
        if kind in _BATCH_MESSAGES:
            if self.state is State.IDLE:
                self._set_state(State.EXTENDED)
        elif kind == _SYNC:
            self._set_state(State.SYNC)
        elif kind == _QUERY:
            self.portals.pop("", None)
            self._set_state(State.SIMPLE_QUERY)
        elif kind == _TERMINATE:
            self._set_state(State.CLOSED)
        elif kind != _FLUSH:
            return None  # CopyData, CopyDone, CopyFail: what is left of a failed COPY
        return m.decode_message(kind, body)

    def _receive_skipping(self, kind: int, body: bytes) -> m.Event | None:
        if kind == _SYNC:
            self._set_state(State.SYNC)
        elif kind == _TERMINATE:
            self._set_state(State.CLOSED)
        else:
            return None
        return m.decode_message(kind, body)

    def _receive_copy(self, kind: int, body: bytes) -> m.Event | None:
        if kind in (_COPY_DONE, _COPY_FAIL):
            self._set_state(self._copy_from)
        elif kind == _TERMINATE:
            self._set_state(State.CLOSED)
        elif kind != _COPY_DATA:
            return None  # Sync, Flush
        return m.decode_message(kind, body)

    # ---- server to client ----------------------------------------------------------------

    def send(self, event: m.BackendEvent) -> bytes:
        """The bytes of a message the server is about to send. The state moves as the
        message says; one the protocol does not allow here is refused (08P01)."""
        moves = _SENDS[self.state]
        kind = type(event)
        if kind in moves:
            target = moves[kind]
            if target is not None:
                self._set_state(target)
                if target is State.IDLE and self.portals:  # only a ReadyForQuery goes there
                    assert isinstance(event, m.ReadyForQuery)
                    if event.status == "I":
                        self.end_portals()
        elif isinstance(event, m.ErrorResponse):
            self._set_state(self._after_error(event))
        elif kind is m.CopyDone and self.state is State.COPY_OUT:
            self._set_state(self._copy_from)
        else:
            raise ProtocolViolation(
                f"the server cannot send {kind.__name__} in the {self.state.value} state"
            )
        return event.encode()

    def send_data_row(self, values: list[bytes | None]) -> bytes:
        """A DataRow; the one message sent per row, so it costs no event object."""
        if self.state is not State.EXTENDED and self.state is not State.SIMPLE_QUERY:
            raise ProtocolViolation(
                f"the server cannot send DataRow in the {self.state.value} state"
            )
        return m.data_row(values)

    def _after_error(self, error: m.ErrorResponse) -> State:
        """An ErrorResponse ends what it answers: FATAL the connection, an extended batch
        until its Sync, a COPY as an error of the statement that ran it. In a Query the
        Query goes on to its ReadyForQuery, and at a Sync (the commit of the batch's
        implicit transaction failed) the ReadyForQuery still follows."""
        if error.severity != "ERROR":
            return State.CLOSED
        state = self._copy_from if self.state in _COPY else self.state
        if state is State.EXTENDED:
            return State.SKIP_UNTIL_SYNC
        if state is State.SIMPLE_QUERY or state is State.SYNC:
            return state
        raise ProtocolViolation(f"the server cannot send an error in the {self.state.value} state")

    # ---- portals ---------------------------------------------------------------------------

    def bind_portal(self, name: str, portal: PortalT) -> None:
        """A Bind succeeded: it replaces the unnamed portal; a named one must be new."""
        if name and name in self.portals:
            raise DBError(f'portal "{name}" already exists', sqlstate="42P03")
        self.portals[name] = portal

    def portal(self, name: str) -> PortalT:
        portal = self.portals.get(name)
        if portal is None:
            raise DBError(f'portal "{name}" does not exist', sqlstate="34000")
        return portal

    def close_portal(self, name: str) -> None:
        self.portals.pop(name, None)

    def end_portals(self) -> None:
        """A transaction ended, and every portal with it."""
        self.portals.clear()
