"""Secondary indexes: used for equality, IN and ranges, and consistent through every change."""

from __future__ import annotations

import random
import time

import psycopg
import pytest

from tests.serverproc import ServerProcess

N = 20_000


def _bulk(conn: psycopg.Connection, coll: str, docs: list[dict]) -> None:
    for i in range(0, len(docs), 1000):
        body = ", ".join(
            f"{{ id: '{d['id']}', age: {d['age']}, city: '{d['city']}' }}"
            for d in docs[i : i + 1000]
        )
        conn.execute(f"INSERT INTO {coll} [ {body} ]")


def _plan(conn: psycopg.Connection, sql: str, params: tuple = ()) -> list[str]:
    return [r[0] for r in conn.execute("EXPLAIN ANALYZE " + sql, params).fetchall()]


@pytest.fixture(scope="module")
def people(shared_server: ServerProcess) -> list[dict]:
    rng = random.Random(3)
    docs = [
        {"id": f"p{i:06d}", "age": rng.randrange(0, 100), "city": rng.choice("ABCDEFGHIJ")}
        for i in range(N)
    ]
    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION people")
        _bulk(conn, "people", docs)
        conn.execute("CREATE INDEX idx_age ON people FIELDS age")
        conn.execute("CREATE INDEX ON people FIELDS city")
    return docs


@pytest.mark.parametrize(
    ("where", "params", "expect"),
    [
        ("age = %s", (42,), lambda d: d["age"] == 42),
        ("age IN (1, 2, 3)", (), lambda d: d["age"] in (1, 2, 3)),
        ("age >= %s AND age < %s", (10, 13), lambda d: 10 <= d["age"] < 13),
        ("age > 97", (), lambda d: d["age"] > 97),
        ("city = 'C' AND age <= 5", (), lambda d: d["city"] == "C" and d["age"] <= 5),
        ("age BETWEEN 50 AND 51", (), lambda d: 50 <= d["age"] <= 51),
    ],
)
def test_indexed_queries_answer_like_a_scan_without_touching_every_row(
    shared_server: ServerProcess, people: list[dict], where: str, params: tuple, expect
) -> None:
    sql = f"SELECT id FROM people WHERE {where}"
    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        got = sorted(r[0] for r in conn.execute(sql, params).fetchall())
        plan = _plan(conn, sql, params)
    assert got == sorted(d["id"] for d in people if expect(d))
    assert plan[0].startswith("Index scan on people using ")
    examined = int(plan[-1].split("Rows examined: ")[1].split(",")[0])
    assert examined <= max(len(got), 1) * 12 and examined < N // 5, plan


def test_explain_names_the_index(shared_server: ServerProcess, people: list[dict]) -> None:
    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        plan = [
            r[0] for r in conn.execute("EXPLAIN SELECT * FROM people WHERE city = 'A'").fetchall()
        ]
        assert plan[0] == "Index scan on people using idx_people_city (city, equality, 1 value)"
        plan = [
            r[0]
            for r in conn.execute("EXPLAIN SELECT * FROM people WHERE id = 'p000001'").fetchall()
        ]
        assert plan[0].startswith("Point lookup on people by primary key id")
        describe = dict((f, idx) for f, _, idx in conn.execute("DESCRIBE people").fetchall())
        assert describe == {"id": True, "age": True, "city": True}


def test_index_follows_updates_deletes_transactions_ttl_and_restarts(server: ServerProcess) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION docs")
        conn.execute("CREATE INDEX idx_score ON docs FIELDS score")
        for i in range(30):
            conn.execute("INSERT INTO docs { id: %s, score: %s }", (f"d{i}", i % 10))
        conn.execute("UPDATE docs SET score = 100 WHERE id = 'd3'")
        conn.execute("DELETE FROM docs WHERE score = 5")
        conn.execute("CREATE COLLECTION sessions TYPE KEY_VALUE (key TEXT PRIMARY KEY, level INT8)")
        conn.execute("CREATE INDEX idx_level ON sessions FIELDS level")
        conn.execute("INSERT INTO sessions { key: 'short', level: 7, ttl: 1 }")
        conn.execute("INSERT INTO sessions { key: 'long', level: 7 }")

    def check(conn: psycopg.Connection) -> None:
        ids = lambda sql: sorted(r[0] for r in conn.execute(sql).fetchall())  # noqa: E731
        assert ids("SELECT id FROM docs WHERE score = 100") == ["d3"]
        assert ids("SELECT id FROM docs WHERE score = 3") == ["d13", "d23"]
        assert ids("SELECT id FROM docs WHERE score = 5") == []
        assert ids("SELECT id FROM docs WHERE score >= 9") == ["d19", "d29", "d3", "d9"]
        assert ids("SELECT key FROM sessions WHERE level = 7") == ["long"]

    with psycopg.connect(server.dsn()) as conn:
        conn.execute("INSERT INTO docs { id: 'tx', score: 100 }")
        assert sorted(r[0] for r in conn.execute("SELECT id FROM docs WHERE score = 100")) == [
            "d3",
            "tx",
        ]
        conn.rollback()
    time.sleep(1.2)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        check(conn)
    server.kill9()
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        check(conn)
        conn.execute("CHECKPOINT")
    server.kill9()
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        check(conn)
        conn.execute("DROP INDEX idx_score")
        plan = conn.execute("EXPLAIN SELECT id FROM docs WHERE score = 3").fetchone()
        assert plan is not None and plan[0].startswith("Full scan")
        assert sorted(r[0] for r in conn.execute("SELECT id FROM docs WHERE score = 3")) == [
            "d13",
            "d23",
        ]
