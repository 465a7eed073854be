"""PostgreSQL protocol 3.0 messages: frontend messages decoded into events, backend
messages as events that encode themselves.

Framing (PostgreSQL docs, "Message Formats"): after the startup phase every
message is a 1-byte type, an int32 length that counts itself but not the type
byte, then the body. Startup-phase packets have no type byte. All integers
are big-endian. CopyData and CopyDone are the same message in both
directions, so one class serves both.

Which message may be sent or received when is not this module's business:
``connection.py`` decides that.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from nodedb_server.errors import DBError, ProtocolViolation

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102

_I = struct.Struct("!i")
_H = struct.Struct("!h")
_II = struct.Struct("!ii")


def _msg(kind: bytes, body: bytes) -> bytes:
    return kind + _I.pack(len(body) + 4) + body


def _cstr(s: str) -> bytes:
    return s.encode("utf-8") + b"\0"


# ---- frontend events ---------------------------------------------------------------------


@dataclass(slots=True)
class SSLRequest:
    pass


@dataclass(slots=True)
class GSSENCRequest:
    pass


@dataclass(slots=True)
class Startup:
    params: dict[str, str]


@dataclass(slots=True)
class CancelRequest:
    pid: int
    secret: int


@dataclass(slots=True)
class Password:
    """PasswordMessage, SASLInitialResponse or SASLResponse: told apart by the auth phase."""

    data: bytes


@dataclass(slots=True)
class Query:
    sql: str


@dataclass(slots=True)
class Parse:
    name: str
    sql: str
    param_oids: tuple[int, ...]


@dataclass(slots=True)
class Bind:
    portal: str
    statement: str
    param_formats: tuple[int, ...]
    params: tuple[bytes | None, ...]
    result_formats: tuple[int, ...]


@dataclass(slots=True)
class Describe:
    kind: str  # "S" statement, "P" portal
    name: str


@dataclass(slots=True)
class Execute:
    portal: str
    max_rows: int


@dataclass(slots=True)
class Close:
    kind: str
    name: str


@dataclass(slots=True)
class Sync:
    pass


@dataclass(slots=True)
class Flush:
    pass


@dataclass(slots=True)
class Terminate:
    pass


@dataclass(slots=True)
class CopyData:
    data: bytes

    def encode(self) -> bytes:
        return _msg(b"d", self.data)


@dataclass(slots=True)
class CopyDone:
    def encode(self) -> bytes:
        return b"c\0\0\0\4"


@dataclass(slots=True)
class CopyFail:
    message: str


Event = (
    SSLRequest
    | GSSENCRequest
    | Startup
    | CancelRequest
    | Password
    | Query
    | Parse
    | Bind
    | Describe
    | Execute
    | Close
    | Sync
    | Flush
    | Terminate
    | CopyData
    | CopyDone
    | CopyFail
)


class Reader:
    """Reads fields out of one message body; any overrun is a protocol violation."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes):
        self.buf = buf
        self.pos = 0

    def int32(self) -> int:
        if self.pos + 4 > len(self.buf):
            raise ProtocolViolation("message is shorter than its fields")
        (v,) = _I.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(v)

    def int16(self) -> int:
        if self.pos + 2 > len(self.buf):
            raise ProtocolViolation("message is shorter than its fields")
        (v,) = _H.unpack_from(self.buf, self.pos)
        self.pos += 2
        return int(v)

    def byte(self) -> str:
        if self.pos >= len(self.buf):
            raise ProtocolViolation("message is shorter than its fields")
        c = chr(self.buf[self.pos])
        self.pos += 1
        return c

    def cstring(self) -> str:
        end = self.buf.find(b"\0", self.pos)
        if end < 0:
            raise ProtocolViolation("string field is not terminated")
        raw = self.buf[self.pos : end]
        self.pos = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolViolation("invalid UTF-8 in a string field") from None

    def bytes_(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise ProtocolViolation("message is shorter than its fields")
        v = self.buf[self.pos : self.pos + n]
        self.pos += n
        return v

    def rest(self) -> bytes:
        v = self.buf[self.pos :]
        self.pos = len(self.buf)
        return v

    def count(self) -> int:
        n = self.int16()
        if n < 0:
            raise ProtocolViolation("negative count")
        return n


def decode_startup(body: bytes) -> Event:
    r = Reader(body)
    code = r.int32()
    if code == SSL_REQUEST:
        return SSLRequest()
    if code == GSSENC_REQUEST:
        return GSSENCRequest()
    if code == CANCEL_REQUEST:
        pid = r.int32()
        secret = r.int32()
        return CancelRequest(pid, secret)
    if code >> 16 != 3:
        raise ProtocolViolation(f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}")
    params: dict[str, str] = {}
    while True:
        name = r.cstring()
        if not name:
            break
        params[name] = r.cstring()
    return Startup(params)


_SYNC = Sync()


def _int16s(body: bytes, pos: int) -> tuple[tuple[int, ...], int]:
    """A count, then that many int16 (format codes); and the position after them."""
    (n,) = _H.unpack_from(body, pos)
    if n < 0:
        raise ProtocolViolation("negative count")
    return struct.unpack_from(f"!{n}h", body, pos + 2), pos + 2 + 2 * n


def _decode_bind(body: bytes) -> Bind:
    """Bind, read with struct directly rather than a Reader: it is on the hot path."""
    try:
        portal_end = body.index(b"\0")
        statement_end = body.index(b"\0", portal_end + 1)
        portal = body[:portal_end].decode("utf-8")
        statement = body[portal_end + 1 : statement_end].decode("utf-8")
        fmts, pos = _int16s(body, statement_end + 1)
        (count,) = _H.unpack_from(body, pos)
        if count < 0:
            raise ProtocolViolation("negative count")
        pos += 2
        params: list[bytes | None] = []
        for _ in range(count):
            (n,) = _I.unpack_from(body, pos)
            pos += 4
            if n == -1:
                params.append(None)
                continue
            if n < 0 or pos + n > len(body):
                raise ProtocolViolation("message is shorter than its fields")
            params.append(body[pos : pos + n])
            pos += n
        rfmts, _ = _int16s(body, pos)
    except struct.error:
        raise ProtocolViolation("message is shorter than its fields") from None
    except UnicodeDecodeError:
        raise ProtocolViolation("invalid UTF-8 in a string field") from None
    except ValueError:  # index: no terminating zero byte
        raise ProtocolViolation("string field is not terminated") from None
    return Bind(portal, statement, fmts, tuple(params), rfmts)


def decode_message(kind: int, body: bytes) -> Event:
    if kind == 0x53:  # S, the most frequent message: no body, one shared instance
        return _SYNC
    if kind == 0x45:  # E
        end = body.find(b"\0")
        if end < 0 or len(body) != end + 5:
            raise ProtocolViolation("malformed Execute message")
        try:
            return Execute(body[:end].decode("utf-8"), _I.unpack_from(body, end + 1)[0])
        except UnicodeDecodeError:
            raise ProtocolViolation("invalid UTF-8 in a string field") from None
    if kind == 0x42:  # B
        return _decode_bind(body)
    r = Reader(body)
    if kind == 0x51:  # Q
        return Query(r.cstring())
    if kind == 0x50:  # P
        name, sql = r.cstring(), r.cstring()
        oids = tuple(r.int32() & 0xFFFFFFFF for _ in range(r.count()))
        return Parse(name, sql, oids)
    if kind == 0x44:  # D
        k = r.byte()
        if k not in "SP":
            raise ProtocolViolation(f"invalid Describe kind {k!r}")
        return Describe(k, r.cstring())
    if kind == 0x43:  # C
        k = r.byte()
        if k not in "SP":
            raise ProtocolViolation(f"invalid Close kind {k!r}")
        return Close(k, r.cstring())
    if kind == 0x48:  # H
        return Flush()
    if kind == 0x58:  # X
        return Terminate()
    if kind == 0x70:  # p
        return Password(body)
    if kind == 0x64:  # d
        return CopyData(body)
    if kind == 0x63:  # c
        return CopyDone()
    if kind == 0x66:  # f
        return CopyFail(r.cstring())
    raise ProtocolViolation(f"invalid frontend message type {kind}")


def decode_sasl_initial(data: bytes) -> tuple[str, bytes]:
    """The mechanism and the client-first message of a SASLInitialResponse."""
    r = Reader(data)
    mechanism = r.cstring()
    return mechanism, r.bytes_(r.int32())


def format_codes(formats: tuple[int, ...], n: int) -> tuple[int, ...]:
    """The format code of each of ``n`` values, from a Bind's list ("Message Formats":
    none means all text, one applies to all, else one per value)."""
    if not formats:
        return (0,) * n
    if len(formats) == 1:
        return formats * n
    if len(formats) != n:
        raise DBError(
            f"got {len(formats)} format codes for {n} values", sqlstate=ProtocolViolation.sqlstate
        )
    return formats


# ---- backend events: what the server sends -----------------------------------------------
#
# Messages without fields are module constants (ReadyForQuery: one per status), so the
# hot path (Bind, Execute, Sync of a prepared statement) allocates no event for them.


@dataclass(slots=True)
class NoEncryption:
    """The one-byte answer 'N' to SSLRequest or GSSENCRequest: go on in plain text."""

    def encode(self) -> bytes:
        return b"N"


@dataclass(slots=True)
class AuthenticationOk:
    def encode(self) -> bytes:
        return b"R\0\0\0\x08\0\0\0\0"


@dataclass(slots=True)
class AuthenticationSASL:
    mechanisms: tuple[str, ...]

    def encode(self) -> bytes:
        return _msg(b"R", _I.pack(10) + b"".join(_cstr(m) for m in self.mechanisms) + b"\0")


@dataclass(slots=True)
class AuthenticationSASLContinue:
    data: bytes

    def encode(self) -> bytes:
        return _msg(b"R", _I.pack(11) + self.data)


@dataclass(slots=True)
class AuthenticationSASLFinal:
    data: bytes

    def encode(self) -> bytes:
        return _msg(b"R", _I.pack(12) + self.data)


@dataclass(slots=True)
class ParameterStatus:
    name: str
    value: str

    def encode(self) -> bytes:
        return _msg(b"S", _cstr(self.name) + _cstr(self.value))


@dataclass(slots=True)
class NotificationResponse:
    """'A': a NOTIFY on a channel this session listens on (pid of the sender)."""

    pid: int
    channel: str
    payload: str

    def encode(self) -> bytes:
        return _msg(b"A", _I.pack(self.pid) + _cstr(self.channel) + _cstr(self.payload))


@dataclass(slots=True)
class BackendKeyData:
    pid: int
    secret: int

    def encode(self) -> bytes:
        return _msg(b"K", _II.pack(self.pid, self.secret))


_READY = {status: _msg(b"Z", status.encode()) for status in "ITE"}


@dataclass(slots=True)
class ReadyForQuery:
    status: str  # "I" idle, "T" in a transaction block, "E" in a failed one

    def encode(self) -> bytes:
        return _READY[self.status]


@dataclass(slots=True)
class Field:
    name: str
    type_oid: int
    type_size: int = -1
    type_mod: int = -1
    format: int = 0
    table_oid: int = 0
    column: int = 0


_FIELD = struct.Struct("!ihihih")


@dataclass(slots=True)
class RowDescription:
    fields: list[Field]

    def encode(self) -> bytes:
        parts = [_H.pack(len(self.fields))]
        for f in self.fields:
            parts.append(_cstr(f.name))
            parts.append(
                _FIELD.pack(f.table_oid, f.column, f.type_oid, f.type_size, f.type_mod, f.format)
            )
        return _msg(b"T", b"".join(parts))


def data_row(values: list[bytes | None]) -> bytes:
    """A DataRow: the one message sent once per row, so it is bytes, not an event (see
    ``PgConnection.send_data_row``)."""
    parts = [_H.pack(len(values))]
    for v in values:
        if v is None:
            parts.append(b"\xff\xff\xff\xff")
        else:
            parts.append(_I.pack(len(v)))
            parts.append(v)
    body = b"".join(parts)
    return b"D" + _I.pack(len(body) + 4) + body


@dataclass(slots=True)
class CommandComplete:
    tag: str

    def encode(self) -> bytes:
        return _msg(b"C", _cstr(self.tag))


@dataclass(slots=True)
class EmptyQueryResponse:
    def encode(self) -> bytes:
        return b"I\0\0\0\4"


@dataclass(slots=True)
class ParseComplete:
    def encode(self) -> bytes:
        return b"1\0\0\0\4"


@dataclass(slots=True)
class BindComplete:
    def encode(self) -> bytes:
        return b"2\0\0\0\4"


@dataclass(slots=True)
class CloseComplete:
    def encode(self) -> bytes:
        return b"3\0\0\0\4"


@dataclass(slots=True)
class NoData:
    def encode(self) -> bytes:
        return b"n\0\0\0\4"


@dataclass(slots=True)
class PortalSuspended:
    def encode(self) -> bytes:
        return b"s\0\0\0\4"


@dataclass(slots=True)
class ParameterDescription:
    oids: list[int]

    def encode(self) -> bytes:
        body = _H.pack(len(self.oids)) + b"".join(struct.pack("!I", o) for o in self.oids)
        return _msg(b"t", body)


def _notice_fields(severity: str, sqlstate: str, message: str, detail: str | None) -> bytes:
    parts = [
        b"S",
        _cstr(severity),
        b"V",
        _cstr(severity),
        b"C",
        _cstr(sqlstate),
        b"M",
        _cstr(message),
    ]
    if detail:
        parts += [b"D", _cstr(detail)]
    return b"".join(parts) + b"\0"


@dataclass(slots=True)
class ErrorResponse:
    severity: str  # ERROR, or FATAL when the server closes the connection after it
    sqlstate: str
    message: str
    detail: str | None = None

    def encode(self) -> bytes:
        return _msg(b"E", _notice_fields(self.severity, self.sqlstate, self.message, self.detail))


@dataclass(slots=True)
class NoticeResponse:
    message: str
    severity: str = "NOTICE"
    sqlstate: str = "00000"
    detail: str | None = None

    def encode(self) -> bytes:
        return _msg(b"N", _notice_fields(self.severity, self.sqlstate, self.message, self.detail))


def _copy_response(kind: bytes, fmt: int, column_formats: tuple[int, ...]) -> bytes:
    body = bytes([fmt]) + _H.pack(len(column_formats)) + b"".join(map(_H.pack, column_formats))
    return _msg(kind, body)


@dataclass(slots=True)
class CopyInResponse:
    format: int  # 0 text, 1 binary
    column_formats: tuple[int, ...]

    def encode(self) -> bytes:
        return _copy_response(b"G", self.format, self.column_formats)


@dataclass(slots=True)
class CopyOutResponse:
    format: int
    column_formats: tuple[int, ...]

    def encode(self) -> bytes:
        return _copy_response(b"H", self.format, self.column_formats)


BackendEvent = (
    NoEncryption
    | AuthenticationOk
    | AuthenticationSASL
    | AuthenticationSASLContinue
    | AuthenticationSASLFinal
    | ParameterStatus
    | NotificationResponse
    | BackendKeyData
    | ReadyForQuery
    | RowDescription
    | CommandComplete
    | EmptyQueryResponse
    | ParseComplete
    | BindComplete
    | CloseComplete
    | NoData
    | PortalSuspended
    | ParameterDescription
    | ErrorResponse
    | NoticeResponse
    | CopyInResponse
    | CopyOutResponse
    | CopyData
    | CopyDone
)

READY_FOR_QUERY = {status: ReadyForQuery(status) for status in "ITE"}
NO_ENCRYPTION = NoEncryption()
AUTHENTICATION_OK = AuthenticationOk()
EMPTY_QUERY_RESPONSE = EmptyQueryResponse()
PARSE_COMPLETE = ParseComplete()
BIND_COMPLETE = BindComplete()
CLOSE_COMPLETE = CloseComplete()
NO_DATA = NoData()
PORTAL_SUSPENDED = PortalSuspended()
COPY_DONE = CopyDone()
