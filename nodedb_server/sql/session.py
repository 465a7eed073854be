"""One client session: its settings, its transaction, and running a statement.

The statements themselves live in their families under ``sql/exec/``, found
through the registry (``sql/registry.py``); this module is the facade the wire
layer talks to.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable
from typing import Any

import nodedb_server.sql.exec  # noqa: F401  (registers every statement family)
from nodedb_server import SERVER_VERSION
from nodedb_server import types as t
from nodedb_server.engines.base import RowCollection
from nodedb_server.errors import (
    DiskFull,
    FeatureNotSupported,
    InFailedTransaction,
    InsufficientPrivilege,
    InvalidSqlStatementName,
    StorageFailure,
    UndefinedTable,
)
from nodedb_server.events.notify import Deliver
from nodedb_server.sql import ast
from nodedb_server.sql.describe import describe, param_types
from nodedb_server.sql.exec.cursors import SqlCursor
from nodedb_server.sql.exec.txn import Txn
from nodedb_server.sql.expr import Ctx
from nodedb_server.sql.registry import Prepared, spec_of
from nodedb_server.sql.result import Column, Result
from nodedb_server.tenants.catalog import Engine
from nodedb_server.tenants.manager import TenantManager
from nodedb_server.tenants.tenant import Tenant

# Settings a client may give at start-up (as parameters, or -c name=value in options).
_STARTUP_SETTABLE = frozenset({"statement_timeout", "search_path", "datestyle", "intervalstyle"})


def _startup_options(options: str) -> dict[str, str]:
    """``-c name=value`` / ``--name=value`` pairs of the options start-up parameter (a
    backslash quotes the next character, as libpq's PGOPTIONS does)."""
    words, word, quoted = [], [], False
    for ch in options:
        if quoted:
            word.append(ch)
            quoted = False
        elif ch == "\\":
            quoted = True
        elif ch.isspace():
            if word:
                words.append("".join(word))
            word = []
        else:
            word.append(ch)
    if word:
        words.append("".join(word))
    out: dict[str, str] = {}
    i = 0
    while i < len(words):
        w = words[i]
        pair = ""
        if w == "-c" and i + 1 < len(words):
            pair, i = words[i + 1], i + 1
        elif w.startswith(("--", "-c")):
            pair = w[2:]
        name, eq, value = pair.partition("=")
        if eq:
            out[name.strip().lower().replace("-", "_")] = value
        i += 1
    return out


class Session:
    def __init__(
        self,
        manager: TenantManager,
        tenant: Tenant,
        user: dict[str, Any],
        database: str,
        pid: int,
        startup_params: dict[str, str],
    ):
        self.manager = manager
        self.tenant = tenant
        self.user = user
        self.database = database
        self.pid = pid
        self.txn: Txn | None = None
        self.examined = 0  # rows the last read looked at (EXPLAIN ANALYZE)
        # The channels this session LISTENs on, and how it takes a notification
        # (set by its connection; None: it cannot listen).
        self.listening: set[str] = set()
        self.deliver: Deliver | None = None
        self.live_queries: set[str] = set()  # LIVE SELECT subscriptions it started
        # (stream, group) -> the LSN this session's last read of it reached
        self.stream_reads: dict[tuple[str, str], int] = {}
        self.sequence_values: dict[str, int] = {}  # currval: each sequence's last nextval
        self.cursors: dict[str, SqlCursor] = {}  # DECLAREd, until CLOSE or their block ends
        # Sends a NOTICE to this session's client at once (set by the wire layer).
        self.notify: Callable[[str], None] | None = None
        self.partitions = (0, 0)  # timeseries partitions the last read used and skipped
        self.settings: dict[str, str] = {
            "server_version": SERVER_VERSION,
            "server_encoding": "UTF8",
            "client_encoding": "UTF8",
            "datestyle": "ISO, MDY",
            "timezone": "UTC",
            "integer_datetimes": "on",
            "standard_conforming_strings": "on",
            "transaction_isolation": "read committed",
            "default_transaction_isolation": "read committed",
            "application_name": "",
            "search_path": '"$user", public',
            "is_superuser": "on" if user["superuser"] else "off",
            "session_authorization": user["name"],
            "role": "none",
            "max_identifier_length": "63",
            "statement_timeout": str(manager.cfg["limits.statement_timeout_ms"]),
            "intervalstyle": "postgres",
            "extra_float_digits": "1",
        }
        self.settings["application_name"] = startup_params.get("application_name", "")
        given = {k.lower(): v for k, v in startup_params.items()}
        given.update(_startup_options(startup_params.get("options", "")))
        zone = given.get("timezone")
        if zone:  # JDBC sends the JVM's zone at start-up; one that names no zone is ignored
            with contextlib.suppress(ValueError):
                self.settings["timezone"] = t.zone_setting(zone)
        for name in _STARTUP_SETTABLE & set(given):
            self.settings[name] = given[name]
        self._initial_settings = dict(self.settings)  # what RESET and DISCARD ALL go back to
        # PREPARE and the protocol's Parse share this namespace, as in PostgreSQL;
        # "" is the unnamed statement, which only Parse makes.
        self.prepared: dict[str, Prepared] = {}
        self._zone_name = ""  # sync_zone's last lookup
        self._zone: dt.tzinfo = dt.UTC
        self._timeout: tuple[str, int] = ("", 0)  # timeout_ms's last parse

    def sync_zone(self) -> None:
        """Make the session's TimeZone the one timestamps are read and printed in, for
        the task running now (types.SESSION_ZONE); the setting was checked when set."""
        name = self.settings.get("timezone", "UTC")
        if name != self._zone_name:  # it runs a few times a statement: look up on change
            try:
                self._zone = t.zone_named(name)
            except ValueError:
                self._zone = dt.UTC
            self._zone_name = name
        if t.SESSION_ZONE.get() is not self._zone:
            t.SESSION_ZONE.set(self._zone)

    @property
    def status(self) -> str:
        if self.txn is None:
            return "I"
        return "E" if self.txn.failed else "T"

    @property
    def timeout_ms(self) -> int:
        text = self.settings["statement_timeout"]
        if text != self._timeout[0]:
            try:
                self._timeout = (text, t.timeout_setting_ms(text) if text.strip() else 0)
            except ValueError:
                self._timeout = (text, 0)
        return self._timeout[1]

    def begin_implicit(self, statements: list[ast.Statement]) -> bool:
        """Open the transaction PostgreSQL wraps around the statements of one Query
        message, so that a failing statement undoes the writes before it; only for data
        statements outside BEGIN (catalog changes here commit as they run)."""
        if self.txn is not None or len(statements) < 2:
            return False
        if not all(spec_of(stmt).implicit for stmt in statements):
            return False
        self.txn = Txn()
        return True

    def on_error(self) -> None:
        """An error inside a transaction block aborts it until ROLLBACK."""
        if self.txn is not None:
            self.txn.failed = True

    def ctx(self, params: list[Any]) -> Ctx:
        return Ctx(params=params, session=self)

    def require_superuser(self, what: str) -> None:
        if not self.user["superuser"]:
            raise InsufficientPrivilege(f"must be superuser to {what}")

    def any_collection(self, name: str) -> Engine:
        found = self.tenant.state.collection(name)
        if found is None:
            raise UndefinedTable(f'collection "{name}" does not exist')
        return found[1]

    def collection(self, name: str) -> RowCollection:
        """A document or key-value collection (what most statements work on)."""
        engine = self.any_collection(name)
        if not isinstance(engine, RowCollection):
            raise FeatureNotSupported(
                f'"{name}" is a timeseries collection: this statement '
                "works on document and key-value collections"
            )
        return engine

    async def execute(
        self, stmt: ast.Statement, params: list[Any], columns: list[Column] | None = None
    ) -> Result:
        """Run a statement. ``columns``: what the client was told the rows look like
        (Describe), so that ``SELECT *`` sends exactly those fields."""
        self.refuse_if_aborted(stmt)
        try:
            if self.tenant.store.wal is None or self.tenant.store.broken is not None:
                await self.tenant.ensure_healthy()
        except (DiskFull, StorageFailure):
            if spec_of(stmt).writes:
                raise  # reads go on from the recovered state while the WAL cannot be written
        spec = spec_of(stmt)
        self.sync_zone()
        if spec.described:
            return await spec.run(self, stmt, params, columns)
        return await spec.run(self, stmt, params)

    def refuse_if_aborted(self, stmt: ast.Statement) -> None:
        """In a failed transaction block only its end runs (PostgreSQL refuses even the
        Bind of anything else)."""
        if (
            self.txn is not None
            and self.txn.failed
            and not isinstance(stmt, ast.Commit | ast.Rollback | ast.RollbackTo)
        ):
            raise InFailedTransaction(
                "current transaction is aborted, commands ignored until end of transaction block"
            )

    def param_types(self, stmt: ast.Statement, declared: tuple[int, ...]) -> list[int]:
        """Each parameter's type: declared, else a cast, else a typed field, else text."""
        return param_types(self, stmt, declared)

    def describe(self, stmt: ast.Statement, param_oids: list[int]) -> list[Column] | None:
        """The columns a statement returns (None: it returns no rows)."""
        return describe(self, stmt, param_oids)

    def prepared_statement(self, name: str) -> Prepared:
        prepared = self.prepared.get(name)
        if prepared is None:
            raise InvalidSqlStatementName(f'prepared statement "{name}" does not exist')
        return prepared
