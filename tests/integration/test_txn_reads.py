"""Reads inside a transaction see its own writes in every engine, and others do not."""

from __future__ import annotations

import time
from collections.abc import Iterator

import loro
import psycopg
import pytest

from tests.serverproc import ServerProcess


@pytest.fixture
def conns(shared_server: ServerProcess) -> Iterator[tuple[psycopg.Connection, psycopg.Connection]]:
    """A connection in psycopg's default mode (implicit BEGIN) and an autocommit one."""
    with (
        psycopg.connect(shared_server.dsn()) as txn,
        psycopg.connect(shared_server.dsn(), autocommit=True) as other,
    ):
        yield txn, other


def _search(conn: psycopg.Connection, coll: str, q: list[float], k: int) -> list[str]:
    rows = conn.execute(f"SEARCH {coll} USING VECTOR(emb, %s, %s)", (q, k)).fetchall()
    return [r[0] for r in rows]


def _by_distance(conn: psycopg.Connection, coll: str, q: list[float]) -> list[str]:
    sql = f"SELECT id, vector_distance(emb, %s) AS d FROM {coll} ORDER BY d"
    return [r[0] for r in conn.execute(sql, (q,)).fetchall()]


def test_vector_search_sees_own_inserts_updates_and_deletes(conns) -> None:
    txn, other = conns
    other.execute("CREATE COLLECTION docs")
    other.execute("CREATE VECTOR INDEX idx_docs ON docs FIELD emb METRIC l2 DIM 2")
    other.execute(
        "INSERT INTO docs (id, emb) VALUES ('a', ARRAY[1.0, 0.0]), ('b', ARRAY[5.0, 0.0])"
    )
    other.execute("INSERT INTO docs (id, emb) VALUES ('c', ARRAY[9.0, 0.0])")
    txn.execute("INSERT INTO docs (id, emb) VALUES ('new', ARRAY[0.0, 0.0])")
    txn.execute("DELETE FROM docs WHERE id = 'a'")
    txn.execute("UPDATE docs SET emb = ARRAY[0.5, 0.0] WHERE id = 'c'")
    for ask in (
        lambda c: _search(c, "docs", [0.0, 0.0], 3),
        lambda c: _by_distance(c, "docs", [0.0, 0.0]),
    ):
        assert ask(txn) == ["new", "c", "b"]
        assert ask(other) == ["a", "b", "c"]
    row = txn.execute("SEARCH docs USING VECTOR(emb, ARRAY[0.5, 0.0], 1)").fetchone()
    assert row == ("c", 0.0)
    txn.rollback()
    assert _search(txn, "docs", [0.0, 0.0], 3) == ["a", "b", "c"]
    txn.execute("INSERT INTO docs (id, emb) VALUES ('new', ARRAY[0.0, 0.0])")
    txn.execute("DELETE FROM docs WHERE id = 'a'")
    txn.commit()
    assert _search(other, "docs", [0.0, 0.0], 3) == ["new", "b", "c"]


def test_graph_reads_see_own_edge_writes(conns) -> None:
    txn, other = conns
    other.execute("GRAPH INSERT EDGE IN 'net' FROM 'a' TO 'b' TYPE 'k'")
    txn.execute("GRAPH INSERT EDGE IN 'net' FROM 'b' TO 'c' TYPE 'k' PROPERTIES { w: 2 }")
    txn.execute("GRAPH INSERT EDGE IN 'net' FROM 'x' TO 'y' TYPE 'k'")
    assert txn.execute("GRAPH NEIGHBORS OF 'b' IN 'net'").fetchall() == [("c", "k", {"w": 2})]
    assert txn.execute("GRAPH TRAVERSE FROM 'a' IN 'net' DEPTH 5").fetchall() == [
        ("a", 0),
        ("b", 1),
        ("c", 2),
    ]
    assert txn.execute("GRAPH PATH FROM 'a' TO 'c' IN 'net' MAX_DEPTH 5").fetchall() == [
        (0, "a"),
        (1, "b"),
        (2, "c"),
    ]
    assert txn.execute("GRAPH ALGO WCC ON net").fetchall() == [
        ("a", 0),
        ("b", 0),
        ("c", 0),
        ("x", 1),
        ("y", 1),
    ]
    assert len(txn.execute("GRAPH ALGO PAGERANK ON net").fetchall()) == 5
    assert other.execute("GRAPH NEIGHBORS OF 'b' IN 'net'").fetchall() == []
    # An edge this transaction inserted can be deleted in it, and then is gone.
    assert txn.execute("GRAPH DELETE EDGE IN 'net' FROM 'x' TO 'y' TYPE 'k'").statusmessage == (
        "GRAPH DELETE EDGE 1"
    )
    txn.execute("GRAPH DELETE EDGE IN 'net' FROM 'a' TO 'b' TYPE 'k'")
    assert txn.execute("GRAPH NEIGHBORS OF 'a' IN 'net'").fetchall() == []
    assert txn.execute("GRAPH DELETE EDGE IN 'net' FROM 'a' TO 'b' TYPE 'k'").statusmessage == (
        "GRAPH DELETE EDGE 0"
    )
    assert other.execute("GRAPH NEIGHBORS OF 'a' IN 'net'").fetchall() == [("b", "k", {})]
    txn.commit()
    assert other.execute("GRAPH ALGO WCC ON net").fetchall() == [("b", 0), ("c", 0)]


def test_crdt_state_sees_own_updates(conns) -> None:
    txn, other = conns
    other.execute("CREATE COLLECTION pads")
    doc = loro.LoroDoc()
    doc.get_text("body").insert(0, "hello")
    doc.commit()
    first = bytes(doc.export(loro.ExportMode.Snapshot()))
    version = doc.oplog_vv
    other.execute("SELECT crdt_apply('pads', 'p1', %s)", (first,))
    doc.get_text("body").insert(5, " world")
    doc.commit()
    txn.execute(
        "SELECT crdt_apply('pads', 'p1', %s)",
        (bytes(doc.export(loro.ExportMode.Updates(version))),),
    )

    def body(conn: psycopg.Connection) -> str:
        state = conn.execute("SELECT crdt_state('pads', 'p1')").fetchone()[0]
        merged = loro.LoroDoc()
        merged.import_(state)
        return str(merged.get_text("body").to_string())

    assert body(txn) == "hello world"
    assert body(other) == "hello"
    txn.commit()
    assert body(other) == "hello world"


def test_timeseries_select_sees_own_rows(conns) -> None:
    txn, other = conns
    other.execute("CREATE TIMESERIES temps")
    other.execute("INSERT INTO temps (ts, host, c) VALUES ('2026-01-01T00:00:00Z', 'h1', 1.0)")
    txn.execute(
        "INSERT INTO temps (ts, host, c, extra) VALUES ('2026-01-01T05:00:00Z', 'h2', 3.0, 'x')"
    )
    assert txn.execute("SELECT host, c FROM temps ORDER BY ts").fetchall() == [
        ("h1", 1.0),
        ("h2", 3.0),
    ]
    assert txn.execute("SELECT count(*), sum(c) FROM temps").fetchone() == (2, 4.0)
    assert txn.execute("SELECT extra FROM temps WHERE ts > '2026-01-01T01:00:00Z'").fetchall() == [
        ("x",)
    ]
    assert [c.name for c in txn.execute("SELECT * FROM temps").description] == [
        "ts",
        "host",
        "c",
        "extra",
    ]
    assert other.execute("SELECT count(*) FROM temps").fetchone() == (1,)
    txn.commit()
    assert other.execute("SELECT count(*) FROM temps").fetchone() == (2,)


def test_key_value_ttl_of_own_rows(conns) -> None:
    txn, other = conns
    other.execute("CREATE COLLECTION sess TYPE KEY_VALUE (key TEXT PRIMARY KEY, v INT8)")
    txn.execute("INSERT INTO sess { key: 'short', v: 1, ttl: 0.3 }")
    txn.execute("INSERT INTO sess { key: 'kept', v: 1, ttl: 1.5 }")
    txn.execute("UPDATE sess SET v = 2 WHERE key = 'kept'")
    assert txn.execute("SELECT v FROM sess WHERE key = 'short'").fetchall() == [(1,)]
    time.sleep(0.5)
    assert txn.execute("SELECT v FROM sess WHERE key = 'short'").fetchall() == []
    assert txn.execute("SELECT key, v FROM sess").fetchall() == [("kept", 2)]
    txn.commit()
    assert other.execute("SELECT v FROM sess WHERE key = 'kept'").fetchall() == [(2,)]
    time.sleep(1.2)  # the UPDATE in the same transaction kept the TTL of the INSERT
    assert other.execute("SELECT v FROM sess WHERE key = 'kept'").fetchall() == []
