"""The pg_catalog evaluator, on the queries drivers send and on the SQL it claims to run."""

from __future__ import annotations

from asyncpg.introspection import INTRO_LOOKUP_TYPES

from nodedb_server import types as t
from nodedb_server.sql import catalog_query as cq


def _run(sql: str, params: list | None = None) -> tuple[list, list]:
    q = cq.Query(cq.parse(sql))
    return q.run(params or [], q.param_types())


def test_asyncpg_type_introspection_answers_like_postgresql() -> None:
    q = cq.Query(cq.parse(INTRO_LOOKUP_TYPES))
    assert q.param_types() == [t.OID_ARRAY]
    columns, rows = q.run([[t.FLOAT4_ARRAY]], q.param_types())
    names = [n for n, _ in columns]
    got = [dict(zip(names, r, strict=True)) for r in rows]
    # Deepest first: the element type, then the array type pointing at it.
    assert [(r["name"], r["elemtype"], r["depth"], r["elemtype_name"]) for r in got] == [
        ("float4", 0, 1, "-"),
        ("_float4", t.FLOAT4, 0, "real"),  # 700::regtype::text, as PostgreSQL prints it
    ]
    assert dict(columns)["attrtypoids"] == t.OID_ARRAY and dict(columns)["depth"] == t.INT4


def test_joins_left_joins_and_recursive_ctes() -> None:
    _, rows = _run(
        "SELECT t.typname, n.nspname FROM pg_type t JOIN pg_namespace n "
        "ON n.oid = t.typnamespace WHERE t.oid = 25"
    )
    assert rows == [("text", "pg_catalog")]
    _, rows = _run(
        "SELECT t.typname, e.typname FROM pg_type t LEFT JOIN pg_type e "
        "ON (t.typelem != 0 AND e.oid = t.typelem) WHERE t.oid = any($1::oid[]) "
        "ORDER BY 1",
        [[25, 1009]],
    )
    assert rows == [("_text", "text"), ("text", None)]
    _, rows = _run(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5) "
        "SELECT i FROM n ORDER BY i DESC LIMIT 2"
    )
    assert rows == [(5,), (4,)]
    _, rows = _run(
        "SELECT (SELECT array_agg(t.oid ORDER BY t.oid DESC) FROM pg_type t "
        "WHERE t.typname IN ('int8', 'text')) AS oids, "
        "CASE WHEN 1 = 2 THEN 'x' ELSE COALESCE(NULL, 'y') END AS c"
    )
    assert rows == [([t.TEXT, t.INT8], "y")]
