"""The asyncio shell around the protocol machine: sockets in, sessions out.

One ``ClientHandler`` per connection feeds its socket's bytes to a
``PgConnection``, acts on the events that come out, and writes the bytes the
machine encodes for its answers. The shell owns what is I/O or execution: when
to write (one write per batch), authentication, statement timeout and cancel,
running statements through a ``Session``, and driving a streaming result's
COPY. Which message is legal when, the skipping after an error and when a
portal ends are the machine's. Prepared statements live in the session, whose
namespace SQL PREPARE shares. The SQL layer knows nothing of the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from nodedb_server import SERVER_VERSION
from nodedb_server.config import Config
from nodedb_server.errors import (
    AdminShutdown,
    CannotConnectNow,
    DBError,
    InFailedTransaction,
    InvalidAuthorization,
    InvalidPassword,
    ProtocolViolation,
    QueryCanceled,
    SyntaxError_,
    TooManyConnections,
)
from nodedb_server.events.notify import Notification
from nodedb_server.pgwire import messages as m
from nodedb_server.pgwire.auth import MECHANISM, ScramError, ScramExchange
from nodedb_server.pgwire.connection import PgConnection, State
from nodedb_server.pgwire.values import (
    Encoder,
    bind_params,
    row_description,
    row_encoders,
    row_values,
    too_complex,
)
from nodedb_server.sql import ast
from nodedb_server.sql.exec.txn import Txn
from nodedb_server.sql.parse import parse_off_loop
from nodedb_server.sql.registry import Prepared, spec_of
from nodedb_server.sql.result import Column, CopyOut, Result
from nodedb_server.sql.session import Session
from nodedb_server.tenants.manager import TenantManager
from nodedb_server.tenants.users import ScramVerifier

log = logging.getLogger("nodedb.pgwire")

# How long a closing connection waits for the client to close its side.
LINGER_S = 1.0
READ_CHUNK = 256 * 1024
# Rows sent between drains on a large result, bounding the write buffer.
DRAIN_EVERY_ROWS = 1000
WRITE_HIGH_WATER = 256 * 1024


# Statements a Bind, Execute and Sync arriving together run in one pass for: the ones
# that neither stream (COPY reads or writes more messages) nor change the session.
ONE_PASS = frozenset(
    {ast.Select, ast.Insert, ast.Update, ast.Delete, ast.VectorSearch, ast.RelationalQuery}
)


@dataclass
class Portal:
    """A bound statement, and the result its Executes send from: computed at the first,
    then ``sent`` rows so far when each asks for at most max_rows."""

    prepared: Prepared
    params: list[Any]
    result_formats: tuple[int, ...]
    columns: list[Column] | None = None
    result: Result | None = None
    sent: int = 0


def _rows_tag(tag: str, count: int) -> str:
    """A command tag that ends in a row count ("SELECT 3", "INSERT 0 3"), counting the
    rows of one Execute, as PostgreSQL tags each Execute of a portal."""
    head, _, last = tag.rpartition(" ")
    return f"{head} {count}" if head and last.isdigit() else tag


def _utf8(value: str) -> bool:
    return value.strip().strip("'\"").upper().replace("-", "").replace("_", "") in (
        "UTF8",
        "UNICODE",
    )


def _notification(note: Notification) -> m.NotificationResponse:
    return m.NotificationResponse(note.pid, note.channel, note.payload)


class CopyChunks:
    """The CopyData payloads of a COPY FROM STDIN, until CopyDone; CopyFail is 57014.
    An async iterator written as a class, not an async generator, which mypyc does not
    compile; ``aclose`` ends it (``contextlib.aclosing``), as it would a generator."""

    def __init__(self, handler: ClientHandler) -> None:
        self._handler = handler
        self._done = False

    def __aiter__(self) -> CopyChunks:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        event = await self._handler.next_event()
        if isinstance(event, m.CopyData):
            return event.data
        self._done = True
        if isinstance(event, m.CopyDone):
            raise StopAsyncIteration
        if isinstance(event, m.CopyFail):
            raise QueryCanceled(f"COPY from stdin failed: {event.message}")
        raise ConnectionError("client went away during COPY")  # Terminate, or EOF

    async def aclose(self) -> None:
        self._done = True


class Link(asyncio.Protocol):
    """One client's socket, as the handler uses it: what arrives is held until ``read``,
    writes go straight to the transport. In place of asyncio's StreamReader and
    StreamWriter, whose layers of Python (read, its waiter, feed_data, write) were 8%
    of the server's main thread in a W1 profile once the rest was compiled. Reading pauses while
    more than ``2 * READ_CHUNK`` is held, and ``drain`` waits while the transport has
    paused writing, as the streams did."""

    def __init__(self, server: PgServer) -> None:
        self._server = server
        # Any: uvloop's transports are no asyncio.Transport, and compiled code checks.
        self.transport: Any = None
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._eof = False  # no more input
        self._lost = False  # the connection is gone
        self._error: BaseException | None = None
        self._reader: asyncio.Future[None] | None = None  # read waiting for data
        self._drainers: list[asyncio.Future[None]] = []  # drain waiting for resume_writing
        self._reading_paused = False
        self._writing_paused = False

    # ---- the transport's side ---------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self._server.accept(self)

    def data_received(self, data: bytes) -> None:
        self._held.append(data)
        self._held_bytes += len(data)
        if self._held_bytes > 2 * READ_CHUNK and not self._reading_paused:
            assert self.transport is not None
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        return True  # keep the transport open: the handler half-closes it itself (linger)

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = self._lost = True
        if exc is not None and self._error is None:
            self._error = exc
        self._wake_reader()
        for waiter in self._drainers:
            if not waiter.done():
                waiter.set_result(None)
        self._drainers.clear()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        for waiter in self._drainers:
            if not waiter.done():
                waiter.set_result(None)
        self._drainers.clear()

    def _wake_reader(self) -> None:
        waiter = self._reader
        if waiter is not None:
            self._reader = None
            if not waiter.done():
                waiter.set_result(None)

    # ---- the handler's side -----------------------------------------------------------------

    async def read(self, limit: int) -> bytes:
        """Up to ``limit`` bytes once some are there; b"" at the end of input. A reset
        connection raises its error once what arrived before it is read."""
        while not self._held:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            waiter = self._reader = asyncio.get_running_loop().create_future()
            await waiter
        held = self._held
        data = held[0] if len(held) == 1 else b"".join(held)
        held.clear()
        if len(data) > limit:
            held.append(data[limit:])
            data = data[:limit]
        self._held_bytes = len(held[0]) if held else 0
        if self._reading_paused and self._held_bytes <= READ_CHUNK:
            self._reading_paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        return data

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def buffered(self) -> int:
        """Bytes written but not yet taken by the socket."""
        assert self.transport is not None
        return self.transport.get_write_buffer_size()

    async def drain(self) -> None:
        """Wait while the transport has paused writing (past its high-water mark); a
        lost connection raises, as StreamWriter.drain does."""
        assert self.transport is not None
        if self._error is not None:
            raise self._error
        if self.transport.is_closing():
            await asyncio.sleep(0)  # let connection_lost run first
        if self._lost:
            raise ConnectionResetError("Connection lost")
        if self._writing_paused:
            waiter = asyncio.get_running_loop().create_future()
            self._drainers.append(waiter)
            await waiter
            if self._lost:
                raise ConnectionResetError("Connection lost")

    def write_eof(self) -> None:
        assert self.transport is not None
        if self.transport.can_write_eof() and not self.transport.is_closing():
            self.transport.write_eof()

    def peer(self) -> Any:
        assert self.transport is not None
        return self.transport.get_extra_info("peername")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class ClientHandler:
    def __init__(self, server: PgServer, link: Link):
        self.server = server
        self.link = link
        self.conn: PgConnection[Portal] = PgConnection(server.cfg["limits.max_message_bytes"])
        self.pid = server.next_pid()
        self.secret = secrets.randbits(31)
        self.session: Session | None = None
        self.running: asyncio.Task[Any] | None = None
        self.cancel_requested = False
        self.out: list[bytes] = []
        self.out_bytes = 0
        self.task: asyncio.Task[Any] | None = None
        self.params: dict[str, str] = {}  # of the startup message
        # Notifications held while a statement runs or a transaction block is open.
        self.held_notes: list[Notification] = []
        # The session's transaction is the implicit one of an extended-protocol batch:
        # its writes commit at the Sync, as PostgreSQL commits them (see execute).
        self.implicit = False
        # send_rows' last encoders: (columns, formats, encoders). Column lists are not
        # changed once made, so the same list object with the same formats is a hit.
        self._encoders: tuple[list[Column], tuple[int, ...], list[Encoder]] | None = None

    @property
    def statements(self) -> dict[str, Prepared]:
        """The session's prepared statements: Parse and SQL PREPARE share one namespace,
        so DEALLOCATE reaches what a driver prepared through the protocol."""
        assert self.session is not None
        return self.session.prepared

    # ---- I/O --------------------------------------------------------------------------------

    def send(self, event: m.BackendEvent) -> None:
        """Queue a message; it is written at the next ``flush``."""
        data = self.conn.send(event)
        self.out.append(data)
        self.out_bytes += len(data)

    async def flush(self) -> None:
        if self.out:
            out = self.out
            self.link.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
            self.out_bytes = 0
        # Waiting for the socket only when its buffer is past the high-water
        # mark keeps the common small reply to one write call.
        if self.link.buffered() > WRITE_HIGH_WATER:
            await self.link.drain()

    def notice_now(self, text: str) -> None:
        """A NOTICE sent before the statement ends (progress of long operations). It comes
        through call_soon from a worker thread, so maybe after the connection closed."""
        if self.conn.state is not State.CLOSED:
            self.link.write(self.conn.send(m.NoticeResponse(text)))

    def deliver_notification(self, note: Notification) -> None:
        """A NOTIFY on a channel this session listens on. Written at once while the
        session is idle outside a transaction block, as PostgreSQL does; else held
        until just before its next ReadyForQuery with no transaction open."""
        session = self.session
        if self.conn.state is State.IDLE and session is not None and session.txn is None:
            self.link.write(self.conn.send(_notification(note)))
        elif self.conn.state is not State.CLOSED:
            self.held_notes.append(note)

    def ready(self) -> None:
        """ReadyForQuery, after the notifications held for this moment."""
        assert self.session is not None
        if self.held_notes and self.session.txn is None:
            for note in self.held_notes:
                self.send(_notification(note))
            self.held_notes.clear()
        self.send(m.READY_FOR_QUERY[self.session.status])

    async def next_event(self) -> m.Event | None:
        conn = self.conn
        while True:
            event = conn.next_event()
            if event is not None:
                return event
            if conn.state is State.CLOSED:
                return None
            data = await self.link.read(READ_CHUNK)
            if not data:
                return None
            conn.receive_data(data)

    # ---- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if await self.timed_startup():
                await self.serve()
        except DBError as e:
            if self.session is None:
                self.log_refused(e)
            self.send(m.ErrorResponse("FATAL", e.sqlstate, e.message, e.detail))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            self.send(
                m.ErrorResponse(
                    "FATAL",
                    AdminShutdown.sqlstate,
                    "terminating connection due to administrator command",
                )
            )
        except Exception:
            log.exception("connection %d: internal error", self.pid)
            self.send(m.ErrorResponse("FATAL", "XX000", "internal error; see the server log"))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.flush(), 1.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.linger(), LINGER_S)
            self.link.close()
            if self.session is not None:
                session = self.session
                session.manager.notify_hub.unlisten_all(
                    session.tenant.name, session.listening, self.pid
                )
                session.tenant.live.remove_session(self.pid)
                session.txn = None

    async def linger(self) -> None:
        """Half-closes the socket and reads what the client still sends until it closes
        its side. Closing a socket that has unread input sends a reset, and a reset can
        discard the client's copy of our last message: a session ended with 57P01 while
        its next query was in flight would see only "connection closed"."""
        self.link.write_eof()
        while await self.link.read(READ_CHUNK):
            pass

    async def timed_startup(self) -> bool:
        """Startup and authentication, within auth.authentication_timeout_ms; until then
        the connection holds a startup slot, not a session slot."""
        try:
            async with asyncio.timeout(self.server.cfg["auth.authentication_timeout_ms"] / 1000):
                return await self.startup()
        except TimeoutError:
            raise DBError(
                "canceling authentication due to timeout", sqlstate=QueryCanceled.sqlstate
            ) from None
        finally:
            self.server.starting.discard(self.pid)

    async def startup(self) -> bool:
        while True:
            event = await self.next_event()
            if event is None:
                return False
            if isinstance(event, m.SSLRequest | m.GSSENCRequest):
                self.link.write(self.conn.send(m.NO_ENCRYPTION))  # it goes on in plain text
                await self.link.drain()
                continue
            if isinstance(event, m.CancelRequest):
                self.server.cancel(event.pid, event.secret)
                return False
            if isinstance(event, m.Startup):
                break
            raise ProtocolViolation("expected a startup message")
        params = self.params = event.params
        user_name = params.get("user")
        if not user_name:
            raise InvalidAuthorization("no PostgreSQL user name specified in startup packet")
        database = params.get("database") or user_name
        if self.server.shutting_down:
            raise AdminShutdown("the database system is shutting down")
        if "client_encoding" in params and not _utf8(params["client_encoding"]):
            raise DBError(
                f"client_encoding {params['client_encoding']!r} is not supported; use UTF8",
                sqlstate="22023",
            )
        manager = self.server.manager
        user = manager.user(user_name)
        if user is None:
            raise InvalidAuthorization(f'role "{user_name}" does not exist')
        if self.server.cfg["auth.mode"] == "scram":
            await self.authenticate(user)
        tenant = manager.tenant_for_database(database)
        manager.check_access(user, tenant)
        if tenant.status != "online":
            why = f"failed: {tenant.failure}" if tenant.status == "failed" else tenant.status
            raise CannotConnectNow(f'tenant "{tenant.name}" is not available now ({why})')
        self.server.admit(self.pid)
        self.session = Session(manager, tenant, user, database, self.pid, params)
        self.session.notify = self.notice_now
        self.session.deliver = self.deliver_notification
        self.send(m.AUTHENTICATION_OK)
        s = self.session.settings
        for name, value in (
            ("server_version", SERVER_VERSION),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", s["datestyle"]),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
            ("TimeZone", s["timezone"]),
            ("IntervalStyle", "postgres"),
            ("application_name", s["application_name"]),
            ("is_superuser", s["is_superuser"]),
            ("session_authorization", user["name"]),
        ):
            self.send(m.ParameterStatus(name, value))
        self.send(m.BackendKeyData(self.pid, self.secret))
        self.send(m.READY_FOR_QUERY["I"])
        await self.flush()
        return True

    def log_refused(self, e: DBError) -> None:
        peer = self.link.peer()
        client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        log.warning(
            "connection %d: login refused: user %r, database %r, client %s: %s (%s)",
            self.pid,
            self.params.get("user", ""),
            self.params.get("database") or self.params.get("user", ""),
            client,
            e.message,
            e.sqlstate,
        )

    async def authenticate(self, user: dict[str, Any]) -> None:
        self.send(m.AuthenticationSASL((MECHANISM,)))
        await self.flush()
        first = await self.next_event()
        if not isinstance(first, m.Password):
            raise ProtocolViolation("expected SASLInitialResponse")
        mechanism, client_first = m.decode_sasl_initial(first.data)
        if mechanism != MECHANISM:
            raise ProtocolViolation(f"SASL mechanism {mechanism!r} is not supported")
        exchange = ScramExchange(ScramVerifier.decode(user["verifier"]))
        try:
            self.send(m.AuthenticationSASLContinue(exchange.server_first(client_first)))
            await self.flush()
            final = await self.next_event()
            if not isinstance(final, m.Password):
                raise ProtocolViolation("expected SASLResponse")
            self.send(m.AuthenticationSASLFinal(exchange.server_final(final.data)))
        except ScramError as e:
            if e.bad_password:
                raise InvalidPassword(
                    f'password authentication failed for user "{user["name"]}"'
                ) from None
            raise ProtocolViolation(str(e)) from None

    async def serve(self) -> None:
        conn = self.conn
        while True:
            idle = conn.state is State.IDLE
            event = await self.next_event()
            if event is None or isinstance(event, m.Terminate):
                return
            if idle and type(event) is m.Bind and await self.bind_execute_sync(event):
                continue
            try:
                try:
                    await self.dispatch(event)
                except RecursionError:
                    # A value or expression deeper than the checks up front allow for,
                    # met in describing, binding or encoding: this message fails, the
                    # session goes on.
                    raise too_complex() from None
            except DBError as e:
                if e.severity == "FATAL":
                    raise  # ``run`` sends it, and the connection ends
                self.report(e)
                await self.flush()  # PostgreSQL sends an error at once, even mid-batch
            if self.out and conn.state is State.IDLE:
                await self.flush()  # a ReadyForQuery ended the batch: one write for it all

    def report(self, e: DBError) -> None:
        """Answer an error and go on (the machine then skips the rest of an extended batch).
        It is an ERROR whatever its class says, since the session goes on: a tenant dropped
        under an open session is 57P03 for each statement of a Query. A protocol violation
        goes on up instead: the stream is out of step, and ``run`` ends the connection."""
        if isinstance(e, ProtocolViolation):
            raise e
        assert self.session is not None
        self.send(m.ErrorResponse("ERROR", e.sqlstate, e.message, e.detail))
        self.session.on_error()

    async def dispatch(self, event: m.Event) -> None:
        assert self.session is not None
        if isinstance(event, m.Bind):
            self.session.sync_zone()  # Bind reads timestamptz parameters in it
            self.bind(event)
        elif isinstance(event, m.Execute):
            await self.execute(event)
        elif isinstance(event, m.Sync):
            if self.implicit:
                await self.sync_implicit()
            self.ready()
        elif isinstance(event, m.Parse):
            await self.parse(event)
        elif isinstance(event, m.Describe):
            self.describe(event)
        elif isinstance(event, m.Close):
            if event.kind == "S":
                self.statements.pop(event.name, None)
            else:
                self.conn.close_portal(event.name)
            self.send(m.CLOSE_COMPLETE)
        elif isinstance(event, m.Query):
            if self.implicit:  # a Query ends the batch before it, as a Sync would
                await self.sync_implicit()
            await self.simple_query(event.sql)
            self.ready()
        elif isinstance(event, m.Flush):
            await self.flush()
        if self.out_bytes > WRITE_HIGH_WATER:
            await self.flush()

    # ---- simple query -----------------------------------------------------------------------

    async def simple_query(self, sql: str) -> None:
        assert self.session is not None
        try:
            statements = await parse_off_loop(sql)
        except DBError as e:
            self.report(e)
            return
        implicit = self.session.begin_implicit(statements)
        try:
            await self.simple_statements(statements)
            if implicit:
                await self.run_statement(ast.Commit(), [])
        except DBError as e:
            self.report(e)
        finally:
            if implicit:  # committed, or rolled back after an error
                self.session.txn = None

    async def simple_statements(self, statements: list[ast.Statement]) -> None:
        """Run and answer each statement of a Query message; the first error ends them."""
        for stmt in statements:
            if isinstance(stmt, ast.Empty):
                self.send(m.EMPTY_QUERY_RESPONSE)
                continue
            result = await self.run_statement(stmt, [])
            self.send_status(result)
            if result.columns is not None:
                self.send_description(result.columns, ())
                await self.send_rows(result.rows, result.columns, ())
            self.send(m.CommandComplete(result.tag))

    # ---- extended query ---------------------------------------------------------------------

    async def parse(self, event: m.Parse) -> None:
        assert self.session is not None
        if event.name and event.name in self.statements:
            raise DBError(f'prepared statement "{event.name}" already exists', sqlstate="42P05")
        statements = await parse_off_loop(event.sql)
        if len(statements) > 1:
            raise SyntaxError_("cannot insert multiple commands into a prepared statement")
        stmt = statements[0]
        oids = self.session.param_types(stmt, event.param_oids)
        self.statements[event.name] = Prepared(event.sql, stmt, oids)
        self.send(m.PARSE_COMPLETE)

    def bind(self, event: m.Bind) -> None:
        prepared = self.statements.get(event.statement)
        if prepared is None:
            raise DBError(
                f'prepared statement "{event.statement}" does not exist', sqlstate="26000"
            )
        assert self.session is not None
        self.session.refuse_if_aborted(prepared.stmt)
        values = bind_params(event, prepared.param_oids)
        self.conn.bind_portal(event.portal, Portal(prepared, values, event.result_formats))
        self.send(m.BIND_COMPLETE)

    async def bind_execute_sync(self, bind: m.Bind) -> bool:
        """A Bind that opened a batch, with its Execute and Sync buffered behind it: the
        usual batch of a driver running a prepared statement. It is answered in one pass,
        with the messages and state moves of answering each in turn (``dispatch``) but
        less work: no portal is kept outside a transaction block, and no implicit
        transaction opens, as the Sync ends the batch (see join_implicit). False: not
        such a batch, and nothing was read."""
        session = self.session
        assert session is not None
        prepared = self.statements.get(bind.statement)
        if prepared is None or bind.portal or type(prepared.stmt) not in ONE_PASS:
            return False
        execute = self.conn.take_execute_sync()
        if execute is None:
            return False
        try:
            try:
                session.sync_zone()  # Bind reads timestamptz parameters in it
                session.refuse_if_aborted(prepared.stmt)
                values = bind_params(bind, prepared.param_oids)
                # The Bind replaces the unnamed portal. Outside a transaction block the
                # new one ends at this Sync, so none is kept; inside, it lasts, from here
                # on, as the message-by-message Bind makes it.
                portal = None
                if session.txn is None:
                    self.conn.close_portal("")
                else:
                    portal = Portal(prepared, values, bind.result_formats)
                    self.conn.bind_portal("", portal)
                self.send(m.BIND_COMPLETE)
                stmt = prepared.stmt
                columns = (
                    prepared.columns
                    if prepared.described
                    else session.describe(stmt, prepared.param_oids)
                )
                result = await self.run_statement(stmt, values, columns)
                self.send_status(result)
                if columns is None:
                    columns = result.columns
                if portal is not None:
                    portal.result, portal.columns = result, columns
                sent = await self.send_batch(
                    result, columns, bind.result_formats, 0, execute.max_rows
                )
                if portal is not None:
                    portal.sent = sent
            except RecursionError:
                raise too_complex() from None
        except DBError as e:
            if e.severity == "FATAL":
                raise
            self.report(e)
        self.conn.sync()
        self.ready()
        await self.flush()
        return True

    def describe(self, event: m.Describe) -> None:
        assert self.session is not None
        if event.kind == "S":
            prepared = self.statements.get(event.name)
            if prepared is None:
                raise DBError(f'prepared statement "{event.name}" does not exist', sqlstate="26000")
            columns = self.session.describe(prepared.stmt, prepared.param_oids)
            self.refuse_rows_if_aborted(columns)
            self.send(m.ParameterDescription(prepared.param_oids))
            prepared.columns, prepared.described = columns, True
            self.send_description(prepared.columns, ())
            return
        cursor = self.session.cursors.get(event.name) if event.name else None
        if cursor is not None and event.name not in self.conn.portals:
            # A cursor DECLAREd in SQL is a portal too (psycopg describes it so).
            self.send_description(list(cursor.columns), ())
            return
        portal = self.conn.portal(event.name)
        columns = self.portal_columns(portal)
        self.refuse_rows_if_aborted(columns)
        portal.columns = columns
        self.send_description(portal.columns, portal.result_formats)

    def refuse_rows_if_aborted(self, columns: list[Column] | None) -> None:
        """In a failed transaction block PostgreSQL describes no statement or portal that
        returns rows (it would need the catalog), but still one that does not, so that
        a client describing everything can still send ROLLBACK."""
        assert self.session is not None
        txn = self.session.txn
        if columns is not None and txn is not None and txn.failed:
            raise InFailedTransaction(
                "current transaction is aborted, commands ignored until end of transaction block"
            )

    def portal_columns(self, portal: Portal) -> list[Column] | None:
        assert self.session is not None
        if portal.columns is not None:
            return portal.columns
        if portal.prepared.described:
            return portal.prepared.columns
        return self.session.describe(portal.prepared.stmt, portal.prepared.param_oids)

    async def execute(self, event: m.Execute) -> None:
        assert self.session is not None
        portal = self.conn.portal(event.portal)
        result = portal.result
        if result is None:
            stmt = portal.prepared.stmt
            if isinstance(stmt, ast.Empty):
                self.send(m.EMPTY_QUERY_RESPONSE)
                return
            after = await self.join_implicit(stmt)
            columns = self.portal_columns(portal)
            try:
                result = await self.run_statement(stmt, portal.params, columns)
            finally:
                if after is not None:
                    after()
            if isinstance(stmt, ast.Commit | ast.Rollback):
                if after is not None:
                    # As PostgreSQL ends an implicit block that a COMMIT or ROLLBACK meets.
                    result.notices.append("there is no transaction in progress")
                self.conn.end_portals()  # the transaction's portals end with it
            portal.result = result
            portal.columns = columns if columns is not None else result.columns
            self.send_status(result)
        else:  # it ran: it goes on, unless the block failed since
            self.session.refuse_if_aborted(portal.prepared.stmt)
            if portal.columns is None:  # it has no rows to go on with
                raise DBError(f'portal "{event.portal}" cannot be run', sqlstate="55000")
        portal.sent = await self.send_batch(
            result, portal.columns, portal.result_formats, portal.sent, event.max_rows
        )

    async def send_batch(
        self,
        result: Result,
        columns: list[Column] | None,
        formats: tuple[int, ...],
        start: int,
        max_rows: int,
    ) -> int:
        """What one Execute sends of a portal's result: its rows from ``start``, at most
        ``max_rows`` (0: all), then PortalSuspended or CommandComplete. Returns how many
        rows of the result have been sent."""
        rows = result.rows
        end = len(rows) if max_rows <= 0 else min(len(rows), start + max_rows)
        if columns is not None:
            await self.send_rows(rows[start:end], columns, formats)
        if 0 < max_rows == end - start:
            # As PostgreSQL does, a full batch of rows suspends the portal even when it
            # was the last: only the next Execute finds no more.
            self.send(m.PORTAL_SUSPENDED)
        else:
            tag = result.tag if columns is None else _rows_tag(result.tag, end - start)
            self.send(m.CommandComplete(tag))
        return end

    async def join_implicit(self, stmt: ast.Statement) -> Callable[[], None] | None:
        """PostgreSQL runs the statements of an extended-protocol batch, up to its Sync,
        in one implicit transaction: asyncpg's executemany is all or nothing. So a data
        statement outside a transaction block that is not the batch's last opens one,
        committed at the Sync (``sync_implicit``) or discarded if a statement fails. The
        common single Bind/Execute/Sync runs directly, with no transaction to build.

        Inside that transaction: DDL commits it first and runs alone; BEGIN makes it the
        block BEGIN opens; COMMIT and ROLLBACK end it, with PostgreSQL's warning; other
        statements that do not run in transactions run beside it (a SAVEPOINT there
        fails as outside a block, which discards the batch). What is returned, if
        anything, is to be called once the statement has run."""
        session = self.session
        assert session is not None
        spec = spec_of(stmt)
        if session.txn is None:
            if spec.implicit and not self.conn.sync_is_next():
                session.txn = Txn()
                self.implicit = True
            return None
        if not self.implicit or spec.implicit:
            return None
        if spec.writes and not isinstance(stmt, ast.Commit):
            await self.end_implicit()  # DDL
            return None
        held = session.txn
        if isinstance(stmt, ast.Begin | ast.Commit | ast.Rollback):
            self.implicit = False
            if not isinstance(stmt, ast.Begin):
                return lambda: None  # it ends the transaction it finds
            session.txn = None  # BEGIN opens a block; the batch's writes become its own

            def adopt() -> None:
                session.txn = held

            return adopt
        session.txn = None  # beside it: the batch's transaction is back afterwards

        def restore() -> None:
            session.txn = held

        return restore

    async def sync_implicit(self) -> None:
        """End the batch's implicit transaction where PostgreSQL does (its Sync, or a
        Query after it); an error in the commit is answered, and the ReadyForQuery
        still follows."""
        try:
            await self.end_implicit()
        except DBError as e:
            self.report(e)

    async def end_implicit(self) -> None:
        """Commit the batch's implicit transaction; an error in the batch discards it."""
        session = self.session
        assert session is not None
        self.implicit = False
        txn = session.txn
        if txn is None or txn.failed:
            session.txn = None
            return
        try:
            await self.run_statement(ast.Commit(), [])
        finally:
            session.txn = None

    # ---- running and sending -----------------------------------------------------------------

    async def run_statement(
        self, stmt: ast.Statement, params: list[Any], columns: list[Column] | None = None
    ) -> Result:
        return await self.guarded(self.run_and_stream(stmt, params, columns), stmt)

    async def run_and_stream(
        self, stmt: ast.Statement, params: list[Any], columns: list[Column] | None
    ) -> Result:
        """Run a statement; one that streams (its result carries a copy) then moves its
        data as COPY messages, under the same statement timeout and cancel."""
        assert self.session is not None
        result = await self.session.execute(stmt, params, columns)
        copy = result.copy
        if copy is None:
            return result
        fmt = int(copy.binary)
        if isinstance(copy, CopyOut):
            self.send(m.CopyOutResponse(fmt, (fmt,) * copy.columns))
            final = await copy.run(self.send_copy_data)
            self.send(m.COPY_DONE)
            return final
        self.send(m.CopyInResponse(fmt, (fmt,) * copy.columns))
        await self.flush()
        # Closed at once if the sink gives up early: it reads no further.
        async with contextlib.aclosing(CopyChunks(self)) as chunks:
            return await copy.run(chunks)

    async def send_copy_data(self, piece: bytes) -> None:
        self.send(m.CopyData(piece))
        if self.out_bytes > WRITE_HIGH_WATER:
            await self.flush()
            await self.link.drain()

    async def guarded(self, work: Coroutine[Any, Any, Result], stmt: ast.Statement) -> Result:
        """Run a statement's work in this connection's own task (no task per statement: it
        is the hot path), under statement_timeout; a CancelRequest cancels this task while
        ``running`` is set."""
        session = self.session
        assert session is not None
        self.cancel_requested = False
        self.running = asyncio.current_task()
        timeout_ms = session.timeout_ms
        try:
            if not timeout_ms:
                result = await work
            else:
                async with asyncio.timeout(timeout_ms / 1000):
                    result = await work
            task = asyncio.current_task()
            if self.cancel_requested and task is not None:
                # The statement finished anyway (a restore past its switch drops a late
                # cancel): the request is spent, so a later cancel is counted afresh.
                task.uncancel()
            return result
        except TimeoutError:
            raise QueryCanceled("canceling statement due to statement timeout") from None
        except ConnectionError:
            raise  # the client is gone (mid-COPY): nothing to report to it
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self.cancel_requested and task is not None and task.uncancel() == 0:
                raise QueryCanceled("canceling statement due to user request") from None
            raise
        except DBError:
            raise
        except RecursionError:
            raise too_complex() from None
        except Exception as e:
            log.exception("connection %d: internal error running %s", self.pid, type(stmt).__name__)
            raise DBError(f"internal error: {type(e).__name__}") from None
        finally:
            self.running = None
            self.cancel_requested = False

    def cancel_running(self) -> None:
        if self.running is not None and not self.cancel_requested:
            self.cancel_requested = True
            self.running.cancel()

    def send_status(self, result: Result) -> None:
        """What a statement tells besides its rows: notices and changed settings."""
        for notice in result.notices:
            self.send(m.NoticeResponse(notice))
        for name, value in result.parameter_status.items():
            self.send(m.ParameterStatus(name, value))

    def send_description(self, columns: list[Column] | None, formats: tuple[int, ...]) -> None:
        if columns is None:
            self.send(m.NO_DATA)
            return
        self.send(row_description(columns, formats))

    async def send_rows(
        self, rows: list[tuple[Any, ...]], columns: list[Column], formats: tuple[int, ...]
    ) -> None:
        if self.session is not None:
            self.session.sync_zone()  # a SET TIME ZONE just before, in this message
        last = self._encoders
        if last is not None and last[0] is columns and last[1] == formats:
            encoders = last[2]  # a prepared statement's columns, run again
        else:
            encoders = row_encoders(columns, formats)
            self._encoders = (columns, formats, encoders)
        conn, out = self.conn, self.out
        for i, row in enumerate(rows):
            data = conn.send_data_row(row_values(encoders, row, columns))
            out.append(data)
            self.out_bytes += len(data)
            if i % DRAIN_EVERY_ROWS == DRAIN_EVERY_ROWS - 1:
                await self.flush()


class PgServer:
    def __init__(self, cfg: Config, manager: TenantManager):
        self.cfg = cfg
        self.manager = manager
        self.clients: dict[int, ClientHandler] = {}
        self.starting: set[int] = set()  # pids of connections not yet authenticated
        self.sessions: set[int] = set()  # pids of authenticated connections
        self.tasks: set[asyncio.Task[None]] = set()
        self.shutting_down = False
        self._pid = 1000
        # Typed loosely: under uvloop it is a uvloop.loop.Server, which is no asyncio
        # Server (and the compiled module checks the types it is given).
        self._server: Any = None

    def next_pid(self) -> int:
        self._pid += 1
        return self._pid

    async def start(self) -> tuple[str, int]:
        self._server = await asyncio.get_running_loop().create_server(
            lambda: Link(self), self.cfg.host, self.cfg.port, reuse_address=True
        )
        sock = self._server.sockets[0].getsockname()
        return sock[0], sock[1]

    def admit(self, pid: int) -> None:
        """Count an authenticated connection as a session, if max_connections allows."""
        if len(self.sessions) >= self.cfg["server.max_connections"]:
            raise TooManyConnections("sorry, too many clients already")
        self.sessions.add(pid)

    def accept(self, link: Link) -> None:
        """A client connected (Link.connection_made): its handler runs in a task of its own."""
        if len(self.starting) >= self.cfg["server.max_startup_connections"]:
            # Refused before the protocol starts, so no machine is made for it.
            link.write(
                m.ErrorResponse(
                    "FATAL", TooManyConnections.sqlstate, "sorry, too many clients already"
                ).encode()
            )
            link.close()
            return
        handler = ClientHandler(self, link)
        self.clients[handler.pid] = handler
        self.starting.add(handler.pid)
        task = asyncio.get_running_loop().create_task(self._serve(handler))
        handler.task = task
        self.tasks.add(task)

    async def _serve(self, handler: ClientHandler) -> None:
        try:
            await handler.run()
        finally:
            self.clients.pop(handler.pid, None)
            self.starting.discard(handler.pid)
            self.sessions.discard(handler.pid)
            if handler.task is not None:
                self.tasks.discard(handler.task)

    def end_tenant_sessions(self, tenant: str, keep_pid: int) -> None:
        """A restore replaces the tenant: its other sessions end (57P01)."""
        for pid, client in list(self.clients.items()):
            session = client.session
            same = session is not None and session.tenant.name == tenant
            if pid != keep_pid and same and client.task is not None:
                client.task.cancel()

    def cancel(self, pid: int, secret: int) -> None:
        target = self.clients.get(pid)
        if target is not None and secrets.compare_digest(
            target.secret.to_bytes(4, "big"), secret.to_bytes(4, "big", signed=True)
        ):
            target.cancel_running()

    async def shutdown(self, grace_s: float) -> None:
        """Stop accepting; let running statements finish for ``grace_s``, then end sessions."""
        self.shutting_down = True
        if self._server is not None:
            self._server.close()
        deadline = asyncio.get_running_loop().time() + grace_s
        while any(c.running is not None for c in self.clients.values()):
            if asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.05)
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=2.0)
