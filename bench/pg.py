"""A throwaway PostgreSQL cluster on loopback for side-by-side figures (BENCH.md).

PostgreSQL refuses to run as root, so the cluster belongs to the ``postgres``
system user (or an unprivileged user created for it), lives in a temporary
directory, and uses PostgreSQL's defaults (fsync = on, synchronous_commit = on).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.serverproc import free_port


def _bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None
    )
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "postgresql"],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        return _bin(name)
    if found is None:
        raise RuntimeError(f"{name} not found: install PostgreSQL (Debian package postgresql)")
    return found


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _alive(pid: int) -> bool:
    if not _exists(pid):
        return False
    try:  # a zombie is dead too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _run_as(user: str | None, cmd: list[str]) -> subprocess.CompletedProcess[str]:
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, check=True)


class Postgres:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="nodedb-bench-pg-"))
        self.user: str | None = None
        self.settings: dict[str, str] = {}
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
            self.user = "postgres"
            shutil.chown(self.dir, "postgres")

    def start(self, settings: dict[str, str] | None = None) -> Postgres:
        """initdb and start, with PostgreSQL's defaults unless ``settings`` says otherwise."""
        data = self.dir / "data"
        _run_as(self.user, [_bin("initdb"), "-A", "trust", "-U", "postgres", "-D", str(data)])
        self.settings = settings or {}
        _run_as(
            self.user,
            [
                _bin("pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(self.dir / "log"),
                "-w",
                "-o",
                " ".join(self._options()),
                "start",
            ],
        )
        return self

    def _options(self) -> list[str]:
        opts = [f"-p {self.port}", f"-k {self.dir}", "-c listen_addresses=127.0.0.1"]
        return opts + [f"-c {k}={v}" for k, v in self.settings.items()]

    def kill9(self) -> None:
        """A crash: SIGKILL to the postmaster and every backend, as a power cut leaves it
        (the page cache survives, shared memory does not)."""
        pid = int((self.dir / "data" / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True
        ).stdout.split()
        for p in [pid, *map(int, children)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not any(_alive(p) for p in [pid, *map(int, children)]):
                if _exists(pid):
                    # A zombie no init reaps here: PostgreSQL would take its pid in
                    # postmaster.pid (and in its socket's lock file) for a running
                    # postmaster. It is dead, as after a crash, so those files go.
                    (self.dir / "data" / "postmaster.pid").unlink()
                    (self.dir / f".s.PGSQL.{self.port}.lock").unlink(missing_ok=True)
                return
            time.sleep(0.01)
        raise RuntimeError("PostgreSQL did not die")

    def exec_postgres(self) -> subprocess.Popen[bytes]:
        """Start the postmaster directly (no pg_ctl wait), for timing its crash recovery."""
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        cmd = [*prefix, _bin("postgres"), "-D", str(self.dir / "data")]
        for opt in self._options():
            cmd += opt.split(" ", 1)
        log = open(self.dir / "log", "ab")  # noqa: SIM115 - the child keeps it
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    def tool(self, name: str, *args: str) -> None:
        """Run a PostgreSQL client program (pg_dump, pg_restore) against this cluster."""
        _run_as(
            self.user,
            [_bin(name), "-h", str(self.dir), "-p", str(self.port), "-U", "postgres", *args],
        )

    def dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def version(self) -> str:
        return _run_as(self.user, [_bin("postgres"), "--version"]).stdout.strip()

    def stop(self) -> None:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        subprocess.run(
            [*prefix, _bin("pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "stop"],
            capture_output=True,
        )
        shutil.rmtree(self.dir, ignore_errors=True)
