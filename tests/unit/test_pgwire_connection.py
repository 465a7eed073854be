"""The protocol state machine fed plain bytes (no sockets)."""

from __future__ import annotations

import struct

import pytest

from nodedb_server.errors import ProtocolViolation
from nodedb_server.pgwire import messages as m
from nodedb_server.pgwire.connection import PgConnection, Phase


def startup(**params: str) -> bytes:
    body = (
        struct.pack("!i", 196608)
        + b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items())
        + b"\0"
    )
    return struct.pack("!i", len(body) + 4) + body


def msg(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def ready_conn() -> PgConnection:
    c = PgConnection(max_message_bytes=1 << 20)
    c.receive_data(startup(user="u", database="d"))
    assert isinstance(c.next_event(), m.Startup)
    c.auth_ok()
    return c


def test_startup_delivered_one_byte_at_a_time() -> None:
    c = PgConnection(1 << 20)
    data = startup(user="alice", database="acme", client_encoding="'utf-8'")
    for b in data[:-1]:
        c.receive_data(bytes([b]))
        assert c.next_event() is None
    c.receive_data(data[-1:])
    ev = c.next_event()
    assert ev == m.Startup({"user": "alice", "database": "acme", "client_encoding": "'utf-8'"})
    assert c.phase is Phase.AUTH


def test_ssl_request_then_startup() -> None:
    c = PgConnection(1 << 20)
    c.receive_data(struct.pack("!ii", 8, 80877103) + startup(user="u"))
    assert isinstance(c.next_event(), m.SSLRequest)
    assert isinstance(c.next_event(), m.Startup)


def test_cancel_request_closes() -> None:
    c = PgConnection(1 << 20)
    c.receive_data(struct.pack("!iiii", 16, 80877102, 1234, 5678))
    assert c.next_event() == m.CancelRequest(1234, 5678)
    assert c.phase is Phase.CLOSED


def test_query_before_auth_is_a_violation() -> None:
    c = PgConnection(1 << 20)
    c.receive_data(startup(user="u"))
    c.next_event()
    c.receive_data(msg(b"Q", b"SELECT 1\0"))
    with pytest.raises(ProtocolViolation):
        c.next_event()


def test_extended_batch_is_skipped_until_sync_after_an_error() -> None:
    c = ready_conn()
    parse = msg(b"P", b"\0SELECT 1\0\0\0")
    bind = msg(b"B", b"\0\0\0\0\0\0\0\0")
    execute = msg(b"E", b"\0\0\0\0\0")
    c.receive_data(parse + bind + execute + msg(b"S", b"") + parse)
    assert isinstance(c.next_event(), m.Parse)
    c.discard_until_sync()
    assert isinstance(c.next_event(), m.Sync)
    assert isinstance(c.next_event(), m.Parse)


def test_bind_with_binary_and_null_parameters() -> None:
    c = ready_conn()
    body = (
        b"p1\0s1\0"
        + struct.pack("!hh", 1, 1)
        + struct.pack("!h", 2)
        + struct.pack("!i", 8)
        + struct.pack("!q", 42)
        + struct.pack("!i", -1)
        + struct.pack("!hh", 1, 1)
    )
    c.receive_data(msg(b"B", body))
    assert c.next_event() == m.Bind("p1", "s1", (1,), (struct.pack("!q", 42), None), (1,))


def test_giant_length_prefix_is_refused_before_allocating() -> None:
    c = ready_conn()
    c.receive_data(b"Q" + struct.pack("!i", 1 << 30))
    with pytest.raises(ProtocolViolation, match="max_message_bytes"):
        c.next_event()


@pytest.mark.parametrize("data", [b"\x00\x00\x00\x02", struct.pack("!ii", 8, 0x00020000)])
def test_bad_startup_packets(data: bytes) -> None:
    c = PgConnection(1 << 20)
    c.receive_data(data)
    with pytest.raises(ProtocolViolation):
        c.next_event()


def test_terminate_closes() -> None:
    c = ready_conn()
    c.receive_data(msg(b"X", b""))
    assert isinstance(c.next_event(), m.Terminate)
    assert c.phase is Phase.CLOSED and c.next_event() is None


def test_copy_phase_accepts_only_copy_messages() -> None:
    c = ready_conn()
    c.start_copy_in()
    c.receive_data(msg(b"d", b"abc") + msg(b"c", b"") + msg(b"Q", b"x\0"))
    assert c.next_event() == m.CopyData(b"abc")
    assert isinstance(c.next_event(), m.CopyDone)
    with pytest.raises(ProtocolViolation):
        c.next_event()


def test_session_goes_on_after_an_error_in_bind() -> None:
    """A Bind the server refuses (wrong parameter count, 08P01 ERROR): the machine
    drops the rest of the batch, delivers the Sync and stays ready for more."""
    c = ready_conn()
    bad_bind = msg(b"B", b"\0s1\0" + struct.pack("!hh", 0, 1) + struct.pack("!i", 1) + b"7\0\0")
    execute = msg(b"E", b"\0\0\0\0\0")
    describe = msg(b"D", b"P\0")
    c.receive_data(bad_bind + describe + execute + msg(b"S", b"") + msg(b"Q", b"SELECT 1\0"))
    assert isinstance(c.next_event(), m.Bind)
    c.discard_until_sync()
    assert isinstance(c.next_event(), m.Sync)
    assert c.phase is Phase.READY
    assert c.next_event() == m.Query("SELECT 1")
