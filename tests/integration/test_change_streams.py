"""Change streams and consumer groups against a real server, across kill -9."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.serverproc import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("streams") / "data").start()
    yield srv
    srv.kill9()


def tenant(srv: ServerProcess, name: str) -> None:
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        su.execute(f"CREATE TENANT {name}")


def conn(srv: ServerProcess, name: str) -> psycopg.Connection[Any]:
    return psycopg.connect(srv.dsn(database=name), autocommit=True)


def read(
    c: psycopg.Connection[Any], stream: str, group: str, limit: int | None = None
) -> list[tuple[Any, ...]]:
    sql = f"SELECT * FROM STREAM {stream} CONSUMER GROUP {group}"
    return c.execute(sql + (f" LIMIT {limit}" if limit else "")).fetchall()


def changes(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """(op, collection, id, new_value) of each row read."""
    return [(r[1], r[2], r[3], r[4]) for r in rows]


def refused(c: psycopg.Connection[Any], sql: str) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as err:
        c.execute(sql)
    return err.value


def test_streams_and_groups_are_created_shown_and_dropped(server: ServerProcess) -> None:
    tenant(server, "ddl")
    with conn(server, "ddl") as c:
        c.execute("CREATE COLLECTION orders")
        assert refused(c, "CREATE CHANGE STREAM s ON nothing").sqlstate == "42P01"
        c.execute("CREATE CHANGE STREAM s ON orders")
        c.execute("CREATE CHANGE STREAM k ON orders WITH (compaction = 'key')")
        assert refused(c, "CREATE CHANGE STREAM s ON orders").sqlstate == "42710"
        c.execute("CREATE CHANGE STREAM IF NOT EXISTS s ON orders")
        assert (
            refused(c, "CREATE CHANGE STREAM x ON orders WITH (compaction = 'all')").sqlstate
            == "22023"
        )
        assert refused(c, "CREATE CONSUMER GROUP g ON nope").sqlstate == "42704"
        c.execute("CREATE CONSUMER GROUP g ON s")
        c.execute("CREATE CONSUMER GROUP h ON s")
        assert refused(c, "CREATE CONSUMER GROUP g ON s").sqlstate == "42710"
        shown = c.execute("SHOW CHANGE STREAMS").fetchall()
        assert [(r[0], r[1], r[2], r[4]) for r in shown] == [
            ("k", "orders", "key", 0),
            ("s", "orders", None, 2),
        ]
        c.execute("DROP CONSUMER GROUP h ON s")
        assert refused(c, "DROP CONSUMER GROUP h ON s").sqlstate == "42704"
        c.execute("DROP CHANGE STREAM s")  # and its group g
        c.execute("CREATE CHANGE STREAM s ON orders")
        assert refused(c, "SELECT * FROM STREAM s CONSUMER GROUP g").sqlstate == "42704"
        # Not a plain COMMIT: outside a transaction block that would only warn.
        assert refused(c, "COMMIT OFFSETS ON s").sqlstate == "42601"


def test_every_change_survives_kill9_and_is_read_in_order(server: ServerProcess) -> None:
    tenant(server, "crash")
    with conn(server, "crash") as c:
        c.execute("CREATE COLLECTION orders")
        c.execute("CREATE COLLECTION other")
        c.execute("CREATE CHANGE STREAM s ON orders")
        c.execute("CREATE CONSUMER GROUP g ON s")
        c.execute("INSERT INTO orders {id: 'a', n: 1}")
        c.execute("INSERT INTO other {id: 'x', n: 1}")
        c.execute("INSERT INTO orders {id: 'b', n: 2}")
        c.execute("UPDATE orders SET n = 10 WHERE id = 'a'")
        c.execute("UPSERT INTO orders {id: 'b', n: 20}")  # replaces a row: an UPDATE
        c.execute("UPSERT INTO orders {id: 'c', n: 3}")  # a new row: an INSERT
        c.execute("DELETE FROM orders WHERE id = 'a'")
        with c.transaction():
            c.execute("INSERT INTO orders {id: 'd', n: 4}")
            c.execute("INSERT INTO orders {id: 'e', n: 5}")
    server.kill9()
    server.start()
    expected = [
        ("INSERT", "orders", "a", {"id": "a", "n": 1}),
        ("INSERT", "orders", "b", {"id": "b", "n": 2}),
        ("UPDATE", "orders", "a", {"id": "a", "n": 10}),
        ("UPDATE", "orders", "b", {"id": "b", "n": 20}),
        ("INSERT", "orders", "c", {"id": "c", "n": 3}),
        ("DELETE", "orders", "a", None),
        ("INSERT", "orders", "d", {"id": "d", "n": 4}),
        ("INSERT", "orders", "e", {"id": "e", "n": 5}),
    ]
    with conn(server, "crash") as c:
        rows = read(c, "s", "g")
        assert changes(rows) == expected
        lsns = [r[0] for r in rows]
        assert lsns == sorted(lsns) and lsns[-1] == lsns[-2]  # one transaction, one LSN
        assert all(r[5] is None and r[6] is not None for r in rows)
        # Nothing committed: the same changes again, in any session.
        assert changes(read(c, "s", "g")) == expected


def test_committed_changes_are_not_read_again_after_kill9(server: ServerProcess) -> None:
    tenant(server, "half")
    with conn(server, "half") as c:
        c.execute("CREATE COLLECTION orders")
        c.execute("CREATE CHANGE STREAM s ON orders")
        c.execute("CREATE CONSUMER GROUP g ON s")
        c.execute("CREATE CONSUMER GROUP other ON s")
        for i in range(10):
            c.execute(f"INSERT INTO orders {{id: 'r{i}', n: {i}}}")
        first = read(c, "s", "g", limit=5)
        assert [r[3] for r in first] == [f"r{i}" for i in range(5)]
        assert refused(c, "COMMIT OFFSETS ON s CONSUMER GROUP other").sqlstate == "55000"
        c.execute("COMMIT OFFSETS ON s CONSUMER GROUP g")
    server.kill9()
    server.start()
    with conn(server, "half") as c:
        rest = read(c, "s", "g")
        assert [r[3] for r in rest] == [f"r{i}" for i in range(5, 10)]
        (view,) = view_rows(c, "g")
        assert view["stream"] == "s" and view["committed_lsn"] == first[-1][0]
        assert view["lag_records"] == view["head_lsn"] - first[-1][0] > 0
        assert view["lag_seconds"] > 0 and not view["lagging"] and view["evicted"] == 0
        # The other group has its own offset: everything.
        assert len(read(c, "s", "other")) == 10
        # An explicit older offset changes nothing, with a NOTICE.
        notices: list[str] = []
        c.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        c.execute(f"COMMIT OFFSET AT {first[0][0]} ON s CONSUMER GROUP g")
        assert notices and "never move backwards" in notices[0]
        assert [r[3] for r in read(c, "s", "g")] == [f"r{i}" for i in range(5, 10)]
        assert refused(c, "COMMIT OFFSET AT 999999 ON s CONSUMER GROUP g").sqlstate == "22023"
        c.execute(f"COMMIT OFFSET AT {rest[-1][0]} ON s CONSUMER GROUP g")
        assert read(c, "s", "g") == []


def test_a_read_never_splits_a_transaction(server: ServerProcess) -> None:
    tenant(server, "whole")
    with conn(server, "whole") as c:
        c.execute("CREATE COLLECTION t")
        c.execute("CREATE CHANGE STREAM s ON t")
        c.execute("CREATE CONSUMER GROUP g ON s")
        with c.transaction():
            for i in range(3):
                c.execute(f"INSERT INTO t {{id: 'a{i}'}}")
        c.execute("INSERT INTO t {id: 'b'}")
        got = read(c, "s", "g", limit=1)
        assert [r[3] for r in got] == ["a0", "a1", "a2"]  # one transaction, whole
        c.execute("COMMIT OFFSETS ON s CONSUMER GROUP g")
        assert [r[3] for r in read(c, "s", "g", limit=1)] == ["b"]


def test_compaction_by_key_keeps_the_newest_change_per_id(server: ServerProcess) -> None:
    tenant(server, "compact")
    with conn(server, "compact") as c:
        c.execute("CREATE COLLECTION t")
        c.execute("CREATE CHANGE STREAM s ON t WITH (compaction = 'key')")
        c.execute("CREATE CONSUMER GROUP g ON s")
        c.execute("INSERT INTO t {id: 'a', n: 1}")
        c.execute("INSERT INTO t {id: 'b', n: 1}")
        c.execute("UPDATE t SET n = 2 WHERE id = 'a'")
        c.execute("DELETE FROM t WHERE id = 'b'")
        assert changes(read(c, "s", "g")) == [
            ("UPDATE", "t", "a", {"id": "a", "n": 2}),
            ("DELETE", "t", "b", None),
        ]


def view_rows(c: psycopg.Connection[Any], group: str) -> list[dict[str, Any]]:
    cur = c.execute(
        'SELECT * FROM _system.change_streams WHERE tenant = %s AND "group" = %s',
        (c.info.dbname, group),
    )
    cols = [d.name for d in cur.description or []]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def wal_bytes(data_dir: Path, tenant_id: int) -> int:
    """The tenant's WAL on disk; a segment removed while it is summed counts nothing."""
    total = 0
    for p in (data_dir / "tenants" / str(tenant_id) / "wal").glob("*.wal"):
        with contextlib.suppress(FileNotFoundError):
            total += p.stat().st_size
    return total


def tenant_id(srv: ServerProcess, name: str) -> int:
    with psycopg.connect(srv.dsn(), autocommit=True) as su:
        cur = su.execute("SHOW TENANTS")
        cols = [d.name for d in cur.description or []]
        for row in cur.fetchall():
            d = dict(zip(cols, row, strict=True))
            if d["name"] == name:
                return int(d["id"])
    raise AssertionError(name)


def test_wal_a_group_needs_outlives_checkpoints_up_to_the_cap(tmp_path: Path) -> None:
    srv = ServerProcess(
        tmp_path / "data",
        env={
            "NODEDB_WAL_SEGMENT_BYTES": "4096",
            "NODEDB_EVENTS_MAX_RETAINED_BYTES": "40000",
        },
    ).start()
    try:
        tenant(srv, "lag")
        tid = tenant_id(srv, "lag")
        pad = "x" * 300
        with conn(srv, "lag") as c:
            c.execute("CREATE COLLECTION t")
            c.execute("CREATE CHANGE STREAM s ON t")
            c.execute("CREATE CONSUMER GROUP g ON s")
            for i in range(30):
                c.execute(f"INSERT INTO t {{id: 'a{i}', pad: '{pad}'}}")
            c.execute("CHECKPOINT")
            # Under the cap: a checkpoint keeps what the group has not consumed.
            assert len(read(c, "s", "g")) == 30
            c.execute("COMMIT OFFSETS ON s CONSUMER GROUP g")
            for i in range(300):
                c.execute(f"INSERT INTO t {{id: 'b{i}', pad: '{pad}'}}")
            # Two checkpoints: the older one kept needs no WAL before it any more.
            c.execute("CHECKPOINT")
            c.execute("INSERT INTO t {id: 'c'}")
            c.execute("CHECKPOINT")
            # Past the cap: the oldest WAL went and the WAL stays bounded, by the time
            # CHECKPOINT returns (even when the uploader's prune did the deleting).
            assert wal_bytes(srv.data_dir, tid) < 40000 + 3 * 4096
        # Once what memory holds is gone too (a restart), the view flags the group and
        # its next read says what was evicted (never a silent gap), then goes on.
        srv.stop()
        srv.start()
        with conn(srv, "lag") as c:
            (view,) = view_rows(c, "g")
            assert view["lagging"] and view["evicted"] > 0, view
            assert view["oldest_available_lsn"] == view["committed_lsn"] + 1 + view["evicted"]
            notices: list[str] = []
            c.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
            rows = read(c, "s", "g")
            assert len(notices) == 1 and f"{view['evicted']} records" in notices[0], notices
            assert f"LSN {view['oldest_available_lsn']}" in notices[0]
            assert rows and rows[0][0] >= view["oldest_available_lsn"]
            c.execute("COMMIT OFFSETS ON s CONSUMER GROUP g")
            while rows := read(c, "s", "g"):
                c.execute("COMMIT OFFSETS ON s CONSUMER GROUP g")
            (view,) = view_rows(c, "g")
            assert not view["lagging"] and view["evicted"] == 0 and view["lag_records"] == 0
    finally:
        srv.stop()


def test_kill9_during_a_write_burst_loses_no_acknowledged_change(server: ServerProcess) -> None:
    tenant(server, "burst")
    with conn(server, "burst") as c:
        c.execute("CREATE COLLECTION t")
        c.execute("CREATE CHANGE STREAM s ON t")
        c.execute("CREATE CONSUMER GROUP g ON s")
    acked: list[str] = []
    read_ids: list[str] = []
    committed: list[int] = []
    stop = threading.Event()
    failures: list[AssertionError] = []

    def write() -> None:
        try:
            with conn(server, "burst") as w:
                for i in range(100_000):
                    w.execute(f"INSERT INTO t {{id: 'r{i:06d}'}}")
                    acked.append(f"r{i:06d}")
        except psycopg.Error:
            return  # the kill

    def consume() -> None:
        try:
            with conn(server, "burst") as r:
                while not stop.is_set():
                    rows = read(r, "s", "g", limit=50)
                    lsns = [row[0] for row in rows]
                    assert lsns == sorted(lsns)
                    if committed and lsns:
                        assert lsns[0] > committed[-1]
                    read_ids.extend(row[3] for row in rows)
                    if rows:
                        r.execute("COMMIT OFFSETS ON s CONSUMER GROUP g")
                        committed.append(lsns[-1])
        except psycopg.Error:
            return
        except AssertionError as e:
            failures.append(e)

    threads = [threading.Thread(target=write), threading.Thread(target=consume)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 10
    while len(acked) < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill9()
    stop.set()
    for th in threads:
        th.join()
    assert not failures, failures
    server.start()
    with conn(server, "burst") as c:
        while rows := read(c, "s", "g"):
            if committed:
                assert rows[0][0] > committed[-1]  # offsets never went back
            read_ids.extend(r[3] for r in rows)
            c.execute("COMMIT OFFSETS ON s CONSUMER GROUP g")
            committed.append(rows[-1][0])
        total = c.execute("SELECT count(*) FROM t").fetchone()[0]
    assert len(acked) >= 300
    seen = set(read_ids)
    assert all(a in seen for a in acked), "an acknowledged write was not delivered"
    assert len(seen) == total  # and nothing that is not there
    # In order: ids were written in order, so first deliveries come in order.
    firsts = list(dict.fromkeys(read_ids))
    assert firsts == sorted(firsts)


def test_backup_and_restore_keep_streams_groups_and_offsets(tmp_path: Path) -> None:
    allowed = tmp_path / "backups"
    allowed.mkdir()
    srv = ServerProcess(tmp_path / "data", env={"NODEDB_BACKUP_ALLOWED_DIRS": str(allowed)}).start()
    try:
        tenant(srv, "kept")
        with conn(srv, "kept") as c:
            c.execute("CREATE COLLECTION t")
            c.execute("CREATE CHANGE STREAM s ON t WITH (compaction = 'key')")
            c.execute("CREATE CONSUMER GROUP g ON s")
            c.execute("CREATE CONSUMER GROUP idle ON s")
            c.execute("INSERT INTO t {id: 'a'}")
            read(c, "s", "g")
            c.execute("COMMIT OFFSETS ON s CONSUMER GROUP g")
            (g_before,) = view_rows(c, "g")
            c.execute("INSERT INTO t {id: 'b'}")  # after the offset: in the backup's data
            c.execute(f"BACKUP TENANT kept TO '{allowed / 'k.bak'}'")
            c.execute("DROP CHANGE STREAM s")
        with psycopg.connect(srv.dsn(), autocommit=True) as su:
            su.execute(f"RESTORE TENANT kept FROM '{allowed / 'k.bak'}'")
        with conn(srv, "kept") as c:
            shown = c.execute("SHOW CHANGE STREAMS").fetchall()
            assert [(r[0], r[1], r[2], r[4]) for r in shown] == [("s", "t", "key", 2)]
            views = {v["group"]: v for v in view_rows(c, "g") + view_rows(c, "idle")}
            # The restored tenant has no WAL before its restore point: the offsets moved
            # there, and say from where.
            assert views["g"]["clamped_from"] == g_before["committed_lsn"]
            assert views["idle"]["clamped_from"] is not None
            assert views["g"]["committed_lsn"] > g_before["committed_lsn"]
            assert read(c, "s", "g") == []
            c.execute("INSERT INTO t {id: 'c'}")
            assert [r[3] for r in read(c, "s", "g")] == ["c"]
            assert [r[3] for r in read(c, "s", "idle")] == ["c"]
    finally:
        srv.stop()


def test_show_changes_since_an_lsn_or_a_time_needs_no_stream(server: ServerProcess) -> None:
    tenant(server, "since")
    with conn(server, "since") as c:
        c.execute("CREATE COLLECTION t")
        c.execute("CREATE COLLECTION u")
        c.execute("INSERT INTO t {id: 'a'}")
        (lsn_a,) = c.execute("SELECT current_lsn()").fetchone()
        time.sleep(0.05)
        (mid,) = c.execute("SELECT now()").fetchone()
        time.sleep(0.05)
        c.execute("INSERT INTO u {id: 'x'}")
        c.execute("INSERT INTO t {id: 'b'}")
        c.execute("DELETE FROM t WHERE id = 'a'")
        assert [(r[1], r[3]) for r in c.execute(f"SHOW CHANGES FOR t SINCE LSN {lsn_a}")] == [
            ("INSERT", "b"),
            ("DELETE", "a"),
        ]
        assert [r[3] for r in c.execute("SHOW CHANGES FOR t SINCE LSN 0 LIMIT 1")] == ["a"]
        since = c.execute(f"SHOW CHANGES FOR t SINCE '{mid.isoformat()}'").fetchall()
        assert [(r[1], r[3]) for r in since] == [("INSERT", "b"), ("DELETE", "a")]
        assert all(r[6] > mid for r in since)
        assert refused(c, "SHOW CHANGES FOR nothing SINCE LSN 0").sqlstate == "42P01"
