"""Graph edges: the statements of SQL.md, their result shapes, and durability."""

from __future__ import annotations

import asyncpg
import psycopg
import pytest

from tests.serverproc import ServerProcess

EDGES = [
    ("alice", "bob", "knows", "{ since: 2020 }"),
    ("bob", "carol", "knows", "'{\"since\": 2021}'"),
    ("alice", "dave", "likes", None),
    ("dave", "erin", "knows", None),
    ("x", "y", "knows", None),
]


def _load(conn: psycopg.Connection) -> None:
    for src, dst, label, props in EDGES:
        tail = f" PROPERTIES {props}" if props else ""
        conn.execute(f"GRAPH INSERT EDGE IN 'social' FROM '{src}' TO '{dst}' TYPE '{label}'{tail}")


def _answers(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    q = lambda sql: [tuple(r) for r in conn.execute(sql).fetchall()]  # noqa: E731
    return {
        "out": q("GRAPH NEIGHBORS OF 'alice' IN 'social'"),
        "label": q("GRAPH NEIGHBORS OF 'alice' IN 'social' LABEL 'knows' DIRECTION out"),
        "in": q("GRAPH NEIGHBORS OF 'carol' IN 'social' DIRECTION in"),
        "both": sorted(q("GRAPH NEIGHBORS OF 'bob' IN 'social' DIRECTION both")),
        "traverse": q("GRAPH TRAVERSE FROM 'alice' IN 'social' DEPTH 2"),
        "path": q("GRAPH PATH FROM 'alice' TO 'erin' IN 'social' MAX_DEPTH 5"),
        "nopath": q("GRAPH PATH FROM 'erin' TO 'alice' IN 'social' MAX_DEPTH 5"),
        "short": q("GRAPH PATH FROM 'alice' TO 'erin' IN 'social' MAX_DEPTH 1"),
        "wcc": q("GRAPH ALGO WCC ON social"),
        "rank": q("GRAPH ALGO PAGERANK ON social DAMPING 0.85 ITERATIONS 30"),
    }


def test_graph_statements_and_result_shapes(server: ServerProcess) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        _load(conn)
        a = _answers(conn)
        assert a["out"] == [("bob", "knows", {"since": 2020}), ("dave", "likes", {})]
        assert a["label"] == [("bob", "knows", {"since": 2020})]
        assert a["in"] == [("bob", "knows", {"since": 2021})]
        assert a["both"] == [
            ("alice", "knows", {"since": 2020}),
            ("carol", "knows", {"since": 2021}),
        ]
        assert a["traverse"] == [("alice", 0), ("bob", 1), ("dave", 1), ("carol", 2), ("erin", 2)]
        assert a["path"] == [(0, "alice"), (1, "dave"), (2, "erin")]
        assert a["nopath"] == [] and a["short"] == []
        comps = {}
        for node, comp in a["wcc"]:
            comps.setdefault(comp, set()).add(node)
        assert sorted(map(sorted, comps.values())) == [
            ["alice", "bob", "carol", "dave", "erin"],
            ["x", "y"],
        ]
        ranks = dict(a["rank"])
        assert abs(sum(ranks.values()) - 1.0) < 1e-9
        assert ranks["carol"] > ranks["bob"] > ranks["alice"]
        # The edge collection was created on first use, as SQL.md says.
        assert conn.execute("SHOW COLLECTIONS").fetchone()[:2] == ("social", "document")
        conn.execute("GRAPH DELETE EDGE IN 'social' FROM 'alice' TO 'bob' TYPE 'knows'")
        assert conn.execute("GRAPH NEIGHBORS OF 'alice' IN 'social'").fetchall() == [
            ("dave", "likes", {})
        ]
        with pytest.raises(psycopg.errors.SyntaxError):
            conn.execute("GRAPH NEIGHBORS OF 'alice' IN 'social' DIRECTION sideways")
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("GRAPH ALGO WCC ON nothing_here")


def test_pagerank_of_a_cycle_is_uniform(server: ServerProcess) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for a, b in (("n1", "n2"), ("n2", "n3"), ("n3", "n4"), ("n4", "n1")):
            conn.execute(f"GRAPH INSERT EDGE IN 'ring' FROM '{a}' TO '{b}' TYPE 'next'")
        ranks = [r[1] for r in conn.execute("GRAPH ALGO PAGERANK ON ring").fetchall()]
        assert len(ranks) == 4 and all(abs(r - 0.25) < 1e-9 for r in ranks)


def test_edges_survive_kill9_and_checkpoint(server: ServerProcess) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        _load(conn)
        before = _answers(conn)
    server.kill9()
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert _answers(conn) == before
        conn.execute("CHECKPOINT")
        conn.execute("GRAPH INSERT EDGE IN 'social' FROM 'erin' TO 'alice' TYPE 'knows'")
    server.kill9()
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        after = _answers(conn)
    assert after["nopath"] == [(0, "erin"), (1, "alice")]
    assert after["out"] == before["out"]


def test_edges_over_a_key_value_collection_replay_after_kill9(server: ServerProcess) -> None:
    """Edges may overlay any collection; over a KV table whose keys have a TTL they once
    reached its expiry map and failed."""
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION sessions TYPE KEY_VALUE (key TEXT PRIMARY KEY, v INT)")
        conn.execute("INSERT INTO sessions { key: 'a', v: 1, ttl: 3600 }")
        conn.execute("GRAPH INSERT EDGE IN 'sessions' FROM 'a' TO 'b' TYPE 'next'")
        conn.execute("GRAPH INSERT EDGE IN 'sessions' FROM 'b' TO 'c' TYPE 'next'")
        conn.execute("GRAPH DELETE EDGE IN 'sessions' FROM 'b' TO 'c' TYPE 'next'")
    server.kill9()
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        hops = conn.execute("GRAPH TRAVERSE FROM 'a' IN 'sessions' DEPTH 3").fetchall()
        assert [tuple(h)[0] for h in hops] == ["a", "b"]
        assert conn.execute("SELECT v FROM sessions WHERE key = 'a'").fetchall() == [(1,)]


def test_edge_writes_in_a_transaction_are_atomic(server: ServerProcess) -> None:
    with psycopg.connect(server.dsn()) as conn:
        conn.execute("GRAPH INSERT EDGE IN 'g' FROM 'a' TO 'b' TYPE 't'")
        conn.commit()
        conn.execute("GRAPH INSERT EDGE IN 'g' FROM 'b' TO 'c' TYPE 't'")
        conn.rollback()
        assert conn.execute("GRAPH TRAVERSE FROM 'a' IN 'g' DEPTH 5").fetchall() == [
            ("a", 0),
            ("b", 1),
        ]


async def test_graph_parameters_from_asyncpg(server: ServerProcess) -> None:
    conn = await asyncpg.connect(host="127.0.0.1", port=server.port, user="nodedb")
    try:
        await conn.execute("GRAPH INSERT EDGE IN 'g' FROM $1 TO $2 TYPE $3", "p", "q", "r")
        rows = await conn.fetch("GRAPH TRAVERSE FROM $1 IN 'g' DEPTH $2", "p", 3)
        assert [tuple(r) for r in rows] == [("p", 0), ("q", 1)]
    finally:
        await conn.close()
