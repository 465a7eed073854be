"""Flow control on a client's socket (pgwire/server.py, Link): input arriving faster
than the server parses it pauses reading and resumes it, and a reply larger than the
socket takes waits for a client that does not read, while other clients are served."""

from __future__ import annotations

import socket
import struct
import time

import psycopg

from tests.serverproc import ServerProcess

ROWS = 20_000
FILLER = "x" * 500  # about 10 MB of COPY input, and of DataRows back


def _startup(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    params = b"user\0nodedb\0database\0nodedb\0\0"
    sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
    _read_until_ready(sock)
    return sock


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        assert chunk, "the server closed the connection"
        buf += chunk
    return bytes(buf)


def _read_until(sock: socket.socket, last: bytes) -> dict[bytes, int]:
    """Messages up to one of type ``last``, counted by type; an ErrorResponse fails."""
    seen: dict[bytes, int] = {}
    while True:
        kind, length = struct.unpack("!ci", _read_exact(sock, 5))
        body = _read_exact(sock, length - 4)
        assert kind != b"E", body
        seen[kind] = seen.get(kind, 0) + 1
        if kind == last:
            return seen


def _read_until_ready(sock: socket.socket) -> dict[bytes, int]:
    return _read_until(sock, b"Z")


def _query(sock: socket.socket, sql: str) -> None:
    text = sql.encode() + b"\0"
    sock.sendall(b"Q" + struct.pack("!i", 4 + len(text)) + text)


def test_a_large_copy_in_and_a_reply_to_a_client_that_does_not_read(
    server: ServerProcess,
) -> None:
    # Raw sockets with timeouts: a server that stops reading or writing fails the test
    # (socket.timeout) rather than hanging it.
    loader = _startup(server.port)
    try:
        _query(loader, "CREATE COLLECTION big")
        _read_until_ready(loader)
        _query(loader, "COPY big (id, pad) FROM STDIN")
        _read_until(loader, b"G")
        data = "".join(f"k{i}\t{FILLER}\n" for i in range(ROWS)).encode()
        # One CopyData of it all, sent at once: far more than the server holds unpaused.
        loader.sendall(b"d" + struct.pack("!i", 4 + len(data)) + data + b"c\0\0\0\4")
        assert _read_until_ready(loader).get(b"C") == 1
    finally:
        loader.close()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM big").fetchone() == (ROWS,)

    slow = _startup(server.port)
    try:
        _query(slow, "SELECT id, pad FROM big")
        time.sleep(1.0)  # the reply fills the socket's buffers and waits for us
        with psycopg.connect(server.dsn(), autocommit=True, connect_timeout=5) as other:
            started = time.monotonic()
            assert other.execute("SELECT 1").fetchone() == (1,)
            assert time.monotonic() - started < 5
        seen = _read_until_ready(slow)
        assert seen.get(b"D") == ROWS and seen.get(b"C") == 1
    finally:
        slow.close()
