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


def _read_until_ready(sock: socket.socket) -> dict[bytes, int]:
    """Messages up to ReadyForQuery, counted by type; an ErrorResponse fails."""
    seen: dict[bytes, int] = {}
    while True:
        kind, length = struct.unpack("!ci", _read_exact(sock, 5))
        body = _read_exact(sock, length - 4)
        assert kind != b"E", body
        seen[kind] = seen.get(kind, 0) + 1
        if kind == b"Z":
            return seen


def test_a_large_copy_in_and_a_reply_to_a_client_that_does_not_read(
    server: ServerProcess,
) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("SET statement_timeout = '30s'")  # a COPY left unread fails, not hangs
        conn.execute("CREATE COLLECTION big")
        data = "".join(f"k{i}\t{FILLER}\n" for i in range(ROWS)).encode()
        with conn.cursor() as cur, cur.copy("COPY big (id, pad) FROM STDIN") as copy:
            copy.write(data)  # one write: far more than the server holds unpaused
        assert conn.execute("SELECT count(*) FROM big").fetchone() == (ROWS,)

    slow = _startup(server.port)
    try:
        query = b"SELECT id, pad FROM big\0"
        slow.sendall(b"Q" + struct.pack("!i", 4 + len(query)) + query)
        time.sleep(1.0)  # the reply fills the socket's buffers and waits for us
        with psycopg.connect(server.dsn(), autocommit=True, connect_timeout=5) as other:
            started = time.monotonic()
            assert other.execute("SELECT 1").fetchone() == (1,)
            assert time.monotonic() - started < 5
        seen = _read_until_ready(slow)
        assert seen.get(b"D") == ROWS and seen.get(b"C") == 1
    finally:
        slow.close()
