"""A fault-injecting file layer under an in-process server, driven by a real client.

kill -9 keeps the page cache, so it cannot show what happens when fsync
fails or the disk fills up; this layer can.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from nodedb_server.config import load_config
from nodedb_server.server import NodeDBServer
from nodedb_server.storage.fsio import FileIO
from tests.serverproc import free_port


class FaultyFileIO(FileIO):
    """Fails fsync with EIO, or writes with ENOSPC after writing half, while a flag is set."""

    def __init__(self) -> None:
        self.fail_fsync = False
        self.disk_full = False
        self.fsync_failures = 0
        self.fail_open_under = ""  # new files under a path holding this fail with EIO

    def fsync(self, fd: int) -> None:
        if self.fail_fsync:
            self.fsync_failures += 1
            raise OSError(errno.EIO, "injected fsync failure")
        super().fsync(fd)

    def write(self, fd: int, data: bytes | memoryview) -> None:
        if self.disk_full:
            super().write(fd, memoryview(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        super().write(fd, data)

    def open_new(self, path: Path) -> int:
        if self.disk_full:
            raise OSError(errno.ENOSPC, "No space left on device")
        if self.fail_open_under and self.fail_open_under in str(path):
            raise OSError(errno.EIO, "injected I/O error")
        return super().open_new(path)


async def _start(data: Path, fs: FileIO) -> NodeDBServer:
    cfg = load_config(
        None,
        {
            "server.data_dir": str(data),
            "server.ports.pgwire": free_port(),
            "checkpoint.interval_seconds": 0,
        },
        environ={},
    )
    srv = NodeDBServer(cfg, fs)
    await srv.start()
    await srv.recovered()
    return srv


@pytest.fixture
async def faulty(
    tmp_path: Path,
) -> AsyncIterator[tuple[NodeDBServer, FaultyFileIO, asyncpg.Connection]]:
    fs = FaultyFileIO()
    srv = await _start(tmp_path / "data", fs)
    assert srv.address is not None
    conn = await asyncpg.connect(
        host="127.0.0.1", port=srv.address[1], user="nodedb", database="nodedb"
    )
    await conn.execute("CREATE COLLECTION docs")
    await conn.execute("INSERT INTO docs (id) VALUES ('a')")
    try:
        yield srv, fs, conn
    finally:
        await conn.close()
        fs.fail_fsync = fs.disk_full = False
        await srv.stop()  # a no-op when the test already stopped it


async def _ids(conn: asyncpg.Connection) -> list[str]:
    return [r["id"] for r in await conn.fetch("SELECT id FROM docs ORDER BY id")]


async def _restart_ids(data: Path) -> list[str]:
    srv = await _start(data, FileIO())
    assert srv.address is not None
    conn = await asyncpg.connect(
        host="127.0.0.1", port=srv.address[1], user="nodedb", database="nodedb"
    )
    try:
        return await _ids(conn)
    finally:
        await conn.close()
        await srv.stop()


async def test_failed_fsync_fails_the_statement_and_is_never_retried(
    faulty, tmp_path: Path
) -> None:
    srv, fs, conn = faulty
    fs.fail_fsync = True
    with pytest.raises(asyncpg.PostgresError) as err:
        await conn.execute("INSERT INTO docs (id) VALUES ('b')")
    assert err.value.sqlstate == "58030"
    assert fs.fsync_failures == 1, "a failed fsync must not be retried on the same file"
    fs.fail_fsync = False
    # The tenant recovers from what is on disk; the failed write is not there.
    await conn.execute("INSERT INTO docs (id) VALUES ('c')")
    assert await _ids(conn) == ["a", "c"]
    # Its recovered store stores snapshots and archives WAL again, as the first did.
    assert srv.manager.tenants["default"].store.uploader is not None
    await conn.close()
    await srv.stop()
    assert await _restart_ids(tmp_path / "data") == ["a", "c"]


async def test_full_disk_is_53100_acknowledges_nothing_and_writes_resume(
    faulty, tmp_path: Path
) -> None:
    srv, fs, conn = faulty
    fs.disk_full = True
    for doc in ("b", "b2"):
        with pytest.raises(asyncpg.PostgresError) as err:
            await conn.execute(f"INSERT INTO docs (id) VALUES ('{doc}')")
        assert err.value.sqlstate == "53100"
    assert await _ids(conn) == ["a"], "reads go on while the disk is full"
    fs.disk_full = False
    await conn.execute("INSERT INTO docs (id) VALUES ('c')")
    assert await _ids(conn) == ["a", "c"]
    await conn.close()
    await srv.stop()
    assert await _restart_ids(tmp_path / "data") == ["a", "c"]


async def test_full_disk_during_restore_changes_nothing(tmp_path: Path) -> None:
    fs = FaultyFileIO()
    backups = tmp_path / "backups"
    backups.mkdir()
    cfg = load_config(
        None,
        {
            "server.data_dir": str(tmp_path / "data"),
            "server.ports.pgwire": free_port(),
            "checkpoint.interval_seconds": 0,
            "backup.allowed_dirs": [str(backups)],
        },
        environ={},
    )
    srv = NodeDBServer(cfg, fs)
    await srv.start()
    await srv.recovered()
    assert srv.address is not None
    conn = await asyncpg.connect(host="127.0.0.1", port=srv.address[1], user="nodedb")
    try:
        await conn.execute("CREATE TENANT acme")
        acme = await asyncpg.connect(
            host="127.0.0.1", port=srv.address[1], user="nodedb", database="acme"
        )
        await acme.execute("CREATE COLLECTION docs")
        await acme.execute("INSERT INTO docs (id) VALUES ('a'), ('b')")
        await conn.execute(f"BACKUP TENANT acme TO '{backups}/a.bak'")
        await acme.execute("INSERT INTO docs (id) VALUES ('c')")
        await acme.close()
        dirs = sorted(p.name for p in (tmp_path / "data" / "tenants").iterdir())
        fs.disk_full = True
        with pytest.raises(asyncpg.PostgresError) as err:
            await conn.execute(f"RESTORE TENANT acme FROM '{backups}/a.bak'")
        assert err.value.sqlstate == "53100"
        fs.disk_full = False
        assert sorted(p.name for p in (tmp_path / "data" / "tenants").iterdir()) == dirs
        acme = await asyncpg.connect(
            host="127.0.0.1", port=srv.address[1], user="nodedb", database="acme"
        )
        assert await acme.fetchval("SELECT COUNT(*) FROM docs") == 3
        await acme.close()
    finally:
        await conn.close()
        fs.disk_full = False
        await srv.stop()


def _checkpoint_dirs(data: Path) -> list[str]:
    root = data / "tenants" / "1" / "checkpoints"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


async def test_a_batch_whose_commit_fails_at_its_sync_stores_nothing(
    faulty, tmp_path: Path
) -> None:
    """executemany's rows commit at the batch's Sync: when that commit meets a full disk
    the error comes there, then the ReadyForQuery, and the session goes on."""
    srv, fs, conn = faulty
    fs.disk_full = True
    with pytest.raises(asyncpg.PostgresError) as err:
        await conn.executemany("INSERT INTO docs (id) VALUES ($1)", [("b",), ("b2",), ("b3",)])
    assert err.value.sqlstate == "53100"
    assert await _ids(conn) == ["a"]
    fs.disk_full = False
    await conn.executemany("INSERT INTO docs (id) VALUES ($1)", [("c",), ("d",)])
    assert await _ids(conn) == ["a", "c", "d"]
    await conn.close()
    await srv.stop()
    assert await _restart_ids(tmp_path / "data") == ["a", "c", "d"]


async def test_checkpoint_on_a_full_disk_is_53100_and_leaves_no_tmp(faulty, tmp_path: Path) -> None:
    srv, fs, conn = faulty
    before = _checkpoint_dirs(tmp_path / "data")
    fs.disk_full = True
    with pytest.raises(asyncpg.PostgresError) as err:
        await conn.execute("CHECKPOINT")
    assert err.value.sqlstate == "53100"
    assert _checkpoint_dirs(tmp_path / "data") == before, "no half-written checkpoint is left"
    fs.disk_full = False
    await conn.execute("CHECKPOINT")
    assert len(_checkpoint_dirs(tmp_path / "data")) == len(before) + 1


async def test_restart_on_a_full_disk_serves_reads_and_writes_resume(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = await _start(data, FileIO())
    assert srv.address is not None
    conn = await asyncpg.connect(host="127.0.0.1", port=srv.address[1], user="nodedb")
    await conn.execute("CREATE COLLECTION docs")
    await conn.execute("INSERT INTO docs (id) VALUES ('a')")
    await conn.close()
    await srv.stop()
    fs = FaultyFileIO()
    fs.disk_full = True
    srv = await _start(data, fs)
    assert srv.address is not None
    conn = await asyncpg.connect(host="127.0.0.1", port=srv.address[1], user="nodedb")
    try:
        assert await _ids(conn) == ["a"]
        for statement in ("INSERT INTO docs (id) VALUES ('b')", "CREATE TENANT acme"):
            with pytest.raises(asyncpg.PostgresError) as err:
                await conn.execute(statement)
            assert err.value.sqlstate == "53100", statement
        fs.disk_full = False
        await conn.execute("INSERT INTO docs (id) VALUES ('c')")
        await conn.execute("CREATE TENANT acme")
        assert await _ids(conn) == ["a", "c"]
    finally:
        await conn.close()
        fs.disk_full = False
        await srv.stop()
    assert await _restart_ids(data) == ["a", "c"]


async def test_a_tenant_that_fails_to_open_is_failed_and_can_be_purged(faulty) -> None:
    """CREATE TENANT whose WAL cannot be created: the statement fails, the tenant is
    marked failed (not left 'recovering' for good), and PURGE frees its name."""
    srv, fs, conn = faulty
    fs.fail_open_under = "/tenants/2/"
    with pytest.raises(asyncpg.PostgresError):
        await conn.execute("CREATE TENANT acme")
    status = {r["name"]: r["status"] for r in await conn.fetch("SHOW TENANTS")}
    assert status == {"default": "online", "acme": "failed"}
    with pytest.raises(asyncpg.PostgresError) as err:
        await asyncpg.connect(host="127.0.0.1", port=srv.address[1], user="nodedb", database="acme")
    assert err.value.sqlstate == "57P03" and "injected I/O error" in str(err.value)
    fs.fail_open_under = ""
    await conn.execute("PURGE TENANT acme CONFIRM")
    await conn.execute("CREATE TENANT acme")
    acme = await asyncpg.connect(
        host="127.0.0.1", port=srv.address[1], user="nodedb", database="acme"
    )
    await acme.execute("CREATE COLLECTION docs")
    await acme.close()
    assert await _ids(conn) == ["a"]  # the default tenant never noticed
