"""The asyncio shell around the protocol state machine: sockets in, sessions out.

One ``ClientHandler`` per connection moves bytes between its socket and a
``PgConnection``, authenticates, and runs statements through a ``Session``.
Portals live here; prepared statements live in the session, whose namespace
SQL PREPARE shares. The SQL layer knows nothing of the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import struct
from collections.abc import AsyncGenerator, Coroutine
from dataclasses import dataclass
from typing import Any

from nodedb_server import SERVER_VERSION
from nodedb_server import types as t
from nodedb_server.config import Config
from nodedb_server.errors import (
    AdminShutdown,
    CannotConnectNow,
    DBError,
    InvalidAuthorization,
    InvalidPassword,
    ProtocolViolation,
    QueryCanceled,
    StatementTooComplex,
    SyntaxError_,
    TooManyConnections,
)
from nodedb_server.pgwire import messages as m
from nodedb_server.pgwire.auth import MECHANISM, ScramError, ScramExchange
from nodedb_server.pgwire.connection import PgConnection, Phase
from nodedb_server.sql import ast
from nodedb_server.sql.parse import parse_off_loop
from nodedb_server.sql.registry import Prepared
from nodedb_server.sql.result import Column, CopyIn, CopyOut, Result
from nodedb_server.sql.session import Session
from nodedb_server.tenants.manager import TenantManager
from nodedb_server.tenants.users import ScramVerifier

log = logging.getLogger("nodedb.pgwire")

READ_CHUNK = 256 * 1024
# Rows sent between drains on a large result, bounding the write buffer.
DRAIN_EVERY_ROWS = 1000
WRITE_HIGH_WATER = 256 * 1024


@dataclass
class Portal:
    prepared: Prepared
    params: list[Any]
    result_formats: tuple[int, ...]
    columns: list[Column] | None = None
    rows: list[tuple[Any, ...]] | None = None
    result: Result | None = None
    sent: int = 0
    done: bool = False


def _utf8(value: str) -> bool:
    return value.strip().strip("'\"").upper().replace("-", "").replace("_", "") in (
        "UTF8",
        "UNICODE",
    )


def _formats(formats: tuple[int, ...], n: int) -> list[int]:
    if not formats:
        return [0] * n
    if len(formats) == 1:
        return [formats[0]] * n
    if len(formats) != n:
        raise DBError(
            f"got {len(formats)} format codes for {n} values", sqlstate=ProtocolViolation.sqlstate
        )
    return list(formats)


def _too_complex() -> StatementTooComplex:
    return StatementTooComplex(
        "statement too complex",
        detail="Its expressions or values nest (or chain) too deeply to evaluate.",
    )


def encode_row(encoders: list[Any], row: tuple[Any, ...], columns: list[Column]) -> bytes:
    values: list[bytes | None] = []
    for enc, v, col in zip(encoders, row, columns, strict=True):
        if v is None:
            values.append(None)
            continue
        try:
            values.append(enc(v))
        except RecursionError:
            raise _too_complex() from None
        except (ValueError, TypeError, OverflowError, AttributeError, struct.error):
            raise DBError(
                f'a value of field "{col[0]}" does not fit its column type '
                f"{t.TYPE_NAMES.get(col[1], col[1])}; prepare the statement again",
                sqlstate="22000",
            ) from None
    return m.data_row(values)


class ClientHandler:
    def __init__(
        self, server: PgServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ):
        self.server = server
        self.reader = reader
        self.writer = writer
        self.conn = PgConnection(server.cfg["limits.max_message_bytes"])
        self.pid = server.next_pid()
        self.secret = secrets.randbits(31)
        self.session: Session | None = None
        self.portals: dict[str, Portal] = {}
        self.running: asyncio.Task[Any] | None = None
        self.cancel_requested = False
        self.out: list[bytes] = []
        self.out_bytes = 0
        self.task: asyncio.Task[Any] | None = None
        self.in_extended = False
        self.params: dict[str, str] = {}  # of the startup message

    @property
    def statements(self) -> dict[str, Prepared]:
        """The session's prepared statements: Parse and SQL PREPARE share one namespace,
        so DEALLOCATE reaches what a driver prepared through the protocol."""
        assert self.session is not None
        return self.session.prepared

    # ---- I/O --------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.out.append(data)
        self.out_bytes += len(data)

    async def flush(self) -> None:
        if self.out:
            self.writer.write(b"".join(self.out))
            self.out.clear()
            self.out_bytes = 0
        # Waiting for the socket only when its buffer is past the high-water
        # mark keeps the common small reply to one write call.
        if self.writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            await self.writer.drain()

    def notice_now(self, text: str) -> None:
        """A NOTICE sent before the statement ends (progress of long operations)."""
        self.writer.write(m.notice_response(text))

    async def next_event(self) -> m.Event | None:
        while True:
            event = self.conn.next_event()
            if event is not None:
                return event
            if self.conn.phase is Phase.CLOSED:
                return None
            data = await self.reader.read(READ_CHUNK)
            if not data:
                return None
            self.conn.receive_data(data)

    # ---- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if await self.timed_startup():
                await self.serve()
        except DBError as e:
            if e.severity != "FATAL":
                e.severity = "FATAL"
            if self.session is None:
                self.log_refused(e)
            self.send(m.error_response(e.severity, e.sqlstate, e.message, e.detail))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            self.send(
                m.error_response(
                    "FATAL",
                    AdminShutdown.sqlstate,
                    "terminating connection due to administrator command",
                )
            )
        except Exception:
            log.exception("connection %d: internal error", self.pid)
            self.send(m.error_response("FATAL", "XX000", "internal error; see the server log"))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.flush(), 1.0)
            self.writer.close()
            if self.session is not None and self.session.txn is not None:
                self.session.txn = None

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
                self.writer.write(b"N")  # no TLS yet: the client may go on in plain text
                await self.writer.drain()
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
            raise CannotConnectNow(f'tenant "{tenant.name}" is not available now ({tenant.status})')
        self.server.admit(self.pid)
        self.conn.auth_ok()
        self.session = Session(manager, tenant, user, database, self.pid, params)
        self.session.notify = self.notice_now
        self.send(m.authentication_ok())
        s = self.session.settings
        for name, value in (
            ("server_version", SERVER_VERSION),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", s["datestyle"]),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
            ("TimeZone", "UTC"),
            ("IntervalStyle", "postgres"),
            ("application_name", s["application_name"]),
            ("is_superuser", s["is_superuser"]),
            ("session_authorization", user["name"]),
        ):
            self.send(m.parameter_status(name, value))
        self.send(m.backend_key_data(self.pid, self.secret))
        self.send(m.ready_for_query("I"))
        await self.flush()
        return True

    def log_refused(self, e: DBError) -> None:
        peer = self.writer.get_extra_info("peername")
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
        self.send(m.authentication_sasl([MECHANISM]))
        await self.flush()
        first = await self.next_event()
        if not isinstance(first, m.Password):
            raise ProtocolViolation("expected SASLInitialResponse")
        r = m.Reader(first.data)
        mechanism = r.cstring()
        if mechanism != MECHANISM:
            raise ProtocolViolation(f"SASL mechanism {mechanism!r} is not supported")
        n = r.int32()
        exchange = ScramExchange(ScramVerifier.decode(user["verifier"]))
        try:
            self.send(m.authentication_sasl_continue(exchange.server_first(r.bytes_(n))))
            await self.flush()
            final = await self.next_event()
            if not isinstance(final, m.Password):
                raise ProtocolViolation("expected SASLResponse")
            self.send(m.authentication_sasl_final(exchange.server_final(final.data)))
        except ScramError as e:
            if e.bad_password:
                raise InvalidPassword(
                    f'password authentication failed for user "{user["name"]}"'
                ) from None
            raise ProtocolViolation(str(e)) from None

    async def serve(self) -> None:
        while True:
            event = await self.next_event()
            if event is None or isinstance(event, m.Terminate):
                return
            try:
                try:
                    await self.dispatch(event)
                except RecursionError:
                    # A value or expression deeper than the checks up front allow for,
                    # met in describing, binding or encoding: this message fails, the
                    # session goes on.
                    raise _too_complex() from None
            except DBError as e:
                if e.severity == "FATAL":
                    raise
                self.report(e)
                await self.flush()  # PostgreSQL sends an error at once, even mid-batch
            if self.out and not self.in_extended:
                await self.flush()

    def report(self, e: DBError) -> None:
        self.send(m.error_response(e.severity, e.sqlstate, e.message, e.detail))
        assert self.session is not None
        self.session.on_error()
        if self.in_extended:
            self.conn.discard_until_sync()

    async def dispatch(self, event: m.Event) -> None:
        assert self.session is not None
        if isinstance(event, m.Query):
            self.in_extended = False
            await self.simple_query(event.sql)
            self.send(m.ready_for_query(self.session.status))
            return
        if isinstance(event, m.Sync):
            self.in_extended = False
            self.portals.pop("", None)
            self.send(m.ready_for_query(self.session.status))
            await self.flush()
            return
        if isinstance(event, m.Flush):
            await self.flush()
            return
        if isinstance(event, m.CopyData | m.CopyDone | m.CopyFail):
            return  # stray COPY messages outside COPY are ignored, as PostgreSQL does
        self.in_extended = True
        if isinstance(event, m.Parse):
            await self.parse(event)
        elif isinstance(event, m.Bind):
            self.bind(event)
        elif isinstance(event, m.Describe):
            self.describe(event)
        elif isinstance(event, m.Execute):
            await self.execute(event)
        elif isinstance(event, m.Close):
            (self.statements if event.kind == "S" else self.portals).pop(event.name, None)
            self.send(m.close_complete())
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
        assert self.session is not None
        for stmt in statements:
            if isinstance(stmt, ast.Empty):
                self.send(m.empty_query_response())
                continue
            result = await self.run_statement(stmt, [])
            await self.send_result(result, result.columns, [], send_description=True)

    async def copy_chunks(self) -> AsyncGenerator[bytes, None]:
        """CopyData payloads until CopyDone; CopyFail is 57014. Ends the COPY phase either way."""
        self.conn.start_copy_in()
        try:
            while True:
                event = await self.next_event()
                if event is None:
                    raise ConnectionError("client went away during COPY")
                if isinstance(event, m.CopyData):
                    yield event.data
                elif isinstance(event, m.CopyDone):
                    return
                elif isinstance(event, m.CopyFail):
                    raise QueryCanceled(f"COPY from stdin failed: {event.message}")
        finally:
            self.conn.end_copy_in()

    async def send_copy_data(self, piece: bytes) -> None:
        self.send(m.copy_data(piece))
        if self.out_bytes > WRITE_HIGH_WATER:
            await self.flush()
            await self.writer.drain()

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
        self.send(m.parse_complete())

    def bind(self, event: m.Bind) -> None:
        prepared = self.statements.get(event.statement)
        if prepared is None:
            raise DBError(
                f'prepared statement "{event.statement}" does not exist', sqlstate="26000"
            )
        if len(event.params) != len(prepared.param_oids):
            # An ERROR, not FATAL, as in PostgreSQL: the message was well framed, and the
            # session goes on after the Sync.
            raise DBError(
                f"bind message supplies {len(event.params)} parameters, but prepared statement "
                f'"{event.statement}" requires {len(prepared.param_oids)}',
                sqlstate=ProtocolViolation.sqlstate,
            )
        fmts = _formats(event.param_formats, len(event.params))
        values: list[Any] = []
        for raw, fmt, oid in zip(event.params, fmts, prepared.param_oids, strict=True):
            if raw is None:
                values.append(None)
            elif fmt == 1:
                values.append(t.decode_binary(oid, raw))
            else:
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise DBError(
                        "invalid byte sequence for encoding UTF8", sqlstate="22021"
                    ) from None
                values.append(t.decode_text(oid, text))
        if event.portal and event.portal in self.portals:
            raise DBError(f'portal "{event.portal}" already exists', sqlstate="42P03")
        self.portals[event.portal] = Portal(prepared, values, event.result_formats)
        self.send(m.bind_complete())

    def describe(self, event: m.Describe) -> None:
        assert self.session is not None
        if event.kind == "S":
            prepared = self.statements.get(event.name)
            if prepared is None:
                raise DBError(f'prepared statement "{event.name}" does not exist', sqlstate="26000")
            self.send(m.parameter_description(prepared.param_oids))
            prepared.columns = self.session.describe(prepared.stmt, prepared.param_oids)
            prepared.described = True
            self.send_description(prepared.columns, [])
            return
        portal = self.portals.get(event.name)
        if portal is None:
            raise DBError(f'portal "{event.name}" does not exist', sqlstate="34000")
        portal.columns = self.portal_columns(portal)
        self.send_description(portal.columns, list(portal.result_formats))

    def portal_columns(self, portal: Portal) -> list[Column] | None:
        assert self.session is not None
        if portal.columns is not None:
            return portal.columns
        if portal.prepared.described:
            return portal.prepared.columns
        return self.session.describe(portal.prepared.stmt, portal.prepared.param_oids)

    def send_description(self, columns: list[Column] | None, formats: list[int]) -> None:
        if columns is None:
            self.send(m.no_data())
            return
        fmts = _formats(tuple(formats), len(columns))
        self.send(
            m.row_description(
                [
                    m.Field(name, oid, t.TYPE_SIZES.get(oid, -1), -1, fmt)
                    for (name, oid), fmt in zip(columns, fmts, strict=True)
                ]
            )
        )

    async def execute(self, event: m.Execute) -> None:
        portal = self.portals.get(event.portal)
        if portal is None:
            raise DBError(f'portal "{event.portal}" does not exist', sqlstate="34000")
        if portal.done:
            self.send(m.command_complete(portal.result.tag if portal.result else "SELECT 0"))
            return
        if portal.result is None:
            if isinstance(portal.prepared.stmt, ast.Empty):
                self.send(m.empty_query_response())
                return
            columns = self.portal_columns(portal)
            portal.result = await self.run_statement(portal.prepared.stmt, portal.params, columns)
            portal.columns = columns if columns is not None else portal.result.columns
        result = portal.result
        rows = result.rows
        limit = event.max_rows if event.max_rows > 0 else len(rows)
        chunk = rows[portal.sent : portal.sent + limit]
        portal.sent += len(chunk)
        partial = Result(result.columns, chunk, result.tag, result.notices, result.parameter_status)
        result.notices, result.parameter_status = [], {}
        if portal.sent < len(rows):
            await self.send_result(
                partial,
                portal.columns,
                list(portal.result_formats),
                send_description=False,
                complete=False,
            )
            self.send(m.portal_suspended())
            return
        portal.done = True
        await self.send_result(
            partial, portal.columns, list(portal.result_formats), send_description=False
        )

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
        if isinstance(copy, CopyOut):
            self.send(m.copy_out_response(int(copy.binary), [int(copy.binary)] * copy.columns))
            final = await copy.run(self.send_copy_data)
            self.send(m.copy_done())
            return final
        if isinstance(copy, CopyIn):
            self.send(m.copy_in_response(int(copy.binary), [int(copy.binary)] * copy.columns))
            await self.flush()
            chunks = self.copy_chunks()
            try:
                return await copy.run(chunks)
            finally:
                await chunks.aclose()  # leaves the COPY phase if the sink gave up early
        return result

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
            raise _too_complex() from None
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

    async def send_result(
        self,
        result: Result,
        columns: list[Column] | None,
        formats: list[int],
        send_description: bool,
        complete: bool = True,
    ) -> None:
        for notice in result.notices:
            self.send(m.notice_response(notice))
        for name, value in result.parameter_status.items():
            self.send(m.parameter_status(name, value))
        if columns is not None:
            if send_description:
                self.send_description(columns, formats)
            fmts = _formats(tuple(formats), len(columns))
            encoders = [t.encoder(oid, fmt) for (_, oid), fmt in zip(columns, fmts, strict=True)]
            for i, row in enumerate(result.rows):
                self.send(encode_row(encoders, row, columns))
                if i % DRAIN_EVERY_ROWS == DRAIN_EVERY_ROWS - 1:
                    await self.flush()
        if complete:
            self.send(m.command_complete(result.tag))


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
        self._server: asyncio.base_events.Server | None = None

    def next_pid(self) -> int:
        self._pid += 1
        return self._pid

    async def start(self) -> tuple[str, int]:
        self._server = await asyncio.start_server(
            self._on_client, self.cfg.host, self.cfg.port, reuse_address=True, limit=READ_CHUNK
        )
        sock = self._server.sockets[0].getsockname()
        return sock[0], sock[1]

    def admit(self, pid: int) -> None:
        """Count an authenticated connection as a session, if max_connections allows."""
        if len(self.sessions) >= self.cfg["server.max_connections"]:
            raise TooManyConnections("sorry, too many clients already")
        self.sessions.add(pid)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.starting) >= self.cfg["server.max_startup_connections"]:
            writer.write(
                m.error_response(
                    "FATAL", TooManyConnections.sqlstate, "sorry, too many clients already"
                )
            )
            writer.close()
            return
        handler = ClientHandler(self, reader, writer)
        self.clients[handler.pid] = handler
        self.starting.add(handler.pid)
        task = asyncio.current_task()
        assert task is not None
        handler.task = task
        self.tasks.add(task)  # type: ignore[arg-type]
        try:
            await handler.run()
        finally:
            self.clients.pop(handler.pid, None)
            self.starting.discard(handler.pid)
            self.sessions.discard(handler.pid)
            self.tasks.discard(task)  # type: ignore[arg-type]

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
