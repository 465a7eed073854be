"""Everyday relational SQL, answered as PostgreSQL answers it.

The same rows go into a real PostgreSQL cluster (typed tables) and into the
server (schemaless collections); each query runs on both through psycopg, and
the column names and rows must match.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from bench.pg import Postgres
from tests.serverproc import ServerProcess

UTC = dt.UTC
USERS = [
    ("u1", "Alice", 30, "oslo"),
    ("u2", "Bob", 25, "bergen"),
    ("u3", "Carol", None, "oslo"),
    ("u4", "dave", 41, None),
]
ORDERS = [
    ("o1", "u1", 120.5, dt.datetime(2024, 3, 5, 10, 30, tzinfo=UTC)),
    ("o2", "u1", 30.0, dt.datetime(2024, 3, 5, 23, 59, tzinfo=UTC)),
    ("o3", "u2", 300.0, dt.datetime(2024, 4, 1, 0, 0, tzinfo=UTC)),
    ("o4", "zz", 5.25, dt.datetime(2023, 12, 31, 8, 0, tzinfo=UTC)),
    ("o5", "u2", 300.0, None),
]

QUERIES = [
    "SELECT * FROM unnest(ARRAY['a', 'b'])",
    "SELECT u FROM unnest(ARRAY[3, 1, 2]) AS u ORDER BY 1",
    "SELECT x.v FROM unnest(ARRAY[1, 2]) AS x(v)",
    # joins
    "SELECT o.id, u.name FROM orders o JOIN users u ON u.id = o.customer ORDER BY o.id",
    "SELECT u.name, o.id FROM users u LEFT JOIN orders o ON o.customer = u.id ORDER BY 1, 2",
    "SELECT u.name, o.id FROM users u RIGHT JOIN orders o ON o.customer = u.id ORDER BY 2",
    "SELECT u.id, o.id FROM users u FULL JOIN orders o ON o.customer = u.id ORDER BY 1, 2",
    "SELECT a.id, b.id FROM orders a JOIN orders b ON a.total < b.total ORDER BY 1, 2",
    "SELECT u.name, count(o.id), sum(o.total) FROM users u LEFT JOIN orders o"
    " ON o.customer = u.id GROUP BY u.name HAVING count(o.id) > 0 ORDER BY 1",
    "SELECT count(*) FROM users, orders",
    # distinct, case, strings
    "SELECT DISTINCT customer FROM orders ORDER BY customer",
    "SELECT DISTINCT city FROM users ORDER BY city DESC",
    "SELECT id, CASE WHEN total > 100 THEN 'big' WHEN total > 10 THEN 'mid' ELSE 'small' END"
    " FROM orders ORDER BY id",
    "SELECT name || '!' AS shout, lower(name), upper(name), length(name) FROM users ORDER BY 1",
    "SELECT substr(name, 2, 3), replace(name, 'a', 'o'), trim('  ' || name || ' '),"
    " concat(name, '-', age) FROM users ORDER BY id",
    "SELECT coalesce(age, 0), nullif(city, 'oslo'), greatest(age, 28), least(age, 28)"
    " FROM users ORDER BY id",
    # math
    "SELECT id, abs(total - 100), floor(total), ceil(total), round(total) FROM orders ORDER BY id",
    "SELECT age / 2, age % 7, -age FROM users WHERE age IS NOT NULL ORDER BY id",
    # dates
    "SELECT id, date_trunc('day', at), extract(year FROM at), to_char(at, 'YYYY-MM-DD HH24:MI')"
    " FROM orders WHERE at IS NOT NULL ORDER BY id",
    "SELECT date_trunc('month', at) AS m, count(*) FROM orders WHERE at IS NOT NULL"
    " GROUP BY 1 ORDER BY 1",
    # subqueries
    "SELECT id, name FROM users WHERE id IN (SELECT customer FROM orders) ORDER BY id",
    "SELECT id FROM users u WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer = u.id)"
    " ORDER BY id",
    "SELECT id, (SELECT max(total) FROM orders o WHERE o.customer = u.id) FROM users u ORDER BY id",
    "SELECT id FROM orders WHERE total > (SELECT avg(total) FROM orders) ORDER BY id",
    # CTEs and set operations
    "WITH big AS (SELECT * FROM orders WHERE total > 100) SELECT customer, COUNT(*) FROM big"
    " GROUP BY customer ORDER BY customer",
    "WITH a AS (SELECT customer AS c FROM orders), b AS (SELECT c FROM a WHERE c LIKE 'u%')"
    " SELECT c, count(*) FROM b GROUP BY c ORDER BY c",
    "SELECT customer FROM orders UNION SELECT id FROM users ORDER BY 1",
    "SELECT customer FROM orders UNION ALL SELECT id FROM users ORDER BY 1",
    "SELECT customer FROM orders INTERSECT SELECT id FROM users ORDER BY 1",
    "SELECT id FROM users EXCEPT SELECT customer FROM orders ORDER BY 1",
    # windows
    "SELECT id, customer, row_number() OVER (PARTITION BY customer ORDER BY id) FROM orders"
    " ORDER BY id",
    "SELECT id, rank() OVER (ORDER BY total DESC) FROM orders ORDER BY id",
    # limits over all of it, NULL order
    "SELECT u.name, o.total FROM users u JOIN orders o ON o.customer = u.id"
    " ORDER BY o.total DESC, o.id LIMIT 2 OFFSET 1",
    "SELECT DISTINCT age FROM users ORDER BY age DESC",
    "SELECT DISTINCT age FROM users ORDER BY age",
    # output aliases named by ORDER BY and GROUP BY, and a * beside other columns
    "SELECT DISTINCT city AS c FROM users ORDER BY c",
    "SELECT u.name AS who, count(*) AS c FROM users u JOIN orders o ON o.customer = u.id"
    " GROUP BY who ORDER BY c DESC, who",
    "SELECT u.*, o.id AS oid FROM users u JOIN orders o ON o.customer = u.id ORDER BY 5",
]


def _norm(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 9)
    if hasattr(v, "is_finite"):  # Decimal from PostgreSQL's numeric
        return round(float(v), 9)
    return v


def _answer(conn: psycopg.Connection[Any], sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    cur = conn.execute(sql)
    names = [d.name for d in cur.description or []]
    return names, [tuple(_norm(v) for v in row) for row in cur.fetchall()]


@pytest.fixture(scope="module")
def pair(
    shared_server: ServerProcess, postgres: Postgres
) -> Iterator[tuple[psycopg.Connection[Any], psycopg.Connection[Any]]]:
    pg = psycopg.connect(postgres.dsn(), autocommit=True)
    pg.execute("SET TIME ZONE 'UTC'")
    pg.execute("DROP TABLE IF EXISTS users, orders")
    pg.execute("CREATE TABLE users (id text PRIMARY KEY, name text, age int8, city text)")
    pg.execute(
        "CREATE TABLE orders (id text PRIMARY KEY, customer text, total float8, at timestamptz)"
    )
    ours = psycopg.connect(shared_server.dsn(), autocommit=True)
    ours.execute("CREATE COLLECTION users")
    ours.execute("CREATE COLLECTION orders")
    for conn in (pg, ours):
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO users (id, name, age, city) VALUES (%s, %s, %s, %s)", USERS
            )
            cur.executemany(
                "INSERT INTO orders (id, customer, total, at) VALUES (%s, %s, %s, %s)", ORDERS
            )
    try:
        yield pg, ours
    finally:
        pg.close()
        ours.close()


@pytest.mark.parametrize("sql", QUERIES)
def test_answers_as_postgres_does(pair: tuple[psycopg.Connection[Any], ...], sql: str) -> None:
    pg, ours = pair
    expected = _answer(pg, sql)
    assert _answer(ours, sql) == expected


def test_parameters_take_the_compared_fields_type(
    pair: tuple[psycopg.Connection[Any], ...], shared_server: ServerProcess
) -> None:
    """Untyped parameters (pg8000 sends every one as text with no type) compared with an
    int field are read as int8, so the comparison is numeric, not textual."""
    import pg8000.native

    conn = pg8000.native.Connection(
        "nodedb", host="127.0.0.1", port=shared_server.port, database="nodedb"
    )
    try:
        rows = conn.run(
            "SELECT u.id, count(o.id) FROM users u LEFT JOIN orders o ON o.customer = u.id"
            " WHERE u.age > :a GROUP BY u.id ORDER BY u.id",
            a="9",
        )
        assert rows == [["u1", 2], ["u2", 2], ["u4", 0]]
    finally:
        conn.close()


def test_transaction_sees_its_own_writes_and_rollback_drops_them(
    pair: tuple[psycopg.Connection[Any], ...], shared_server: ServerProcess
) -> None:
    with psycopg.connect(shared_server.dsn()) as conn:
        conn.execute("INSERT INTO users (id, name, age) VALUES ('u9', 'Zed', 50)")
        inside = conn.execute(
            "SELECT DISTINCT name FROM users WHERE age > 40 ORDER BY name"
        ).fetchall()
        assert inside == [("Zed",), ("dave",)]
        with psycopg.connect(shared_server.dsn()) as other:  # not yet committed
            assert other.execute(
                "SELECT DISTINCT name FROM users WHERE age > 40 ORDER BY name"
            ).fetchall() == [("dave",)]
        conn.rollback()
        assert conn.execute(
            "SELECT DISTINCT name FROM users WHERE age > 40 ORDER BY name"
        ).fetchall() == [("dave",)]


@pytest.mark.parametrize(
    ("sql", "sqlstate"),
    [
        ("SELECT nosuch FROM users u JOIN orders o ON true", "42703"),
        ("SELECT * FROM nosuch n JOIN users u ON true", "42P01"),
        ("SELECT DISTINCT age / 0 FROM users", "22012"),
        ("SELECT nosuch_fn(id) FROM users u JOIN orders o ON true", "42883"),
        ("SELECT DISTINCT id FROM users WHERE", "42601"),
        ("SELECT id FROM users u JOIN orders o ON true", "42702"),
        ("SELECT x.id FROM _system.wal x JOIN users u ON true", "0A000"),
    ],
)
def test_errors_keep_their_sqlstates(
    pair: tuple[psycopg.Connection[Any], ...], sql: str, sqlstate: str
) -> None:
    _, ours = pair
    with pytest.raises(psycopg.Error) as err:
        ours.execute(sql)
    assert err.value.sqlstate == sqlstate, err.value
    assert ours.execute("SELECT 1").fetchone() == (1,)


def test_asyncpg_compares_an_int_parameter_with_an_int_field_uncast(
    pair: tuple[psycopg.Connection[Any], ...], shared_server: ServerProcess
) -> None:
    """asyncpg sends values in the types the server describes: a parameter compared with a
    field that has held only integers is described int8, so a Python int needs no cast,
    on the native path and on DataFusion's."""
    import asyncio

    import asyncpg

    async def run() -> tuple[list[Any], list[Any]]:
        conn = await asyncpg.connect(f"postgresql://nodedb@127.0.0.1:{shared_server.port}/nodedb")
        try:
            native = await conn.fetch("SELECT id FROM users WHERE age > $1 ORDER BY id", 26)
            joined = await conn.fetch(
                "SELECT DISTINCT u.id FROM users u JOIN orders o ON o.customer = u.id"
                " WHERE u.age > $1 AND o.total >= $2 ORDER BY 1",
                26,
                100.0,
            )
            return [r[0] for r in native], [r[0] for r in joined]
        finally:
            await conn.close()

    native, joined = asyncio.run(run())
    assert native == ["u1", "u4"]
    assert joined == ["u1"]


def test_truncate_empties_collections_at_once_and_rolls_back(
    shared_server: ServerProcess,
) -> None:
    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION trunc_a")
        conn.execute("CREATE COLLECTION trunc_b TYPE KEY_VALUE (key TEXT PRIMARY KEY)")
        conn.execute("CREATE INDEX idx_trunc_n ON trunc_a FIELDS n")
        conn.execute("INSERT INTO trunc_a (id, n) VALUES ('a1', 1), ('a2', 2)")
        conn.execute("INSERT INTO trunc_b { key: 'k1', v: 1 }")
    with psycopg.connect(shared_server.dsn()) as conn:  # inside a transaction, rolled back
        conn.execute("TRUNCATE trunc_a")
        assert conn.execute("SELECT count(*) FROM trunc_a").fetchone() == (0,)
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM trunc_a").fetchone() == (2,)
    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        cur = conn.execute("TRUNCATE TABLE trunc_a, trunc_b RESTART IDENTITY")
        assert cur.statusmessage == "TRUNCATE TABLE"
        assert conn.execute("SELECT count(*) FROM trunc_a").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM trunc_b").fetchone() == (0,)
        conn.execute("INSERT INTO trunc_a (id, n) VALUES ('a1', 5)")  # the index still works
        assert conn.execute("SELECT id FROM trunc_a WHERE n = 5").fetchall() == [("a1",)]
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("TRUNCATE trunc_a, nosuch")
        assert conn.execute("SELECT count(*) FROM trunc_a").fetchone() == (1,)
