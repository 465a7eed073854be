"""Connections that never finish startup take no session slot, are bounded apart, and
are closed after auth.authentication_timeout_ms."""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.serverproc import ServerProcess


def _startup_packet() -> bytes:
    body = struct.pack("!i", 196608) + b"user\0nodedb\0database\0nodedb\0\0"
    return struct.pack("!i", len(body) + 4) + body


@contextlib.contextmanager
def _idle_sockets(srv: ServerProcess, n: int, send: bytes = b"") -> Iterator[list[socket.socket]]:
    socks = []
    try:
        for _ in range(n):
            sock = socket.create_connection(("127.0.0.1", srv.port))
            if send:
                sock.sendall(send)
            socks.append(sock)
        time.sleep(0.3)  # let the server accept them all before the real client comes
        yield socks
    finally:
        for sock in socks:
            sock.close()


def _read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


@pytest.fixture
def scram_server(tmp_path: Path) -> Iterator[ServerProcess]:
    cfg = tmp_path / "nodedb.toml"
    cfg.write_text('[auth]\nmode = "scram"\nsuperuser_password = "s3cret"\n')
    srv = ServerProcess(tmp_path / "data", config=cfg, env={"NODEDB_MAX_CONNECTIONS": "2"}).start()
    try:
        yield srv
    finally:
        srv.kill9()


def test_idle_sockets_leave_session_slots_to_real_clients(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", env={"NODEDB_MAX_CONNECTIONS": "2"}).start()
    try:
        with (
            _idle_sockets(srv, 6),
            _idle_sockets(srv, 2, send=_startup_packet()[:5]),
            psycopg.connect(srv.dsn(), autocommit=True) as a,
            psycopg.connect(srv.dsn(), autocommit=True) as b,
        ):
            assert a.execute("SELECT 1").fetchone() == (1,)
            assert b.execute("SELECT 2").fetchone() == (2,)
            # Sessions are still what max_connections counts.
            with pytest.raises(psycopg.OperationalError, match="too many clients"):
                psycopg.connect(srv.dsn())
    finally:
        srv.kill9()


def test_sockets_stopped_in_scram_exchange_leave_slots(scram_server: ServerProcess) -> None:
    """A startup packet, then silence where the SASL response should come."""
    srv = scram_server
    with (
        _idle_sockets(srv, 5, send=_startup_packet()),
        psycopg.connect(srv.dsn(password="s3cret"), autocommit=True) as conn,
    ):
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_connections_in_startup_are_bounded(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", env={"NODEDB_MAX_STARTUP_CONNECTIONS": "3"}).start()
    try:
        with _idle_sockets(srv, 3):
            with socket.create_connection(("127.0.0.1", srv.port)) as extra:
                reply = _read_until_closed(extra, 5)
            assert reply.startswith(b"E") and b"C53300\0" in reply
        time.sleep(0.3)  # the server sees the idle ones go
        with psycopg.connect(srv.dsn(), autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        srv.kill9()


@pytest.mark.parametrize("send", [b"", _startup_packet()[:7]], ids=["silent", "half-startup"])
def test_authentication_timeout_closes_the_socket(tmp_path: Path, send: bytes) -> None:
    srv = ServerProcess(
        tmp_path / "data", env={"NODEDB_AUTH_AUTHENTICATION_TIMEOUT_MS": "300"}
    ).start()
    try:
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.sendall(send)
            start = time.monotonic()
            reply = _read_until_closed(sock, 10)  # TimeoutError if the server never closes
            assert time.monotonic() - start < 10
        assert reply == b"" or b"canceling authentication due to timeout" in reply
        with psycopg.connect(srv.dsn(), autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        srv.kill9()
