"""A throwaway PostgreSQL cluster on loopback for side-by-side figures (BENCH.md).

PostgreSQL refuses to run as root, so the cluster belongs to the ``postgres``
system user (or an unprivileged user created for it), lives in a temporary
directory, and uses PostgreSQL's defaults (fsync = on, synchronous_commit = on).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
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


def _run_as(user: str | None, cmd: list[str]) -> subprocess.CompletedProcess[str]:
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, check=True)


class Postgres:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="nodedb-bench-pg-"))
        self.user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
            self.user = "postgres"
            shutil.chown(self.dir, "postgres")

    def start(self) -> Postgres:
        data = self.dir / "data"
        _run_as(self.user, [_bin("initdb"), "-A", "trust", "-U", "postgres", "-D", str(data)])
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
                f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1",
                "start",
            ],
        )
        return self

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
