"""Snapshots, quarantine and the WAL archive in object storage, on a real server.

Each test runs against every storage kind in ``KINDS``; the store's own contents
are read back through the same ObjectStore classes the server uses.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from nodedb_server.objectstore.base import ObjectStore
from nodedb_server.objectstore.local import LocalStore
from nodedb_server.objectstore.s3 import S3Store
from nodedb_server.storage.records import RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE
from tests.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedS3
from tests.serverproc import ServerProcess

SECTIONS = ("snapshot_storage", "quarantine_storage", "wal_archive")
PREFIX = "cluster-a"
# Which sections are on S3 in each kind; the others are local directories.
KINDS = {
    "local": (),
    "s3": SECTIONS,
    "snapshots-s3": ("snapshot_storage", "wal_archive"),
    "quarantine-s3": ("quarantine_storage",),
}


@dataclass
class Storage:
    """Where a test server's three sections point, and how the test reads them."""

    env: dict[str, str]
    make: dict[str, Callable[[], ObjectStore]]
    s3: SeaweedS3 | None = None

    def _with(self, section: str, work: Callable[[ObjectStore], Any]) -> Any:
        async def go() -> Any:
            store = self.make[section]()  # a client per event loop
            try:
                return await work(store)
            finally:
                await store.close()

        return asyncio.run(go())

    def keys(self, section: str, under: str = "") -> list[str]:
        async def listed(store: ObjectStore) -> list[str]:
            return [o.key for o in await store.list(under)]

        return self._with(section, listed)  # type: ignore[no-any-return]

    def get(self, section: str, key: str) -> bytes:
        return self._with(section, lambda store: store.get_bytes(key))  # type: ignore[no-any-return]

    def on_s3(self, section: str) -> bool:
        return f"NODEDB_{section.upper()}_ENDPOINT" in self.env


@pytest.fixture(params=list(KINDS))
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    return _storage(request, tmp_path, request.param)


@pytest.fixture
def s3_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """Every section on S3."""
    return _storage(request, tmp_path, "s3")


def _storage(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> Storage:
    on_s3 = KINDS[kind]
    env: dict[str, str] = {}
    make: dict[str, Callable[[], ObjectStore]] = {}
    s3: SeaweedS3 | None = None
    bucket = ""
    if on_s3:
        s3 = request.getfixturevalue("seaweed")
        bucket = request.getfixturevalue("s3_bucket")
    for section in SECTIONS:
        up = section.upper()
        env[f"NODEDB_{up}_PREFIX"] = PREFIX
        if section in on_s3:
            assert s3 is not None
            env |= {
                f"NODEDB_{up}_ENDPOINT": s3.endpoint,
                f"NODEDB_{up}_BUCKET": bucket,
                f"NODEDB_{up}_ACCESS_KEY": ACCESS_KEY,
                f"NODEDB_{up}_SECRET_KEY": SECRET_KEY,
            }
            make[section] = functools.partial(
                S3Store,
                section,
                endpoint=s3.endpoint,
                bucket=bucket,
                prefix=PREFIX,
                access_key=ACCESS_KEY,
                secret_key=SECRET_KEY,
            )
        else:
            root = tmp_path / f"store-{section}"
            env[f"NODEDB_{up}_PATH"] = str(root)
            make[section] = functools.partial(LocalStore, section, root / PREFIX)
    return Storage(env, make, s3)


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
    assert stored.endswith(prefix) and PREFIX in stored
    assert stored.startswith("s3://") == storage.on_s3("snapshot_storage")
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
    # The system catalog is archived too, on its own uploader's timer.
    _wait(
        "the system catalog's WAL archive", lambda: bool(storage.keys("wal_archive", "system/wal/"))
    )


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

    _wait("the checkpoint to reach quarantine storage", lambda: PREFIX in str(listed()))
    [(file, reason, location)] = listed()
    assert file == name and "unusable checkpoint" in reason and l1.name in reason
    keys = storage.keys("quarantine_storage", "tenants/1/quarantine/")
    [stamp] = {k.split("/")[3] for k in keys}
    base = f"tenants/1/quarantine/{stamp}/{name}"
    assert location.endswith(base)
    assert location.startswith("s3://") == storage.on_s3("quarantine_storage")
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
    """Make the archive fail every put: S3 stopped (kill -9), or a local archive's
    directory replaced by a file."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self.root: Path | None = None
        if not storage.on_s3("wal_archive"):
            store = storage.make["wal_archive"]()
            assert isinstance(store, LocalStore)
            self.root = store.root
            self.aside = self.root.with_name(self.root.name + ".aside")

    def __enter__(self) -> None:
        if self.root is None:
            assert self.storage.s3 is not None
            self.storage.s3.stop()
        else:
            os.rename(self.root, self.aside)
            self.root.write_text("not a directory")

    def __exit__(self, *exc: object) -> None:
        if self.root is None:
            assert self.storage.s3 is not None
            self.storage.s3.start()
        else:
            self.root.unlink()
            os.rename(self.aside, self.root)


def test_a_restart_knows_what_is_archived(server: ServerProcess, storage: Storage) -> None:
    _fill(server, 0, 60)
    _wait("the sealed segments to be archived", lambda: _all_sealed_archived(server))
    before = storage.keys("wal_archive", "tenants/1/")
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


def _everything_archived(srv: ServerProcess) -> bool:
    """Every tenant's WAL, and the system catalog's, archived to the last record: the
    open segments are empty and every sealed one is archived."""
    with psycopg.connect(srv.dsn(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT tenant, first_lsn, last_lsn, archived FROM _system.wal ORDER BY tenant, first_lsn"
        ).fetchall()
    by_tenant: dict[str, list[tuple[int, int, bool]]] = {}
    for tenant, first, last, archived in rows:
        by_tenant.setdefault(tenant, []).append((first, last, archived))
    assert {"_system", "default", "acme"} <= set(by_tenant), by_tenant
    return all(
        segs[-1][1] < segs[-1][0] and all(a for f, last, a in segs[:-1] if last >= f)
        for segs in by_tenant.values()
    )


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
        _wait("everything to be archived", lambda: _everything_archived(srv))
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


def test_credentials_appear_nowhere(tmp_path: Path, s3_storage: Storage) -> None:
    server = _server(tmp_path, s3_storage).start()
    _fill(server, 0, 40)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        shown = [
            conn.execute("SHOW ALL").fetchall(),
            *(
                conn.execute(f"SHOW {s}.{k}").fetchall()
                for s in SECTIONS
                for k in ("access_key", "secret_key")
            ),
            *(
                conn.execute(f"SELECT * FROM _system.{v}").fetchall()
                for v in ("wal", "checkpoints", "quarantine", "backups")
            ),
        ]
        with pytest.raises(psycopg.Error) as refused:
            conn.execute("SHOW nosuch.secret_key")
    assert "********" in str(shown)
    server.stop()
    everything = server.log() + str(shown) + str(refused.value)
    for secret in (ACCESS_KEY, SECRET_KEY):
        assert secret not in everything


def test_an_unreachable_store_at_start_does_not_stop_the_server(
    tmp_path: Path, s3_storage: Storage
) -> None:
    storage = s3_storage
    assert storage.s3 is not None
    storage.s3.stop()
    srv = _server(tmp_path, storage).start()
    try:
        _fill(srv, 0, 60)  # acknowledged while S3 is down
        _wait("the view to show the error", lambda: _wal(srv)[0][4] is not None)
        assert "unreachable" in srv.log()
        storage.s3.start()
        _wait(
            "archiving to catch up",
            lambda: _all_sealed_archived(srv) and _wal(srv)[0][4] is None,
            60,
        )
        assert len(_rows(srv)) == 60
    finally:
        if not storage.s3.running:
            storage.s3.start()
        srv.kill9()


def test_refused_credentials_stop_start_up_naming_the_section(
    tmp_path: Path, seaweed: SeaweedS3, s3_bucket: str
) -> None:
    env = {
        "NODEDB_SNAPSHOT_STORAGE_ENDPOINT": seaweed.endpoint,
        "NODEDB_SNAPSHOT_STORAGE_BUCKET": s3_bucket,
        "NODEDB_SNAPSHOT_STORAGE_ACCESS_KEY": ACCESS_KEY,
        "NODEDB_SNAPSHOT_STORAGE_SECRET_KEY": "wrong-secret-for-the-test",
    }
    srv = ServerProcess(tmp_path / "data", env=env)
    with pytest.raises(RuntimeError, match=r"\[snapshot_storage\]") as e:
        srv.start()
    assert "wrong-secret-for-the-test" not in str(e.value) and ACCESS_KEY not in str(e.value)
    no_bucket = env | {"NODEDB_SNAPSHOT_STORAGE_SECRET_KEY": SECRET_KEY}
    no_bucket["NODEDB_SNAPSHOT_STORAGE_BUCKET"] = "no-such-bucket-here"
    srv = ServerProcess(tmp_path / "data2", env=no_bucket)
    with pytest.raises(RuntimeError, match=r"\[snapshot_storage\]"):
        srv.start()


def test_point_in_time_restore_from_an_s3_archive(tmp_path: Path, s3_storage: Storage) -> None:
    allowed = tmp_path / "backups"
    allowed.mkdir()
    srv = _server(tmp_path, s3_storage, NODEDB_BACKUP_ALLOWED_DIRS=str(allowed)).start()
    try:
        with psycopg.connect(srv.dsn(), autocommit=True) as su:
            su.execute("CREATE TENANT acme")
        points = []
        with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
            conn.execute("CREATE COLLECTION items")
            conn.execute(f"BACKUP TENANT acme TO '{allowed / 'acme.bak'}'")
            for i in range(30):
                conn.execute(
                    "INSERT INTO items (id, n, pad) VALUES (%s, %s, %s)",
                    (f"i{i:02d}", i, "x" * 300),
                )
                if i % 10 == 9:
                    lsn = conn.execute("SELECT current_lsn()").fetchone()[0]
                    points.append(
                        (lsn, conn.execute("SELECT id, n FROM items ORDER BY id").fetchall())
                    )
        with psycopg.connect(srv.dsn(), autocommit=True) as su:
            for lsn, rows in points:
                su.execute(f"RESTORE TENANT acme FROM '{allowed / 'acme.bak'}' UNTIL LSN {lsn}")
                with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
                    assert conn.execute("SELECT id, n FROM items ORDER BY id").fetchall() == rows
            # The restored tenant is a new one; a backup taken before still replays the
            # original's archive. One segment deleted from S3: a restore across it fails
            # and changes nothing.
            keys = [k for k in s3_storage.keys("wal_archive", "tenants/") if k.endswith(".wal")]
            original = sorted(k for k in keys if k.startswith(keys[0].rsplit("/", 2)[0]))
            s3_storage._with(
                "wal_archive", lambda store: store.delete(original[len(original) // 2])
            )
            before = points[-1][1]
            with pytest.raises(psycopg.Error) as e:
                su.execute(
                    f"RESTORE TENANT acme FROM '{allowed / 'acme.bak'}' UNTIL LSN {points[-1][0]}"
                )
            assert e.value.sqlstate == "22023"
            with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
                assert conn.execute("SELECT id, n FROM items ORDER BY id").fetchall() == before
    finally:
        srv.kill9()


def test_a_corrupted_wal_segment_goes_to_quarantine_storage(
    tmp_path: Path, storage: Storage
) -> None:
    # No archive to repair it from: the damage ends the replay, the later segment is
    # set aside, and it reaches quarantine storage with its note.
    srv = _server(tmp_path, storage, NODEDB_WAL_ARCHIVE_ENABLED="false").start()
    try:
        _fill(srv, 0, 60)
        segs = [s for s in _wal(srv) if s[2] >= s[1]]
        assert len(segs) >= 3
        srv.kill9()
        wal = srv.data_dir / "tenants" / "1" / "wal"
        victim, later = wal / segs[-2][0], wal / segs[-1][0]
        later_bytes = later.read_bytes()
        data = bytearray(victim.read_bytes())
        data[-3] ^= 0xFF  # the segment's last record
        victim.write_bytes(bytes(data))
        srv.start()
        survivors = len(_rows(srv))
        assert 0 < survivors < 60  # everything before the damage, nothing after

        def listed() -> list[tuple[object, ...]]:
            with psycopg.connect(srv.dsn(), autocommit=True) as conn:
                return conn.execute(
                    "SELECT file, reason, location FROM _system.quarantine"
                ).fetchall()

        _wait("the segment to reach quarantine storage", lambda: PREFIX in str(listed()))
        [(file, reason, location)] = listed()
        assert file == later.name and f"follows damage in {victim.name}" in reason
        keys = storage.keys("quarantine_storage", "tenants/1/quarantine/")
        [key] = [k for k in keys if k.endswith(later.name)]
        assert location.endswith(key)
        assert storage.get("quarantine_storage", key) == later_bytes, "its exact bytes"
        note = json.loads(storage.get("quarantine_storage", key + ".json"))
        assert note["file"] == later.name and note["tenant"] == "default"
    finally:
        srv.kill9()
