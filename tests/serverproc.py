"""Run the real server as a subprocess on a free loopback port, for the tests and the bench."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
# What the server logs once every tenant has recovered (nodedb_server/server.py).
READY_LINE = "tenant(s) and the system catalog in"
# Variables the test suite reads (make fault sets them); the server would refuse them
# as unknown NODEDB_* settings.
TEST_ONLY_ENV = frozenset({"NODEDB_FAULT_CYCLES", "NODEDB_FUZZ_EXAMPLES"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A nodedb-server subprocess with its own data directory and log file."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        env: dict[str, str] | None = None,
        config: Path | None = None,
    ):
        self.data_dir = data_dir
        self.port = port or free_port()
        inherited = {k: v for k, v in os.environ.items() if k not in TEST_ONLY_ENV}
        self.env = {**inherited, "NODEDB_CHECKPOINT_INTERVAL_SECONDS": "0", **(env or {})}
        self.config = config
        self.args: list[str] = []  # more command-line arguments for the next start
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self.starts = 0

    def start(self, timeout: float = 30.0, wait_ready: bool = True) -> ServerProcess:
        """Start the server and wait until it listens and, with ``wait_ready``, until
        every tenant has recovered (the listener opens before they do)."""
        cmd = [
            sys.executable,
            "-m",
            "nodedb_server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        cmd += self.args
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            log.flush()
            log_from = log.tell()
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}:\n{self.log()[-3000:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            if not wait_ready or READY_LINE in self._log_since(log_from):
                return self
            time.sleep(0.02)
        raise RuntimeError(f"server did not start serving:\n{self.log()[-3000:]}")

    def _log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: a clean shutdown."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise

    def psql(self, database: str = "nodedb", user: str = "nodedb") -> list[str]:
        """The start of a command line that runs the real psql against this server."""
        return ["psql", "-X", "-h", "127.0.0.1", "-p", str(self.port), "-U", user, "-d", database]

    def dsn(
        self, user: str = "nodedb", database: str = "nodedb", password: str | None = None
    ) -> str:
        pw = f" password={password}" if password else ""
        return f"host=127.0.0.1 port={self.port} user={user} dbname={database}{pw}"


def connect_sqlstate(
    srv: ServerProcess, user: str = "nodedb", database: str = "nodedb", password: str | None = None
) -> str:
    """The SQLSTATE a refused connection gets (asyncpg reports it; libpq does not)."""

    async def attempt() -> str:
        try:
            conn = await asyncpg.connect(
                host="127.0.0.1", port=srv.port, user=user, database=database, password=password
            )
        except asyncpg.PostgresError as e:
            return str(e.sqlstate)
        await conn.close()
        raise AssertionError(f"connecting to {database!r} as {user!r} was not refused")

    return asyncio.run(attempt())
