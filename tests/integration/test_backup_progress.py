"""Long backups and restores report progress while they run: NOTICEs to their client
(bytes and percent, every [backup] progress_seconds) and a running row in
_system.backups. The interval is shortened here so a tenant of some tens of MB is
"long"; nothing is asserted about how fast anything is."""

from __future__ import annotations

import re
import subprocess

import psycopg
import pytest

from tests.serverproc import ServerProcess

PROGRESS = re.compile(r"^(backup|restore|dry run) of tenant (\w+): (\d+) bytes(?: \((\d+) %\))?$")
DOCS = 40_000


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("progress")
    allowed = root / "backups"
    allowed.mkdir()
    srv = ServerProcess(
        root / "data",
        env={"NODEDB_BACKUP_ALLOWED_DIRS": str(allowed), "NODEDB_BACKUP_PROGRESS_SECONDS": "0.01"},
    ).start()
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        su.execute("CREATE TENANT big")
    pad = "x" * 1500
    with psycopg.connect(srv.dsn(database="big"), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION docs")
        for i in range(0, DOCS, 1000):
            body = ", ".join(f"{{ id: 'd{j}', n: {j}, pad: '{pad}' }}" for j in range(i, i + 1000))
            conn.execute(f"INSERT INTO docs [ {body} ]")
    yield srv, allowed
    srv.stop()


def _progress(notices: list[str]) -> list[tuple[str, int, int | None]]:
    found = []
    for text in notices:
        m = PROGRESS.match(text)
        if m:
            found.append((m[1], int(m[3]), int(m[4]) if m[4] is not None else None))
    return found


def test_a_long_backup_reports_progress_while_it_runs(big) -> None:  # type: ignore[no-untyped-def]
    srv, allowed = big
    target = allowed / "big.bak"
    notices: list[str] = []
    seen_running: list[tuple[str, int]] = []
    with (
        psycopg.connect(srv.dsn(), autocommit=True) as conn,
        psycopg.connect(srv.dsn(), autocommit=True) as observer,
    ):

        def on_notice(diag: psycopg.errors.Diagnostic) -> None:
            notices.append(diag.message_primary or "")
            if len(notices) == 1:  # at the first one, look from another session
                rows = observer.execute(
                    "SELECT status, bytes FROM _system.backups WHERE target = %s", (str(target),)
                ).fetchall()
                seen_running.extend(rows)

        conn.add_notice_handler(on_notice)
        figures = conn.execute(f"BACKUP TENANT big TO '{target}'").fetchone()
        assert figures is not None
        done = observer.execute(
            "SELECT status, bytes, percent FROM _system.backups WHERE target = %s", (str(target),)
        ).fetchall()
    size = target.stat().st_size
    steps = _progress(notices)
    assert len(steps) >= 2, notices
    assert all(kind == "backup" for kind, _, _ in steps)
    sent = [b for _, b, _ in steps]
    assert sent == sorted(sent) and 0 < sent[0] < size and sent[-1] <= size
    assert all(p is not None and 0 <= p < 100 for _, _, p in steps)
    # The first NOTICE came while the backup was still running, not all at the end.
    assert seen_running and seen_running[0][0] == "running" and seen_running[0][1] < size
    assert done == [("done", size, 100.0)]
    assert figures[0] == "big" and figures[2] == size and figures[3] == DOCS


def test_streamed_backup_and_dry_run_report_progress_through_psql(big) -> None:  # type: ignore[no-untyped-def]
    srv, allowed = big
    out = allowed / "streamed.bak"
    with out.open("wb") as f:
        res = subprocess.run(
            [*srv.psql(), "-c", "COPY (BACKUP TENANT big) TO STDOUT"],
            stdout=f,
            stderr=subprocess.PIPE,
            text=True,
            check=True,
        )
    lines = [ln.removeprefix("NOTICE:  ") for ln in res.stderr.splitlines()]
    steps = _progress(lines)
    assert len(steps) >= 2 and all(kind == "backup" for kind, _, _ in steps), res.stderr
    assert f"documents {DOCS}" in lines[-1]  # the closing figures come last
    with out.open("rb") as f:
        res = subprocess.run(
            [*srv.psql(), "-c", "COPY tenant_restore(big) FROM STDIN DRY RUN"],
            stdin=f,
            capture_output=True,
            text=True,
            check=True,
        )
    steps = _progress([ln.removeprefix("NOTICE:  ") for ln in res.stderr.splitlines()])
    assert len(steps) >= 2 and all(kind == "dry run" for kind, _, _ in steps), res.stderr
    assert f"documents {DOCS}" in res.stderr


def test_a_backup_cut_short_by_statement_timeout_leaves_nothing_behind(big) -> None:  # type: ignore[no-untyped-def]
    """statement_timeout reaches a running backup: it stops with 57014, no file or
    partial file is left, _system.backups says it was cancelled, and the same session
    goes on to take a whole backup."""
    srv, allowed = big
    target = allowed / "cut.bak"
    before = sorted(p.name for p in allowed.iterdir())
    with psycopg.connect(srv.dsn(), autocommit=True) as conn:
        conn.execute("SET statement_timeout = 30")
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute(f"BACKUP TENANT big TO '{target}'")
        with (
            pytest.raises(psycopg.errors.QueryCanceled),
            conn.cursor() as cur,
            cur.copy("COPY (BACKUP TENANT big) TO STDOUT") as copy,
        ):
            for _ in copy:
                pass
        assert sorted(p.name for p in allowed.iterdir()) == before
        rows = conn.execute(
            "SELECT target, status, error FROM _system.backups WHERE target IN (%s, 'stdout') "
            "AND status = 'failed'",
            (str(target),),
        ).fetchall()
        assert sorted(rows) == [
            (str(target), "failed", "cancelled"),
            ("stdout", "failed", "cancelled"),
        ]
        conn.execute("SET statement_timeout = 0")
        figures = conn.execute(f"BACKUP TENANT big TO '{target}'").fetchone()
    assert figures[2] == target.stat().st_size and figures[3] == DOCS
