"""The listener opens before the tenants recover: each tenant serves as soon as its own
replay ends, one still recovering answers 57P03, and one that cannot be recovered is
marked failed while every other tenant goes on serving."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import psycopg
import pytest

from tests.serverproc import ServerProcess, connect_sqlstate

# No checkpoint in between: the restart replays every row from the WAL.
NO_CHECKPOINTS = {"NODEDB_CHECKPOINT_INTERVAL_SECONDS": "0", "NODEDB_CHECKPOINT_WAL_BYTES": "0"}
ROWS = 600_000


async def _refusal(port: int, database: str) -> asyncpg.PostgresError | None:
    """The error a connection to ``database`` is refused with, or None once it serves."""
    try:
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user="nodedb", database=database)
    except asyncpg.PostgresError as e:
        return e
    await conn.close()
    return None


def test_other_tenants_serve_while_one_recovers(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", env=NO_CHECKPOINTS).start()
    try:
        with psycopg.connect(srv.dsn(), autocommit=True) as su:
            su.execute("CREATE TENANT big")
        with psycopg.connect(srv.dsn(database="big"), autocommit=True) as big:
            big.execute("CREATE COLLECTION docs")
            with big.cursor().copy("COPY docs (id, n) FROM STDIN") as cp:
                for i in range(ROWS):
                    cp.write_row((f"k{i}", i))
            assert big.execute("SELECT count(*) FROM docs").fetchone() == (ROWS,)
        srv.kill9()

        srv.start(wait_ready=False)
        seen_recovering = False
        with psycopg.connect(srv.dsn(), autocommit=True) as su:
            # The default tenant answers, reads and writes, while big still replays.
            su.execute("CREATE COLLECTION meanwhile")
            su.execute("INSERT INTO meanwhile (id) VALUES ('m')")
            status = dict((r[0], r[4]) for r in su.execute("SHOW TENANTS").fetchall())
            refused = asyncio.run(_refusal(srv.port, "big"))
            if refused is not None:
                seen_recovering = True
                assert refused.sqlstate == "57P03"
                assert "recovering" in str(refused)
                assert status["big"] == "recovering"
                drop = su.execute
                with pytest.raises(psycopg.errors.ObjectInUse, match="still recovering"):
                    drop("DROP TENANT big")
            assert su.execute("SELECT id FROM meanwhile").fetchall() == [("m",)]
            assert status["default"] == "online"
        assert seen_recovering, "big was online before the default tenant answered"

        deadline = time.monotonic() + 120
        while asyncio.run(_refusal(srv.port, "big")) is not None:
            assert time.monotonic() < deadline, "big never came online"
            time.sleep(0.05)
        with psycopg.connect(srv.dsn(database="big"), autocommit=True) as big:
            assert big.execute("SELECT count(*) FROM docs").fetchone() == (ROWS,)
            assert big.execute("SELECT n FROM docs WHERE id = 'k12345'").fetchone() == ("12345",)
        with psycopg.connect(srv.dsn(), autocommit=True) as su:
            rows = {r[0]: r for r in su.execute("SHOW TENANTS").fetchall()}
            assert rows["big"][2:] == (1, rows["big"][3], "online")
    finally:
        srv.stop()


def test_a_tenant_that_cannot_be_recovered_leaves_the_others_serving(tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    env = {
        **NO_CHECKPOINTS,
        "NODEDB_WAL_SEGMENT_BYTES": "4096",
        "NODEDB_BACKUP_ALLOWED_DIRS": str(backups),
    }
    srv = ServerProcess(tmp_path / "data", env=env).start()
    try:
        with psycopg.connect(srv.dsn(), autocommit=True) as su:
            su.execute("CREATE COLLECTION kept")
            su.execute("INSERT INTO kept (id) VALUES ('k')")
            for name in ("lost", "gone"):
                su.execute(f"CREATE TENANT {name}")
                with psycopg.connect(srv.dsn(database=name), autocommit=True) as t:
                    t.execute("CREATE COLLECTION docs")
                    t.execute("INSERT INTO docs (id) VALUES ('before')")
                su.execute(f"BACKUP TENANT {name} TO '{backups}/{name}.bak'")
            su.execute("CHECKPOINT")  # of every tenant
            for name in ("lost", "gone"):
                with psycopg.connect(srv.dsn(database=name), autocommit=True) as t:
                    for i in range(200):  # single commits over many 4 KiB segments
                        t.execute("INSERT INTO docs (id, pad) VALUES (%s, %s)", (f"r{i}", "x" * 64))
            ids = {r[0]: r[1] for r in su.execute("SHOW TENANTS").fetchall()}
        srv.kill9()
        for name in ("lost", "gone"):
            segments = sorted(
                (tmp_path / "data" / "tenants" / str(ids[name]) / "wal").glob("*.wal")
            )
            assert len(segments) > 2
            for seg in segments[:-1]:  # the records after the checkpoint are gone from disk
                seg.unlink()

        srv.start()  # ready: every tenant online or failed
        assert connect_sqlstate(srv, database="lost") == "57P03"
        refused = asyncio.run(_refusal(srv.port, "lost"))
        assert refused is not None and "failed" in str(refused) and "missing" in str(refused)
        assert "tenant lost (id" in srv.log() and "could not be recovered" in srv.log()
        with psycopg.connect(srv.dsn(), autocommit=True) as su:
            assert su.execute("SELECT id FROM kept").fetchall() == [("k",)]
            su.execute("INSERT INTO kept (id) VALUES ('after')")
            rows = {r[0]: r for r in su.execute("SHOW TENANTS").fetchall()}
            assert rows["lost"][2:] == (None, None, "failed")
            assert rows["gone"][4] == "failed" and rows["default"][4] == "online"
            # What an operator looks at before restoring it still lists it.
            cps = {r[0] for r in su.execute("SELECT tenant FROM _system.checkpoints")}
            assert {"lost", "gone", "default"} <= cps
            with pytest.raises(psycopg.errors.ObjectInUse):
                su.execute(f"BACKUP TENANT lost TO '{backups}/never.bak'")
            # The operator's ways out: a restore over it, or PURGE (which frees the name).
            su.execute(f"RESTORE TENANT lost FROM '{backups}/lost.bak'")
            su.execute("PURGE TENANT gone CONFIRM")
            su.execute("CREATE TENANT gone")
        with psycopg.connect(srv.dsn(database="lost"), autocommit=True) as lost:
            assert lost.execute("SELECT id FROM docs").fetchall() == [("before",)]
        with psycopg.connect(srv.dsn(database="gone"), autocommit=True) as gone:
            gone.execute("CREATE COLLECTION fresh")
        srv.stop()
        srv.start()  # a clean restart: nothing of the failures is left behind
        assert "could not be recovered" not in srv.log().rsplit("===== start", 1)[1]
        with psycopg.connect(srv.dsn(database="lost"), autocommit=True) as lost:
            assert lost.execute("SELECT id FROM docs").fetchall() == [("before",)]
        with psycopg.connect(srv.dsn(database="gone"), autocommit=True) as gone:
            assert gone.execute("SELECT count(*) FROM fresh").fetchone() == (0,)
        with psycopg.connect(srv.dsn(), autocommit=True) as su:
            assert su.execute("SELECT id FROM kept ORDER BY id").fetchall() == [
                ("after",),
                ("k",),
            ]
    finally:
        srv.stop()


def test_stopping_during_a_recovery_loses_nothing(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", env=NO_CHECKPOINTS).start()
    try:
        with psycopg.connect(srv.dsn(), autocommit=True) as conn:
            conn.execute("CREATE COLLECTION docs")
            with conn.cursor().copy("COPY docs (id, n) FROM STDIN") as cp:
                for i in range(ROWS):
                    cp.write_row((f"k{i}", i))
        srv.kill9()
        srv.start(wait_ready=False)
        assert connect_sqlstate(srv) == "57P03"
        assert srv.stop() == 0  # SIGTERM while the replay runs: it stops at its next batch
        assert "recovered" not in srv.log().rsplit("===== start", 1)[1]
        srv.start()
        with psycopg.connect(srv.dsn(), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM docs").fetchone() == (ROWS,)
    finally:
        srv.stop()
