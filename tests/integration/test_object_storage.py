"""Snapshots, quarantine and the WAL archive in object storage, on a real server.

Each test runs against every storage kind in ``KINDS``; the store's own contents
are read back through the same ObjectStore classes the server uses.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from nodedb_server.objectstore.base import ObjectStore
from nodedb_server.objectstore.local import LocalStore
from nodedb_server.storage.records import RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE
from tests.serverproc import ServerProcess

SECTIONS = ("snapshot_storage", "quarantine_storage", "wal_archive")
KINDS = ["local"]


@dataclass
class Storage:
    """Where a test server's three sections point, and how the test reads them."""

    env: dict[str, str]
    stores: dict[str, ObjectStore]
    prefix: str

    def keys(self, section: str, under: str = "") -> list[str]:
        store = self.stores[section]
        return [o.key for o in asyncio.run(store.list(under))]

    def get(self, section: str, key: str) -> bytes:
        return asyncio.run(self.stores[section].get_bytes(key))


def _local(tmp_path: Path) -> Storage:
    env, stores = {}, {}
    for section in SECTIONS:
        root = tmp_path / f"store-{section}"
        env[f"NODEDB_{section.upper()}_PATH"] = str(root)
        env[f"NODEDB_{section.upper()}_PREFIX"] = "cluster-a"
        stores[section] = LocalStore(section, root / "cluster-a")
    return Storage(env, stores, "cluster-a")


@pytest.fixture(params=KINDS)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    return _local(tmp_path)


def _server(tmp_path: Path, storage: Storage, **extra: str) -> ServerProcess:
    env = {
        **storage.env,
        "NODEDB_WAL_ARCHIVE_ENABLED": "true",
        "NODEDB_WAL_SEGMENT_BYTES": "4096",
        "NODEDB_WAL_ARCHIVE_MAX_DELAY_SECONDS": "0.3",
        **extra,
    }
    return ServerProcess(tmp_path / "data", env=env)


@pytest.fixture
def server(tmp_path: Path, storage: Storage) -> Iterator[ServerProcess]:
    srv = _server(tmp_path, storage).start()
    try:
        yield srv
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.kill9()


def _wait(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _fill(srv: ServerProcess, start: int, count: int) -> None:
    with psycopg.connect(srv.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION IF NOT EXISTS docs")
        for i in range(start, start + count):
            conn.execute(
                "INSERT INTO docs (id, n, pad) VALUES (%s, %s, %s)", (f"d{i:04d}", i, "x" * 60)
            )


def _rows(srv: ServerProcess) -> list[tuple[object, ...]]:
    with psycopg.connect(srv.dsn(), autocommit=True) as conn:
        return conn.execute("SELECT id, n FROM docs ORDER BY id").fetchall()


def _wal(srv: ServerProcess) -> list[tuple[object, ...]]:
    with psycopg.connect(srv.dsn(), autocommit=True) as conn:
        return conn.execute(
            "SELECT segment, first_lsn, last_lsn, archived, archive_error FROM _system.wal"
            " WHERE tenant = 'default' ORDER BY first_lsn"
        ).fetchall()


def _all_sealed_archived(srv: ServerProcess) -> bool:
    segs = _wal(srv)
    return all(archived for _, first, last, archived, _ in segs[:-1] if last >= first)


def test_each_kind_of_file_lands_under_its_prefix_and_reads_back(
    server: ServerProcess, storage: Storage
) -> None:
    _fill(server, 0, 120)
    _wait("the sealed segments to be archived", lambda: _all_sealed_archived(server))
    segs = _wal(server)
    assert len(segs) > 3, "small segments: several were sealed"
    local = server.data_dir / "tenants" / "1" / "wal"
    for name, first, last, archived, error in segs[:-1]:
        if last < first:
            continue
        assert archived and error is None
        key = f"tenants/1/wal/{name}"
        assert storage.get("wal_archive", key) == (local / name).read_bytes()
        note = json.loads(storage.get("wal_archive", key + ".json"))
        assert (note["first_lsn"], note["last_lsn"]) == (first, last)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        _wait(
            "the snapshot to be stored",
            lambda: (
                conn.execute(
                    "SELECT stored FROM _system.checkpoints WHERE tenant = 'default'"
                ).fetchall()[0][0]
                is not None
            ),
        )
        (lsn, stored, files) = conn.execute(
            "SELECT lsn, stored, files FROM _system.checkpoints WHERE tenant = 'default'"
        ).fetchone()
        # Archived and checkpointed: the local copies of the sealed segments go.
        _wait("sealed segments to be deleted", lambda: len(_wal(server)) <= 2)
    prefix = f"tenants/1/checkpoints/{lsn:020d}/"
    assert stored.endswith(prefix) and storage.prefix in stored
    names = storage.keys("snapshot_storage", prefix)
    assert prefix + "MANIFEST" in names and len(names) == files + 1
    local_ckpt = server.data_dir / "tenants" / "1" / "checkpoints" / f"{lsn:020d}"
    for key in names:
        assert (
            storage.get("snapshot_storage", key)
            == (local_ckpt / key.rsplit("/", 1)[1]).read_bytes()
        )
    key_copy = storage.get("snapshot_storage", "system/KEY")
    assert key_copy == (server.data_dir / "system" / "KEY").read_bytes()
    assert storage.keys("wal_archive", "system/wal/"), "the system catalog is archived too"


def test_snapshots_are_pruned_to_keep(tmp_path: Path, storage: Storage) -> None:
    srv = _server(tmp_path, storage, NODEDB_SNAPSHOT_STORAGE_KEEP="2").start()
    try:
        with psycopg.connect(srv.dsn(), autocommit=True) as conn:
            conn.execute("CREATE COLLECTION docs")
            lsns = []
            for i in range(4):
                conn.execute("INSERT INTO docs (id, n) VALUES (%s, %s)", (f"k{i}", i))
                conn.execute("CHECKPOINT")
                lsns.append(
                    conn.execute(
                        "SELECT max(lsn) FROM _system.checkpoints WHERE tenant = 'default'"
                    ).fetchone()[0]
                )
                _wait(
                    "the snapshot to be stored",
                    lambda: (
                        conn.execute(
                            "SELECT stored FROM _system.checkpoints WHERE tenant = 'default' ORDER BY lsn DESC"
                        ).fetchone()[0]
                        is not None
                    ),
                )

        def stored() -> set[int]:
            keys = storage.keys("snapshot_storage", "tenants/1/checkpoints/")
            return {int(k.split("/")[3]) for k in keys if k.endswith("/MANIFEST")}

        _wait("old snapshots to be pruned", lambda: stored() == set(lsns[-2:]))
        # Nothing but the kept snapshots' files is left behind.
        keys = storage.keys("snapshot_storage", "tenants/1/checkpoints/")
        assert {int(k.split("/")[3]) for k in keys} == set(lsns[-2:])
    finally:
        srv.kill9()


def test_a_damaged_archived_segment_is_repaired_from_the_archive(
    server: ServerProcess, storage: Storage
) -> None:
    _fill(server, 0, 120)
    _wait("the sealed segments to be archived", lambda: _all_sealed_archived(server))
    expect = _rows(server)
    segs = [s for s in _wal(server)[:-1] if s[2] >= s[1]]
    server.kill9()
    victim = server.data_dir / "tenants" / "1" / "wal" / segs[1][0]
    data = bytearray(victim.read_bytes())
    data[SEGMENT_HEADER_SIZE + RECORD_HEADER_SIZE + 7] ^= 0x40
    victim.write_bytes(bytes(data))
    server.start()
    assert _rows(server) == expect, "nothing is lost"
    assert "repaired from its verified archived copy" in server.log()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM _system.quarantine").fetchone() == (0,)


def test_a_corrupted_l1_file_goes_to_quarantine_storage_with_a_note(
    server: ServerProcess, storage: Storage
) -> None:
    _fill(server, 0, 30)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        _fill(server, 30, 5)
        conn.execute("CHECKPOINT")
        _fill(server, 35, 5)
    expect = _rows(server)
    server.kill9()
    newest = sorted((server.data_dir / "tenants" / "1" / "checkpoints").iterdir())[-1]
    l1 = sorted(newest.glob("*.l1"))[0]
    damaged = bytearray(l1.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    l1.write_bytes(bytes(damaged))
    server.start()
    assert _rows(server) == expect
    name = f"checkpoint-{newest.name}"

    def listed() -> list[tuple[object, ...]]:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            return conn.execute("SELECT file, reason, location FROM _system.quarantine").fetchall()

    _wait("the checkpoint to reach quarantine storage", lambda: storage.prefix in str(listed()))
    [(file, reason, location)] = listed()
    assert file == name and "unusable checkpoint" in reason and l1.name in reason
    keys = storage.keys("quarantine_storage", "tenants/1/")
    [stamp] = {k.split("/")[2] for k in keys}
    base = f"tenants/1/{stamp}/{name}"
    assert location.endswith(base)
    assert storage.get("quarantine_storage", f"{base}/{l1.name}") == bytes(damaged)
    note = json.loads(storage.get("quarantine_storage", base + ".json"))
    assert note["tenant"] == "default" and note["file"] == name
    assert "unusable checkpoint" in note["reason"] and note["server_version"] and note["at"]
    assert not (server.data_dir / "tenants" / "1" / "quarantine" / stamp).exists(), (
        "moved, not copied"
    )


def test_a_failing_archive_keeps_segments_and_catches_up(tmp_path: Path, storage: Storage) -> None:
    srv = _server(tmp_path, storage, NODEDB_WAL_ARCHIVE_MAX_LOCAL_BYTES="8192").start()
    try:
        _fill(srv, 0, 20)
        _wait("the first segments to be archived", lambda: _all_sealed_archived(srv))
        with _archive_down(storage):
            _fill(srv, 20, 150)  # acknowledged while the archive is down
            _wait("the view to show the error", lambda: _wal(srv)[0][4] is not None)
            with psycopg.connect(srv.dsn(), autocommit=True) as conn:
                conn.execute("CHECKPOINT")
            segs = _wal(srv)
            unarchived = [s for s in segs[:-1] if s[2] >= s[1] and not s[3]]
            assert len(unarchived) >= 3, "nothing unarchived is deleted by a checkpoint"
            error = segs[0][4]
            assert "max_local_bytes" in error, error
            _wait("the loud log line", lambda: "over wal_archive.max_local_bytes" in srv.log())
        _wait(
            "archiving to catch up", lambda: _all_sealed_archived(srv) and _wal(srv)[0][4] is None
        )
        assert len(_rows(srv)) == 170
        for name, *_ in unarchived:
            assert storage.keys("wal_archive", f"tenants/1/wal/{name}")
        srv.kill9()
        srv.start()
        assert len(_rows(srv)) == 170
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.kill9()


class _archive_down:
    """Make the archive fail every put (local: its directory replaced by a file)."""

    def __init__(self, storage: Storage):
        store = storage.stores["wal_archive"]
        assert isinstance(store, LocalStore)
        self.root = store.root
        self.aside = self.root.with_name(self.root.name + ".aside")

    def __enter__(self) -> None:
        os.rename(self.root, self.aside)
        self.root.write_text("not a directory")

    def __exit__(self, *exc: object) -> None:
        self.root.unlink()
        os.rename(self.aside, self.root)


def test_a_restart_knows_what_is_archived(server: ServerProcess, storage: Storage) -> None:
    _fill(server, 0, 60)
    _wait("the sealed segments to be archived", lambda: _all_sealed_archived(server))
    before = {k: storage.stores["wal_archive"] for k in storage.keys("wal_archive", "tenants/1/")}
    server.stop()
    server.start()
    # The segments sealed by the restart are archived too; nothing is uploaded twice
    # in a way that changes an archived segment.
    _wait("the sealed segments to be archived", lambda: _all_sealed_archived(server))
    after = storage.keys("wal_archive", "tenants/1/")
    assert set(before) <= set(after)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    _wait("archived segments to be deleted locally", lambda: len(_wal(server)) <= 2)
    assert len(_rows(server)) == 60


def test_an_unwritable_local_store_stops_start_up_naming_the_section(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    srv = ServerProcess(
        tmp_path / "data",
        env={"NODEDB_SNAPSHOT_STORAGE_PATH": str(blocker / "sub")},
    )
    with pytest.raises(RuntimeError, match=r"\[snapshot_storage\]"):
        srv.start()
    shutil.rmtree(tmp_path / "data", ignore_errors=True)


def _open_segment_empty(srv: ServerProcess) -> bool:
    segs = _wal(srv)
    return segs[-1][2] < segs[-1][1] and _all_sealed_archived(srv)


def test_a_lost_data_directory_comes_back_from_storage(tmp_path: Path, storage: Storage) -> None:
    srv = _server(tmp_path, storage).start()
    try:
        _fill(srv, 0, 50)
        with psycopg.connect(srv.dsn(), autocommit=True) as conn:
            conn.execute("CHECKPOINT")
            conn.execute("CREATE TENANT acme")
        with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
            conn.execute("CREATE COLLECTION notes")
            conn.execute("INSERT INTO notes (id, body) VALUES ('a', 'kept')")
        _fill(srv, 50, 40)  # after the snapshot: only in the archive
        expect = _rows(srv)
        _wait("everything to be archived", lambda: _open_segment_empty(srv))
        srv.kill9()
        key = (srv.data_dir / "master.key").read_bytes()
        shutil.rmtree(srv.data_dir)
        # An unrelated file in the data directory: refused, nothing touched.
        srv.data_dir.mkdir()
        (srv.data_dir / "stray").write_text("x")
        srv.args = ["--recover-from-storage"]
        with pytest.raises(RuntimeError, match="needs an empty data directory"):
            srv.start()
        assert (srv.data_dir / "stray").read_text() == "x"
        (srv.data_dir / "stray").unlink()
        # Without the master key: refused.
        with pytest.raises(RuntimeError, match="needs the master key"):
            srv.start()
        (srv.data_dir / "master.key").write_bytes(key)
        os.chmod(srv.data_dir / "master.key", 0o600)
        srv.start()
        assert _rows(srv) == expect
        with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
            assert conn.execute("SELECT id, body FROM notes").fetchall() == [("a", "kept")]
        # It is a normal server now: writes go on and are archived.
        _fill(srv, 90, 5)
        srv.args = []
        srv.kill9()
        srv.start()
        assert len(_rows(srv)) == 95
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.kill9()
