"""A Bind, Execute and Sync that arrive together are answered in one pass (the way
drivers run a prepared statement); the answer must be exactly the one the server gives
when it reads the same three messages one at a time. A Flush after the Bind makes the
server take them one at a time, and changes nothing else in what it sends."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import psycopg
import pytest

from bench.pg import Postgres
from tests.serverproc import ServerProcess

SYNC = b"S\0\0\0\4"
FLUSH = b"H\0\0\0\4"


def _msg(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _parse(name: str, sql: str) -> bytes:
    return _msg(b"P", name.encode() + b"\0" + sql.encode() + b"\0" + struct.pack("!h", 0))


def _bind(stmt: str, params: list[bytes | None], result_format: int = 0, portal: str = "") -> bytes:
    body = portal.encode() + b"\0" + stmt.encode() + b"\0" + struct.pack("!hh", 0, len(params))
    for p in params:
        body += struct.pack("!i", -1) if p is None else struct.pack("!i", len(p)) + p
    return _msg(b"B", body + struct.pack("!hh", 1, result_format))


def _execute(max_rows: int = 0, portal: str = "") -> bytes:
    return _msg(b"E", portal.encode() + b"\0" + struct.pack("!i", max_rows))


def _messages(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The whole messages at the front of ``data``."""
    pos = 0
    while pos + 5 <= len(data):
        (n,) = struct.unpack_from("!i", data, pos + 1)
        if pos + 1 + n > len(data):
            return
        yield data[pos : pos + 1], data[pos + 5 : pos + 1 + n]
        pos += 1 + n


class Client:
    """A raw protocol-3 session that reads each answer up to its ReadyForQuery."""

    def __init__(self, port: int, user: str = "nodedb"):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(10)
        who = user.encode()
        body = struct.pack("!i", 196608) + b"user\0" + who + b"\0database\0" + who + b"\0\0"
        self.sock.sendall(struct.pack("!i", len(body) + 4) + body)
        self.buf = b""
        self.answer()

    def answer(self) -> list[tuple[bytes, bytes]]:
        """The messages up to and including the next ReadyForQuery."""
        while True:
            got = []
            pos = 0
            for kind, body in _messages(self.buf):
                got.append((kind, body))
                pos += 5 + len(body)
                if kind == b"Z":
                    self.buf = self.buf[pos:]
                    return got
            chunk = self.sock.recv(65536)
            assert chunk, "the server closed the connection"
            self.buf += chunk

    def send(self, *parts: bytes) -> list[tuple[bytes, bytes]]:
        self.sock.sendall(b"".join(parts))
        return self.answer()

    def query(self, sql: str) -> list[tuple[bytes, bytes]]:
        return self.send(_msg(b"Q", sql.encode() + b"\0"))

    def close(self) -> None:
        self.sock.sendall(b"X\0\0\0\4")
        self.sock.close()


@pytest.fixture(scope="module")
def server(shared_server: ServerProcess) -> ServerProcess:
    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION onepass")
        conn.execute(
            "INSERT INTO onepass (id, n, g) VALUES ('a', 1, 'x'), ('b', 2, 'x'), ('c', 3, 'x')"
        )
    return shared_server


def _prepare(c: Client) -> Client:
    c.send(_parse("by_g", "SELECT id, n FROM onepass WHERE g = $1 ORDER BY id"), SYNC)
    c.send(_parse("ins", "INSERT INTO onepass (id, n, g) VALUES ($1, $2::int8, 'y')"), SYNC)
    c.send(_parse("by_id", "SELECT * FROM onepass WHERE id = $1"), SYNC)
    c.send(_parse("commit", "COMMIT"), SYNC)
    return c


def _describe_portal(name: str = "") -> bytes:
    return _msg(b"D", b"P" + name.encode() + b"\0")


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[Client]:
    c = _prepare(Client(server.port))
    yield c
    c.close()


def both_ways(c: Client, bind: bytes, execute: bytes) -> list[tuple[bytes, bytes]]:
    """The answer to ``bind``, ``execute``, Sync sent together, after checking that it is
    byte for byte the answer to the same messages read one at a time."""
    together = c.send(bind, execute, SYNC)
    one_by_one = c.send(bind, FLUSH, execute, SYNC)
    assert together == one_by_one
    return together


def kinds(answer: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(k for k, _ in answer)


def test_all_rows_of_a_prepared_select(client: Client) -> None:
    got = both_ways(client, _bind("by_g", [b"x"]), _execute())
    assert kinds(got) == b"2DDDCZ"
    assert got[-2][1] == b"SELECT 3\0"
    assert got[-1][1] == b"I"


@pytest.mark.parametrize("max_rows", [1, 2])
def test_a_row_limit_below_the_rows_suspends_the_portal(client: Client, max_rows: int) -> None:
    got = both_ways(client, _bind("by_g", [b"x"]), _execute(max_rows))
    assert kinds(got) == b"2" + b"D" * max_rows + b"sZ"
    # The Sync closed the portal: executing it again is an error.
    again = client.send(_execute(), SYNC)
    assert kinds(again) == b"EZ" and b"C34000\0" in again[0][1]


def test_a_row_limit_of_all_the_rows_suspends_above_it_completes(client: Client) -> None:
    # As in PostgreSQL: only the next Execute would find that there are no more.
    assert kinds(both_ways(client, _bind("by_g", [b"x"]), _execute(3))) == b"2DDDsZ"
    got = both_ways(client, _bind("by_g", [b"x"]), _execute(5))
    assert kinds(got) == b"2DDDCZ" and got[-2][1] == b"SELECT 3\0"


def test_inside_a_block_a_suspended_portal_goes_on_after_the_sync(client: Client) -> None:
    client.query("BEGIN")
    first = client.send(_bind("by_g", [b"x"]), _execute(1), SYNC)
    assert kinds(first) == b"2DsZ"
    # Each Execute's tag counts its own rows; one at the end finds none.
    assert client.send(_execute(0), SYNC)[-2:] == [(b"C", b"SELECT 2\0"), (b"Z", b"T")]
    assert client.send(_execute(0), SYNC)[0] == (b"C", b"SELECT 0\0")
    # A new Bind of the unnamed portal replaces it.
    assert kinds(client.send(_bind("by_id", [b"a"]), _execute(), SYNC)) == b"2DCZ"
    assert kinds(client.send(_execute(), SYNC)) == b"CZ"
    client.query("COMMIT")
    # The transaction's end ended the portal.
    gone = client.send(_execute(), SYNC)
    assert kinds(gone) == b"EZ" and b"C34000\0" in gone[0][1]


def test_binary_results_and_a_null_parameter(client: Client) -> None:
    got = both_ways(client, _bind("by_id", [b"b"], result_format=1), _execute())
    assert kinds(got) == b"2DCZ"
    assert both_ways(client, _bind("by_id", [None]), _execute()) == [
        (b"2", b""),
        (b"C", b"SELECT 0\0"),
        (b"Z", b"I"),
    ]


def test_a_failing_insert_is_its_error_and_then_ready(client: Client) -> None:
    client.send(_bind("ins", [b"dup", b"1"]), _execute(), SYNC)
    got = both_ways(client, _bind("ins", [b"dup", b"2"]), _execute())
    assert kinds(got) == b"2EZ" and b"C23505\0" in got[1][1]
    bad = both_ways(client, _bind("ins", [b"other", b"not a number"]), _execute())
    assert kinds(bad) == b"EZ" and b"C22P02\0" in bad[0][1]
    assert kinds(both_ways(client, _bind("by_id", [b"other"]), _execute())) == b"2CZ"


def test_inside_a_transaction_block(client: Client) -> None:
    assert client.query("BEGIN")[-1] == (b"Z", b"T")
    ok = client.send(_bind("ins", [b"t1", b"1"]), _execute(), SYNC)
    assert ok == [(b"2", b""), (b"C", b"INSERT 0 1\0"), (b"Z", b"T")]
    seen = both_ways(client, _bind("by_id", [b"t1"]), _execute())
    assert kinds(seen) == b"2DCZ" and seen[-1] == (b"Z", b"T")
    failed = client.send(_bind("ins", [b"t1", b"2"]), _execute(), SYNC)
    assert kinds(failed) == b"2EZ" and failed[-1] == (b"Z", b"E")
    # As in PostgreSQL, the Bind itself is refused (and so no BindComplete).
    refused = both_ways(client, _bind("by_id", [b"t1"]), _execute())
    assert kinds(refused) == b"EZ" and b"C25P02\0" in refused[0][1]
    assert refused[-1] == (b"Z", b"E")
    assert client.query("ROLLBACK")[-1] == (b"Z", b"I")
    gone = client.send(_bind("by_id", [b"t1"]), _execute(), SYNC)
    assert gone[-2] == (b"C", b"SELECT 0\0")


def test_what_is_not_one_statement_batch_goes_message_by_message(client: Client) -> None:
    missing = both_ways(client, _bind("nope", [b"x"]), _execute())
    assert kinds(missing) == b"EZ" and b"C26000\0" in missing[0][1]
    wrong_count = both_ways(client, _bind("by_id", [b"a", b"b"]), _execute())
    assert kinds(wrong_count) == b"EZ" and b"C08P01\0" in wrong_count[0][1]
    # A named portal lasts until its transaction ends: outside a block, at the Sync.
    named = client.send(_bind("by_g", [b"x"], portal="p1"), _execute(1, portal="p1"), SYNC)
    assert kinds(named) == b"2DsZ"
    gone = client.send(_execute(0, portal="p1"), SYNC)
    assert kinds(gone) == b"EZ" and b"C34000\0" in gone[0][1]
    client.query("BEGIN")
    client.send(_bind("by_g", [b"x"], portal="p1"), _execute(2, portal="p1"), SYNC)
    rest = client.send(_execute(0, portal="p1"), SYNC)
    assert rest[-2:] == [(b"C", b"SELECT 1\0"), (b"Z", b"T")]
    client.query("ROLLBACK")


def _script(c: Client) -> list[list[tuple[bytes, bytes]]]:
    """Every case above in turn; errors reduced to their SQLSTATE, whose texts differ."""
    steps = [
        both_ways(c, _bind("by_g", [b"x"]), _execute()),
        both_ways(c, _bind("by_g", [b"x"]), _execute(1)),
        c.send(_execute(), SYNC),
        both_ways(c, _bind("by_g", [b"x"]), _execute(3)),
        both_ways(c, _bind("by_id", [b"b"], result_format=1), _execute()),
        both_ways(c, _bind("by_id", [None]), _execute()),
        c.send(_bind("ins", [b"dup", b"1"]), _execute(), SYNC),
        both_ways(c, _bind("ins", [b"dup", b"2"]), _execute()),
        both_ways(c, _bind("ins", [b"other", b"not a number"]), _execute()),
        c.query("BEGIN"),
        c.send(_bind("ins", [b"t1", b"1"]), _execute(), SYNC),
        both_ways(c, _bind("by_id", [b"t1"]), _execute()),
        c.send(_bind("ins", [b"t1", b"2"]), _execute(), SYNC),
        both_ways(c, _bind("by_id", [b"t1"]), _execute()),
        c.query("ROLLBACK"),
        c.send(_bind("by_id", [b"t1"]), _execute(), SYNC),
        both_ways(c, _bind("nope", [b"x"]), _execute()),
        both_ways(c, _bind("by_id", [b"a", b"b"]), _execute()),
        c.send(_bind("by_g", [b"x"], portal="p1"), _execute(1, portal="p1"), SYNC),
        c.send(_execute(0, portal="p1"), SYNC),
        c.query("BEGIN"),
        c.send(_bind("by_g", [b"x"], portal="p1"), _execute(2, portal="p1"), SYNC),
        c.send(_bind("by_g", [b"x"]), _execute(3), SYNC),
        c.send(_execute(0, portal="p1"), SYNC),
        c.send(_execute(1, portal="p1"), SYNC),
        c.send(_execute(0), SYNC),
        c.send(_bind("ins", [b"r1", b"5"], portal="p2"), _execute(1, portal="p2"), SYNC),
        c.send(_execute(1, portal="p2"), SYNC),
        c.query("ROLLBACK"),
        c.send(_execute(0), SYNC),
        # In a failed block no portal goes on, not even a suspended one, nor is described.
        c.query("BEGIN"),
        c.send(_bind("by_g", [b"x"]), _execute(1), SYNC),
        c.send(_bind("ins", [b"dup", b"3"]), _execute(), SYNC),
        c.send(_execute(1), SYNC),
        c.send(_describe_portal(), SYNC),
        c.send(_msg(b"D", b"Sby_g\0"), SYNC),
        c.send(_msg(b"D", b"Scommit\0"), SYNC),  # one without rows still is, for ROLLBACK
        c.query("ROLLBACK"),
        # One whose statement failed exists, in a failed block.
        c.query("BEGIN"),
        c.send(_bind("ins", [b"dup", b"4"]), _execute(), SYNC),
        c.send(_execute(), SYNC),
        c.query("ROLLBACK"),
        # A COMMIT inside a batch ends the transaction's portals.
        c.query("BEGIN"),
        c.send(
            _bind("by_g", [b"x"], portal="p3"),
            _execute(1, portal="p3"),
            _bind("commit", []),
            _execute(),
            _execute(1, portal="p3"),
            SYNC,
        ),
    ]
    return [[(k, _sqlstate(b) if k == b"E" else b) for k, b in step if k != b"N"] for step in steps]


def _sqlstate(body: bytes) -> bytes:
    return next(f[1:] for f in body.split(b"\0") if f.startswith(b"C"))


def test_answers_as_postgresql(server: ServerProcess, postgres: Postgres) -> None:
    with psycopg.connect(
        host="127.0.0.1", port=postgres.port, user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        conn.execute("DROP TABLE IF EXISTS onepass")
        conn.execute("CREATE TABLE onepass (id text PRIMARY KEY, n int8, g text)")
        conn.execute("INSERT INTO onepass VALUES ('a', 1, 'x'), ('b', 2, 'x'), ('c', 3, 'x')")
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("DELETE FROM onepass WHERE id = 'dup'")
    ours, theirs = _prepare(Client(server.port)), _prepare(Client(postgres.port, "postgres"))
    try:
        assert _script(ours) == _script(theirs)
    finally:
        ours.close()
        theirs.close()
