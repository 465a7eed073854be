"""The protocol state machine fed plain bytes, told what the server sends (no sockets)."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from nodedb_server.errors import DBError, ProtocolViolation
from nodedb_server.pgwire import messages as m
from nodedb_server.pgwire.connection import PgConnection, State

# ---- frontend messages, built by hand ---------------------------------------------------------


def startup(**params: str) -> bytes:
    body = (
        struct.pack("!i", 196608)
        + b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items())
        + b"\0"
    )
    return struct.pack("!i", len(body) + 4) + body


def msg(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def query(sql: str) -> bytes:
    return msg(b"Q", sql.encode() + b"\0")


def parse(name: str, sql: str) -> bytes:
    return msg(b"P", name.encode() + b"\0" + sql.encode() + b"\0" + struct.pack("!h", 0))


def bind(portal: str, statement: str, *params: bytes) -> bytes:
    values = b"".join(struct.pack("!i", len(p)) + p for p in params)
    body = portal.encode() + b"\0" + statement.encode() + b"\0"
    return msg(b"B", body + struct.pack("!hh", 0, len(params)) + values + struct.pack("!h", 0))


def execute(portal: str = "", max_rows: int = 0) -> bytes:
    return msg(b"E", portal.encode() + b"\0" + struct.pack("!i", max_rows))


def describe_portal(name: str = "") -> bytes:
    return msg(b"D", b"P" + name.encode() + b"\0")


SYNC = msg(b"S", b"")
FLUSH = msg(b"H", b"")
TERMINATE = msg(b"X", b"")
COPY_DONE = m.COPY_DONE.encode()  # the same message both ways


def copy_data(data: bytes) -> bytes:
    return m.CopyData(data).encode()


def copy_fail(reason: str) -> bytes:
    return msg(b"f", reason.encode() + b"\0")


ERROR = m.ErrorResponse("ERROR", "22000", "bad value")


# ---- machines in a given state ------------------------------------------------------------------


def authenticating() -> PgConnection[str]:
    c: PgConnection[str] = PgConnection(max_message_bytes=1 << 20)
    c.receive_data(startup(user="u", database="d"))
    assert isinstance(c.next_event(), m.Startup)
    return c


def idle() -> PgConnection[str]:
    c = authenticating()
    c.send(m.AUTHENTICATION_OK)
    c.send(m.ReadyForQuery("I"))
    assert c.state is State.IDLE
    return c


def events(c: PgConnection[str]) -> list[m.Event]:
    """Every event the bytes received so far make, stopping where the server must answer."""
    out: list[m.Event] = []
    while c.state in (State.IDLE, State.EXTENDED, State.SKIP_UNTIL_SYNC, State.COPY_IN):
        event = c.next_event()
        if event is None:
            break
        out.append(event)
    return out


# ---- startup and authentication ---------------------------------------------------------------


def test_startup_delivered_one_byte_at_a_time() -> None:
    c: PgConnection[str] = PgConnection(1 << 20)
    data = startup(user="alice", database="acme", client_encoding="'utf-8'")
    for b in data[:-1]:
        c.receive_data(bytes([b]))
        assert c.next_event() is None
    c.receive_data(data[-1:])
    ev = c.next_event()
    assert ev == m.Startup({"user": "alice", "database": "acme", "client_encoding": "'utf-8'"})
    assert c.state is State.AUTH


def test_ssl_request_is_answered_N_then_startup() -> None:
    c: PgConnection[str] = PgConnection(1 << 20)
    c.receive_data(struct.pack("!ii", 8, 80877103) + startup(user="u"))
    assert isinstance(c.next_event(), m.SSLRequest)
    assert c.send(m.NO_ENCRYPTION) == b"N"
    assert c.state is State.STARTUP
    assert isinstance(c.next_event(), m.Startup)


def test_cancel_request_closes() -> None:
    c: PgConnection[str] = PgConnection(1 << 20)
    c.receive_data(struct.pack("!iiii", 16, 80877102, 1234, 5678))
    assert c.next_event() == m.CancelRequest(1234, 5678)
    assert c.state is State.CLOSED


@pytest.mark.parametrize("data", [b"\x00\x00\x00\x02", struct.pack("!ii", 8, 0x00020000)])
def test_bad_startup_packets(data: bytes) -> None:
    c: PgConnection[str] = PgConnection(1 << 20)
    c.receive_data(data)
    with pytest.raises(ProtocolViolation):
        c.next_event()


def test_scram_exchange_then_parameters_key_and_ready() -> None:
    c = authenticating()
    c.send(m.AuthenticationSASL(("SCRAM-SHA-256",)))
    c.receive_data(msg(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", 3) + b"n,,"))
    assert c.next_event() == m.Password(b"SCRAM-SHA-256\0\0\0\0\3n,,")
    c.send(m.AuthenticationSASLContinue(b"r=x"))
    c.receive_data(msg(b"p", b"c=biws"))
    assert c.next_event() == m.Password(b"c=biws")
    c.send(m.AuthenticationSASLFinal(b"v=y"))
    assert c.send(m.AUTHENTICATION_OK) == b"R\0\0\0\x08\0\0\0\0"
    assert c.state is State.AUTHENTICATED
    assert c.send(m.ParameterStatus("TimeZone", "UTC")) == msg(b"S", b"TimeZone\0UTC\0")
    assert c.send(m.BackendKeyData(1001, 42)) == msg(b"K", struct.pack("!ii", 1001, 42))
    assert c.send(m.ReadyForQuery("I")) == b"Z\0\0\0\x05I"
    assert c.state is State.IDLE


def test_query_before_auth_is_a_violation() -> None:
    c = authenticating()
    c.receive_data(query("SELECT 1"))
    with pytest.raises(ProtocolViolation, match="0x51 in the auth state"):
        c.next_event()


def test_nothing_is_read_between_authentication_ok_and_ready() -> None:
    c = authenticating()
    c.send(m.AUTHENTICATION_OK)
    c.receive_data(query("SELECT 1"))  # sent early by the client: it waits in the buffer
    with pytest.raises(ProtocolViolation, match="reads no message in the authenticated state"):
        c.next_event()
    c.send(m.ReadyForQuery("I"))
    assert c.next_event() == m.Query("SELECT 1")


def test_a_password_message_after_authentication_is_a_violation() -> None:
    c = idle()
    c.receive_data(msg(b"p", b"secret\0"))
    with pytest.raises(ProtocolViolation, match="0x70 in the idle state"):
        c.next_event()


def test_ready_for_query_cannot_skip_authentication() -> None:
    c = authenticating()
    with pytest.raises(ProtocolViolation, match="ReadyForQuery in the auth state"):
        c.send(m.ReadyForQuery("I"))


# ---- framing ----------------------------------------------------------------------------------


def test_giant_length_prefix_is_refused_before_allocating() -> None:
    c = idle()
    c.receive_data(b"Q" + struct.pack("!i", 1 << 30))
    with pytest.raises(ProtocolViolation, match="max_message_bytes"):
        c.next_event()


def test_bind_with_binary_and_null_parameters() -> None:
    c = idle()
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


def test_terminate_closes() -> None:
    c = idle()
    c.receive_data(TERMINATE + query("SELECT 1"))
    assert isinstance(c.next_event(), m.Terminate)
    assert c.state is State.CLOSED and c.next_event() is None


# ---- simple query -----------------------------------------------------------------------------


def test_simple_query_answered_then_idle() -> None:
    c = idle()
    c.receive_data(query("SELECT 1"))
    assert c.next_event() == m.Query("SELECT 1")
    assert c.state is State.SIMPLE_QUERY
    c.send(m.RowDescription([m.Field("n", 20)]))
    assert c.send_data_row([b"1"]) == msg(b"D", struct.pack("!hi", 1, 1) + b"1")
    assert c.send(m.CommandComplete("SELECT 1")) == msg(b"C", b"SELECT 1\0")
    c.send(m.ReadyForQuery("I"))
    assert c.state is State.IDLE


def test_an_error_in_a_query_still_ends_with_ready_for_query() -> None:
    c = idle()
    c.receive_data(query("SELECT x") + query("SELECT 2"))
    assert isinstance(c.next_event(), m.Query)
    c.send(ERROR)
    assert c.state is State.SIMPLE_QUERY  # nothing is skipped: the next Query runs
    c.send(m.ReadyForQuery("I"))
    assert c.next_event() == m.Query("SELECT 2")


def test_no_message_is_read_while_a_query_is_answered() -> None:
    c = idle()
    c.receive_data(query("SELECT 1") + query("SELECT 2"))
    c.next_event()
    with pytest.raises(ProtocolViolation, match="reads no message in the simple_query state"):
        c.next_event()


def test_extended_replies_are_not_answers_to_a_query() -> None:
    c = idle()
    c.receive_data(query("SELECT 1"))
    c.next_event()
    for reply in (m.BIND_COMPLETE, m.PORTAL_SUSPENDED, m.ParameterDescription([20])):
        with pytest.raises(ProtocolViolation, match="in the simple_query state"):
            c.send(reply)


def test_stray_copy_messages_outside_copy_are_dropped() -> None:
    c = idle()
    c.receive_data(copy_data(b"1\n") + COPY_DONE + copy_fail("late") + query("SELECT 1"))
    assert c.next_event() == m.Query("SELECT 1")


def test_flush_outside_a_batch_is_delivered_and_stays_idle() -> None:
    c = idle()
    c.receive_data(FLUSH)
    assert isinstance(c.next_event(), m.Flush)
    assert c.state is State.IDLE


def test_a_lone_sync_is_answered_ready_for_query() -> None:
    c = idle()
    c.receive_data(SYNC)
    assert isinstance(c.next_event(), m.Sync)
    assert c.state is State.SYNC
    c.send(m.ReadyForQuery("I"))
    assert c.state is State.IDLE


def test_an_error_at_sync_is_followed_by_ready_for_query() -> None:
    """The commit of a batch's implicit transaction runs at its Sync and may fail: the
    error is sent there, and the ReadyForQuery after it ends the batch."""
    c = idle()
    c.receive_data(SYNC)
    assert isinstance(c.next_event(), m.Sync)
    c.send(m.ErrorResponse("ERROR", "53100", "could not extend file: No space left on device"))
    assert c.state is State.SYNC
    c.send(m.ReadyForQuery("I"))
    assert c.state is State.IDLE


# ---- extended query ---------------------------------------------------------------------------


def test_parse_bind_execute_sync() -> None:
    c = idle()
    c.receive_data(parse("s1", "SELECT $1") + bind("", "s1", b"7") + execute() + SYNC)
    assert c.next_event() == m.Parse("s1", "SELECT $1", ())
    assert c.state is State.EXTENDED
    assert c.send(m.PARSE_COMPLETE) == b"1\0\0\0\4"
    assert c.next_event() == m.Bind("", "s1", (), (b"7",), ())
    assert c.send(m.BIND_COMPLETE) == b"2\0\0\0\4"
    assert c.next_event() == m.Execute("", 0)
    c.send_data_row([b"7"])
    c.send(m.CommandComplete("SELECT 1"))
    with pytest.raises(ProtocolViolation, match="ReadyForQuery in the extended state"):
        c.send(m.ReadyForQuery("I"))  # only a Sync ends the batch
    assert isinstance(c.next_event(), m.Sync)
    assert c.state is State.SYNC
    assert c.send(m.ReadyForQuery("T")) == b"Z\0\0\0\x05T"
    assert c.state is State.IDLE


def test_pipelined_batches_come_out_one_batch_at_a_time() -> None:
    c = idle()
    batch = bind("", "s1", b"1") + execute() + SYNC
    c.receive_data(batch + batch)
    assert [type(e) for e in events(c)] == [m.Bind, m.Execute, m.Sync]
    c.send(m.ReadyForQuery("I"))
    assert [type(e) for e in events(c)] == [m.Bind, m.Execute, m.Sync]


def test_execute_with_max_rows_is_suspended() -> None:
    c = idle()
    c.receive_data(bind("", "s1") + execute("", 1) + execute("", 1) + SYNC)
    c.next_event()
    c.send(m.BIND_COMPLETE)
    assert c.next_event() == m.Execute("", 1)
    c.send_data_row([b"a"])
    assert c.send(m.PORTAL_SUSPENDED) == b"s\0\0\0\4"
    assert c.next_event() == m.Execute("", 1)
    c.send_data_row([b"b"])
    c.send(m.CommandComplete("SELECT 2"))
    assert isinstance(c.next_event(), m.Sync)


def test_an_error_skips_the_batch_until_sync() -> None:
    c = idle()
    c.receive_data(
        parse("s1", "SELECT 1")
        + bind("", "s1")
        + describe_portal()
        + execute()
        + FLUSH
        + query("SELECT 2")  # dropped too, as PostgreSQL does until the Sync
        + copy_data(b"x")
        + SYNC
        + parse("s2", "SELECT 3")
    )
    assert isinstance(c.next_event(), m.Parse)
    c.send(ERROR)
    assert c.state is State.SKIP_UNTIL_SYNC
    assert isinstance(c.next_event(), m.Sync)
    assert c.state is State.SYNC
    c.send(m.ReadyForQuery("I"))
    assert c.next_event() == m.Parse("s2", "SELECT 3", ())


def test_messages_skipped_are_not_decoded_but_types_are_checked() -> None:
    c = idle()
    c.receive_data(bind("", "s1"))
    c.next_event()
    c.send(ERROR)
    c.receive_data(msg(b"B", b"\0\0\xff\xff") + SYNC)  # malformed, but skipped unread
    assert isinstance(c.next_event(), m.Sync)
    c.send(m.ReadyForQuery("I"))
    c.receive_data(bind("", "s1"))
    c.next_event()
    c.send(ERROR)
    c.receive_data(msg(b"\x01", b""))
    with pytest.raises(ProtocolViolation, match="unexpected message type 0x01"):
        c.next_event()


def test_terminate_is_read_while_skipping() -> None:
    c = idle()
    c.receive_data(bind("", "s1") + execute() + TERMINATE)
    c.next_event()
    c.send(ERROR)
    assert isinstance(c.next_event(), m.Terminate)
    assert c.state is State.CLOSED


def test_session_goes_on_after_an_error_in_bind() -> None:
    """A Bind the server refuses (wrong parameter count, 08P01 ERROR): the machine
    drops the rest of the batch, delivers the Sync and is ready for more."""
    c = idle()
    bad_bind = msg(b"B", b"\0s1\0" + struct.pack("!hh", 0, 1) + struct.pack("!i", 1) + b"7\0\0")
    c.receive_data(bad_bind + describe_portal() + execute() + SYNC + query("SELECT 1"))
    assert isinstance(c.next_event(), m.Bind)
    c.send(m.ErrorResponse("ERROR", "08P01", "bind message supplies 1 parameters"))
    assert isinstance(c.next_event(), m.Sync)
    c.send(m.ReadyForQuery("I"))
    assert c.next_event() == m.Query("SELECT 1")


def test_a_query_inside_a_batch_ends_it() -> None:
    c = idle()
    c.receive_data(bind("", "s1") + query("SELECT 1"))
    c.next_event()
    c.bind_portal("", "unnamed")
    c.send(m.BIND_COMPLETE)
    assert c.next_event() == m.Query("SELECT 1")
    assert c.state is State.SIMPLE_QUERY
    assert "" not in c.portals
    c.send(m.ReadyForQuery("I"))
    assert c.state is State.IDLE


def test_an_error_outside_a_statement_is_refused() -> None:
    c = idle()
    with pytest.raises(ProtocolViolation, match="cannot send an error in the idle state"):
        c.send(ERROR)


# ---- portals ----------------------------------------------------------------------------------


def test_portals_last_until_their_transaction_ends() -> None:
    c = idle()
    c.receive_data(bind("", "s1") + bind("cur", "s1") + SYNC + execute("cur") + SYNC)
    c.next_event()
    c.bind_portal("", "unnamed")
    c.next_event()
    c.bind_portal("cur", "named")
    assert isinstance(c.next_event(), m.Sync)
    c.send(m.ReadyForQuery("T"))  # inside a transaction block both last
    assert c.portal("") == "unnamed"
    assert isinstance(c.next_event(), m.Execute)
    assert c.portal("cur") == "named"
    c.close_portal("cur")
    with pytest.raises(DBError, match='portal "cur" does not exist'):
        c.portal("cur")
    c.bind_portal("cur", "again")
    assert isinstance(c.next_event(), m.Sync)
    c.send(m.ReadyForQuery("I"))  # the transaction ended, and every portal with it
    for name in ("", "cur"):
        with pytest.raises(DBError) as e:
            c.portal(name)
        assert e.value.sqlstate == "34000"


def test_a_bind_of_the_unnamed_portal_replaces_it_a_named_one_must_be_new() -> None:
    c = idle()
    c.bind_portal("", "first")
    c.bind_portal("", "second")
    assert c.portal("") == "second"
    c.bind_portal("cur", "one")
    with pytest.raises(DBError) as e:
        c.bind_portal("cur", "two")
    assert e.value.sqlstate == "42P03" and e.value.severity == "ERROR"
    assert c.portal("cur") == "one"


def test_the_unnamed_portal_also_ends_at_the_sync_after_an_error() -> None:
    c = idle()
    c.receive_data(bind("", "s1") + execute() + SYNC)
    c.next_event()
    c.bind_portal("", "unnamed")
    c.send(m.BIND_COMPLETE)
    c.next_event()
    c.send(ERROR)
    c.next_event()
    c.send(m.ReadyForQuery("I"))
    assert c.portals == {}


# ---- COPY ---------------------------------------------------------------------------------------


def in_copy(*, extended: bool) -> PgConnection[str]:
    c = idle()
    c.receive_data(execute() if extended else query("COPY t FROM STDIN"))
    c.next_event()
    c.send(m.CopyInResponse(0, (0, 0)))
    assert c.state is State.COPY_IN
    return c


def test_copy_in_data_then_done() -> None:
    c = in_copy(extended=False)
    c.receive_data(copy_data(b"1\ta\n") + FLUSH + SYNC + copy_data(b"2\tb\n") + COPY_DONE)
    assert c.next_event() == m.CopyData(b"1\ta\n")
    assert c.next_event() == m.CopyData(b"2\tb\n")  # Flush and Sync are ignored in COPY
    assert isinstance(c.next_event(), m.CopyDone)
    assert c.state is State.SIMPLE_QUERY
    c.send(m.CommandComplete("COPY 2"))
    c.send(m.ReadyForQuery("I"))


def test_copy_in_fail_is_answered_with_an_error() -> None:
    c = in_copy(extended=False)
    c.receive_data(copy_data(b"1\n") + copy_fail("user stopped"))
    c.next_event()
    assert c.next_event() == m.CopyFail("user stopped")
    assert c.state is State.SIMPLE_QUERY
    c.send(m.ErrorResponse("ERROR", "57014", "COPY from stdin failed: user stopped"))
    c.send(m.ReadyForQuery("I"))
    assert c.state is State.IDLE


def test_copy_in_accepts_only_copy_messages() -> None:
    c = in_copy(extended=False)
    c.receive_data(copy_data(b"abc") + query("SELECT 1"))
    assert c.next_event() == m.CopyData(b"abc")
    with pytest.raises(ProtocolViolation, match="0x51 in the copy_in state"):
        c.next_event()


def test_after_a_failed_copy_in_the_rest_of_its_data_is_dropped() -> None:
    c = in_copy(extended=False)
    c.receive_data(copy_data(b"bad\n") + copy_data(b"more\n") + COPY_DONE + query("SELECT 1"))
    assert c.next_event() == m.CopyData(b"bad\n")
    c.send(ERROR)  # the sink gave up
    assert c.state is State.SIMPLE_QUERY
    c.send(m.ReadyForQuery("E"))
    assert c.next_event() == m.Query("SELECT 1")


def test_a_failed_copy_in_of_a_batch_skips_until_sync() -> None:
    c = in_copy(extended=True)
    c.receive_data(copy_data(b"bad\n") + copy_data(b"more\n") + COPY_DONE + SYNC)
    c.next_event()
    c.send(ERROR)
    assert c.state is State.SKIP_UNTIL_SYNC
    assert isinstance(c.next_event(), m.Sync)


def test_copy_in_of_a_batch_returns_to_it() -> None:
    c = in_copy(extended=True)
    c.receive_data(COPY_DONE + SYNC)
    assert isinstance(c.next_event(), m.CopyDone)
    assert c.state is State.EXTENDED
    c.send(m.CommandComplete("COPY 0"))
    assert isinstance(c.next_event(), m.Sync)


def test_nothing_but_notices_and_errors_is_sent_during_copy_in() -> None:
    c = in_copy(extended=False)
    c.send(m.NoticeResponse("progress"))
    for event in (m.ReadyForQuery("I"), m.CommandComplete("COPY 1"), m.CopyData(b"x")):
        with pytest.raises(ProtocolViolation, match="in the copy_in state"):
            c.send(event)


def test_copy_out_data_then_done() -> None:
    c = idle()
    c.receive_data(query("COPY (BACKUP TENANT t) TO STDOUT"))
    c.next_event()
    assert c.send(m.CopyOutResponse(1, (1,))) == msg(b"H", b"\x01" + struct.pack("!hh", 1, 1))
    assert c.state is State.COPY_OUT
    assert c.send(m.CopyData(b"piece")) == msg(b"d", b"piece")
    c.send(m.NoticeResponse("backup: 50%"))
    with pytest.raises(ProtocolViolation, match="DataRow in the copy_out state"):
        c.send_data_row([b"x"])
    with pytest.raises(ProtocolViolation, match="ReadyForQuery in the copy_out state"):
        c.send(m.ReadyForQuery("I"))
    assert c.send(m.COPY_DONE) == b"c\0\0\0\4"
    assert c.state is State.SIMPLE_QUERY
    c.send(m.CommandComplete("COPY 5"))
    c.send(m.ReadyForQuery("I"))


def test_a_failed_copy_out_of_a_batch_skips_until_sync() -> None:
    c = idle()
    c.receive_data(execute() + execute() + SYNC)
    c.next_event()
    c.send(m.CopyOutResponse(1, (1,)))
    with pytest.raises(ProtocolViolation, match="reads no message in the copy_out state"):
        c.next_event()
    c.send(m.CopyData(b"part"))
    c.send(m.ErrorResponse("ERROR", "57014", "canceling statement due to user request"))
    assert c.state is State.SKIP_UNTIL_SYNC
    assert isinstance(c.next_event(), m.Sync)


def test_copy_data_and_done_are_sent_only_in_copy_out() -> None:
    c = idle()
    c.receive_data(execute())
    c.next_event()
    with pytest.raises(ProtocolViolation, match="CopyData in the extended state"):
        c.send(m.CopyData(b"x"))
    with pytest.raises(ProtocolViolation, match="CopyDone in the extended state"):
        c.send(m.COPY_DONE)


# ---- the end ------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [authenticating, idle, lambda: in_copy(extended=True)])
def test_a_fatal_error_may_end_the_connection_in_any_state(
    make: Callable[[], PgConnection[str]],
) -> None:
    c = make()
    c.send(m.ErrorResponse("FATAL", "57P01", "terminating connection"))
    assert c.state is State.CLOSED
    with pytest.raises(ProtocolViolation, match="in the closed state"):
        c.send(m.NoticeResponse("late"))


def test_format_codes_none_one_or_one_each() -> None:
    assert m.format_codes((), 3) == (0, 0, 0)
    assert m.format_codes((1,), 2) == (1, 1)
    assert m.format_codes((0, 1), 2) == (0, 1)
    with pytest.raises(DBError) as e:
        m.format_codes((0, 1), 3)
    assert e.value.sqlstate == "08P01" and e.value.severity == "ERROR"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"\0s1\0" + struct.pack("!hh", 0, 1) + struct.pack("!i", 5) + b"ab", "shorter"),
        (b"\0s1\0" + struct.pack("!h", -1), "negative count"),
        (b"\0s1\0" + struct.pack("!hh", 0, 1) + struct.pack("!i", -2), "shorter"),
        (b"\0s1", "not terminated"),
        (b"\xff\0s1\0" + struct.pack("!hhh", 0, 0, 0), "invalid UTF-8"),
        (b"\0\0" + struct.pack("!hh", 5, 1), "shorter"),
    ],
    ids=["value-overruns", "negative-count", "negative-length", "no-zero", "utf8", "formats"],
)
def test_malformed_bind_is_a_violation(body: bytes, error: str) -> None:
    c = idle()
    c.receive_data(msg(b"B", body))
    with pytest.raises(ProtocolViolation, match=error):
        c.next_event()


def test_every_move_in_the_send_table_is_a_legal_transition() -> None:
    from nodedb_server.pgwire.connection import _SENDS, _TRANSITIONS

    assert set(_SENDS) == set(State) == set(_TRANSITIONS)
    for state, moves in _SENDS.items():
        for message, target in moves.items():
            assert target is None or target in _TRANSITIONS[state], (state, message)
    for state, targets in _TRANSITIONS.items():
        assert state is State.CLOSED or State.CLOSED in targets  # a FATAL error, anywhere
