"""Hostile bytes close that one connection with 08P01 and never disturb the others."""

from __future__ import annotations

import socket
import struct

import psycopg
import pytest

from tests.serverproc import ServerProcess


def _startup() -> bytes:
    body = struct.pack("!i", 196608) + b"user\0nodedb\0database\0nodedb\0\0"
    return struct.pack("!i", len(body) + 4) + body


def _read_all(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        out += chunk
    return out


def _ready(sock: socket.socket) -> None:
    sock.sendall(_startup())
    buf = b""
    while b"Z\0\0\0\5I" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "server closed during startup"
        buf += chunk


HOSTILE = {
    "giant-length-prefix": b"Q" + struct.pack("!i", 0x7FFFFFF0) + b"SELECT 1",
    "negative-length": b"Q" + struct.pack("!i", -5),
    "unknown-message-type": b"\x01" + struct.pack("!i", 4),
    "bind-overrunning-its-length": b"B"
    + struct.pack("!i", 10)
    + b"\0\0"
    + struct.pack("!hh", 5, 1),
    "describe-bad-kind": b"D" + struct.pack("!i", 6) + b"Zx",
}


@pytest.mark.parametrize("payload", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_message_is_08P01_and_others_keep_working(
    shared_server: ServerProcess, payload: bytes
) -> None:
    with psycopg.connect(shared_server.dsn(), autocommit=True) as bystander:
        with socket.create_connection(("127.0.0.1", shared_server.port)) as sock:
            _ready(sock)
            sock.sendall(payload)
            reply = _read_all(sock)
        assert reply.startswith(b"E") and b"C08P01\0" in reply
        assert bystander.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize(
    "payload",
    [b"\0\0\0\x08\x12\x34\x56\x78", b"\x7f\xff\xff\xff", b"GET / HTTP/1.1\r\n\r\n", b"\0\0\0\3"],
    ids=["unknown-protocol", "huge-startup", "http-request", "too-short"],
)
def test_junk_startup_packet_is_refused(shared_server: ServerProcess, payload: bytes) -> None:
    with socket.create_connection(("127.0.0.1", shared_server.port)) as sock:
        sock.sendall(payload)
        reply = _read_all(sock)
    assert reply == b"" or (reply.startswith(b"E") and b"C08P01\0" in reply)
    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_ssl_request_is_answered_N_and_startup_continues(shared_server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", shared_server.port)) as sock:
        sock.sendall(struct.pack("!ii", 8, 80877103))
        assert sock.recv(1) == b"N"
        _ready(sock)


def test_truncated_message_then_hangup_leaves_server_serving(shared_server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", shared_server.port)) as sock:
        _ready(sock)
        sock.sendall(b"Q" + struct.pack("!i", 100) + b"SELECT")
    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT 2").fetchone() == (2,)


def _messages_until_ready(sock: socket.socket) -> list[tuple[bytes, bytes]]:
    """(type, body) of each backend message up to and including ReadyForQuery."""
    sock.settimeout(10)
    buf = b""
    out: list[tuple[bytes, bytes]] = []
    while not out or out[-1][0] != b"Z":
        while len(buf) < 5 or len(buf) < 1 + struct.unpack("!i", buf[1:5])[0]:
            chunk = sock.recv(65536)
            assert chunk, f"server closed the connection after {out}"
            buf += chunk
        n = struct.unpack("!i", buf[1:5])[0]
        out.append((buf[:1], buf[5 : 1 + n]))
        buf = buf[1 + n :]
    return out


def _frontend(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _bind(statement: bytes, params: list[bytes]) -> bytes:
    values = b"".join(struct.pack("!i", len(p)) + p for p in params)
    body = b"\0" + statement + b"\0" + struct.pack("!hh", 0, len(params)) + values
    return _frontend(b"B", body + struct.pack("!h", 0))


def test_bind_with_wrong_parameter_count_is_an_error_not_fatal(
    shared_server: ServerProcess,
) -> None:
    execute_sync = _frontend(b"E", b"\0" + struct.pack("!i", 0)) + _frontend(b"S", b"")
    with socket.create_connection(("127.0.0.1", shared_server.port)) as sock:
        _ready(sock)
        sql = b"SELECT $1::int8 + $2::int8"
        sock.sendall(_frontend(b"P", b"s1\0" + sql + b"\0" + struct.pack("!h", 0)))
        sock.sendall(_bind(b"s1", [b"40"]) + execute_sync)
        reply = _messages_until_ready(sock)
        kinds = [k for k, _ in reply]
        assert kinds == [b"1", b"E", b"Z"]  # ParseComplete; Execute skipped until the Sync
        error = reply[1][1]
        assert b"SERROR\0" in error and b"C08P01\0" in error
        assert (
            b'Mbind message supplies 1 parameters, but prepared statement "s1" requires 2\0'
            in error
        )
        assert reply[2][1] == b"I"
        # The session goes on, and the statement is still prepared.
        sock.sendall(_bind(b"s1", [b"40", b"2"]) + execute_sync)
        reply = _messages_until_ready(sock)
        assert [k for k, _ in reply] == [b"2", b"D", b"C", b"Z"]
        assert reply[1][1].endswith(b"42")
