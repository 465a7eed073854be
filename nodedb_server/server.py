"""Wiring: build everything from the config, recover, listen, checkpoint, shut down."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import signal
import sys
import time
from datetime import UTC, datetime

from nodedb_server import __version__, _hot
from nodedb_server.backup.writer import remove_partials
from nodedb_server.config import Config
from nodedb_server.pgwire.server import PgServer
from nodedb_server.sql import relational
from nodedb_server.storage.fsio import FileIO
from nodedb_server.tenants.manager import TenantManager

log = logging.getLogger("nodedb.server")


class StartupRefused(Exception):
    """The server cannot start; the message (one line) says why and what to change."""


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        at = datetime.fromtimestamp(record.created, UTC)
        out = {
            "ts": f"{at:%Y-%m-%dT%H:%M:%S}.{at.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(cfg: Config) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if cfg["server.log_format"] == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(cfg["server.log_level"].upper())


class NodeDBServer:
    def __init__(self, cfg: Config, fs: FileIO | None = None):
        self.cfg = cfg
        self.manager = TenantManager(cfg, fs)
        self.pg = PgServer(cfg, self.manager)
        self.manager.end_sessions = self.pg.end_tenant_sessions
        self.stopping = asyncio.Event()
        self.address: tuple[str, int] | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._stopped = False
        self._warm: asyncio.Future[None] | None = None

    async def start(self) -> tuple[str, int]:
        started = time.monotonic()
        log.info(
            "nodedb-server %s starting; data directory %s; statement hot path %s",
            __version__,
            self.cfg.data_dir,
            _hot.STATE,
        )
        log.info("configuration: %s", self.cfg.describe())
        await self.manager.open()  # the system catalog: users, tenants, keys
        remove_partials(self.cfg.backup_dirs)
        # The listener opens before the tenants recover: each serves as soon as its own
        # replay ends, and a connection to one still recovering gets 57P03.
        try:
            self.address = await self.pg.start()
        except OSError as e:
            await self.manager.close(checkpoint=False)
            raise StartupRefused(_listen_failure(self.cfg, e)) from None
        log.info("listening for PostgreSQL connections on %s:%d", *self.address)
        # It checkpoints the system catalog and each tenant once online.
        self._checkpointer = asyncio.create_task(self._checkpoint_loop(), name="checkpointer")
        self._recovery = asyncio.create_task(self._recover(started), name="recovery")
        return self.address

    async def recovered(self) -> None:
        """Wait until every tenant is online (or failed): the end of ``start``'s work."""
        if self._recovery is not None:
            await asyncio.shield(self._recovery)

    async def _recover(self, started: float) -> None:
        try:
            failed = await self.manager.recover_tenants()
        except Exception:
            log.exception("recovering the tenants failed")
            failed = [t for t in self.manager.tenants.values() if t.status != "online"]
        if self.manager.abandoning:
            return
        log.info(
            "recovered %d tenant(s) and the system catalog in %.3fs%s",
            len(self.manager.tenants) - len(failed),
            time.monotonic() - started,
            f"; {len(failed)} could not be: {', '.join(t.name for t in failed)}" if failed else "",
        )
        # Serving first, then the imports only some statements need (sql/relational.py).
        self._warm = asyncio.get_running_loop().run_in_executor(None, relational.warm)

    async def _checkpoint_loop(self) -> None:
        interval = self.cfg["checkpoint.interval_seconds"]
        if not interval:
            return
        while True:
            await asyncio.sleep(interval)
            try:
                await self.manager.checkpoint_all()
            except Exception:
                log.exception("periodic checkpoint failed")

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        log.info("shutting down: no new connections; waiting for running statements")
        await self.pg.shutdown(self.cfg["server.shutdown_grace_ms"] / 1000)
        if self._recovery is not None and not self._recovery.done():
            self.manager.abandon_recovery()
            await self._recovery
        if self._checkpointer is not None:
            self._checkpointer.cancel()
        await self.manager.close(checkpoint=True)
        log.info("shutdown complete")


def _listen_failure(cfg: Config, e: OSError) -> str:
    where = f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror}"
    if e.errno == errno.EADDRINUSE:
        return (
            f"{where} (another process has the port); choose another with "
            "server.ports.pgwire in the config file, NODEDB_PORT_PGWIRE or --port"
        )
    return f"{where}; check server.host (NODEDB_HOST, --host) and server.ports.pgwire"


async def run(cfg: Config) -> int:
    server = NodeDBServer(cfg)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stopping.set)
    await server.stopping.wait()
    await server.stop()
    return 0
