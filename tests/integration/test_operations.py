"""Starting, refusing to start, and what an operator finds in the log and the data directory."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from tests.serverproc import ROOT, ServerProcess


def _refused(srv: ServerProcess) -> tuple[int, str]:
    """Start a server that must not start: its exit status and its log."""
    with pytest.raises(RuntimeError, match="server exited"):
        srv.start()
    assert srv.proc is not None
    return srv.proc.returncode, srv.log()


def test_second_server_on_one_data_directory_refuses_and_the_first_serves(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    first = ServerProcess(data).start()
    try:
        with psycopg.connect(first.dsn(), autocommit=True) as conn:
            conn.execute("CREATE COLLECTION c")
            conn.execute("INSERT INTO c (id) VALUES ('a')")
        second = ServerProcess(data)
        second.log_path = tmp_path / "second.log"
        code, log = _refused(second)
        assert code == 1
        assert f"data directory {data.resolve()} is in use" in log
        assert f"pid {first.proc.pid}" in log  # type: ignore[union-attr]
        assert "Traceback" not in log
        with psycopg.connect(first.dsn(), autocommit=True) as conn:
            conn.execute("INSERT INTO c (id) VALUES ('b')")
        assert first.stop() == 0
        first.start()  # the lock went with the first process
        with psycopg.connect(first.dsn(), autocommit=True) as conn:
            assert conn.execute("SELECT id FROM c ORDER BY id").fetchall() == [("a",), ("b",)]
    finally:
        first.stop()


def test_a_kill_9_leaves_no_lock_behind(server: ServerProcess) -> None:
    server.kill9()
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_the_first_backup_goes_to_the_default_directory(server: ServerProcess) -> None:
    backups = server.data_dir / "backups"
    assert backups.is_dir() and (backups.stat().st_mode & 0o777) == 0o700
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TENANT acme")
        conn.execute(f"BACKUP TENANT acme TO '{backups}/acme.bak'")
    assert (backups / "acme.bak").stat().st_size > 0


def test_leftovers_of_a_killed_checkpoint_and_backup_are_removed_at_start(
    server: ServerProcess,
) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION c")
        conn.execute("INSERT INTO c (id) VALUES ('a')")
    server.kill9()
    # What kill -9 in the middle of a checkpoint and of a BACKUP leaves behind.
    unfinished = server.data_dir / "tenants" / "1" / "checkpoints" / f"{99:020d}.tmp"
    unfinished.mkdir(parents=True)
    (unfinished / "p00000.l1").write_bytes(b"x" * 4096)
    nested = server.data_dir / "backups" / "nightly"
    nested.mkdir()
    partials = [
        server.data_dir / "backups" / ".nodedb-backup-0123456789abcdef.999999999.partial",
        nested / ".nodedb-backup-fedcba9876543210.999999998.partial",
    ]
    for p in partials:
        p.write_bytes(b"y" * 4096)
    kept = server.data_dir / "backups" / "acme.bak.partial"  # not a name BACKUP uses
    kept.write_bytes(b"mine")
    server.start()
    assert not unfinished.exists()
    assert not any(p.exists() for p in partials)
    assert kept.exists()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT id FROM c").fetchall() == [("a",)]
        conn.execute("CHECKPOINT")


def test_port_in_use_is_one_line_naming_the_port_and_the_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # ServerProcess would take the listener that holds the port for the server's.
        done = subprocess.run(
            [sys.executable, "-m", "nodedb_server", "--port", str(port)],
            cwd=ROOT,
            env={**ServerProcess(tmp_path / "data").env, "NODEDB_DATA_DIR": str(tmp_path / "d")},
            capture_output=True,
            text=True,
            timeout=60,
        )
    code, log = done.returncode, done.stdout + done.stderr
    assert code == 1
    assert "Traceback" not in log
    lines = [line for line in log.splitlines() if f"127.0.0.1:{port}" in line]
    assert len(lines) == 1, log
    assert "server.ports.pgwire" in lines[0] and "NODEDB_PORT_PGWIRE" in lines[0]
    assert "--port" in lines[0]


def test_unknown_environment_variable_refuses_to_start(tmp_path: Path) -> None:
    code, log = _refused(ServerProcess(tmp_path / "data", env={"NODEDB_PORTT": "1"}))
    assert code == 2
    assert "unknown environment variable NODEDB_PORTT" in log


def test_the_test_suites_own_variables_do_not_reach_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODEDB_FAULT_CYCLES", "3")
    monkeypatch.setenv("NODEDB_FUZZ_EXAMPLES", "10")
    srv = ServerProcess(tmp_path / "data").start()
    try:
        with psycopg.connect(srv.dsn(), autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        srv.stop()


def test_make_run_reads_the_shipped_config() -> None:
    out = subprocess.run(
        ["make", "-n", "-W", "pyproject.toml", "run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    [run] = [line for line in out.splitlines() if "nodedb-server" in line]
    assert "--config config/nodedb.toml" in run


def test_license_uses_the_spdx_form_setuptools_accepts_without_a_warning() -> None:
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)
    assert project["project"]["license"] == "Apache-2.0"
    [setuptools] = [r for r in project["build-system"]["requires"] if r.startswith("setuptools")]
    low = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", setuptools)
    assert low is not None and int(low.group(1)) >= 77  # the first to take an SPDX string


def test_failed_logins_are_logged_without_the_password_in_json_with_utc_ms(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "scram.toml"
    cfg.write_text(
        '[server]\nlog_format = "json"\n[auth]\nmode = "scram"\nsuperuser_password = "s3cret"\n'
    )
    srv = ServerProcess(tmp_path / "data", config=cfg).start()
    try:
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(srv.dsn(password="wrong-pw-123"))
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(srv.dsn(user="ghost", database="acme", password="ghost-pw-456"))
        time.sleep(0.2)
    finally:
        srv.stop()
    log = srv.log()
    assert "wrong-pw-123" not in log and "ghost-pw-456" not in log and "s3cret" not in log
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    refused = [r["msg"] for r in records if "login refused" in r["msg"]]
    assert len(refused) == 2, refused
    assert "user 'nodedb', database 'nodedb', client 127.0.0.1:" in refused[0]
    assert "password authentication failed" in refused[0] and "28P01" in refused[0]
    assert "user 'ghost', database 'acme', client 127.0.0.1:" in refused[1]
    assert 'role "ghost" does not exist' in refused[1]
    now = datetime.now(UTC)
    for r in records:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["ts"]), r["ts"]
        at = datetime.strptime(r["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert abs((now - at).total_seconds()) < 120  # UTC, not local time
