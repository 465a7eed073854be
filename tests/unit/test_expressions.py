"""Expressions evaluated as PostgreSQL 15 evaluates them (expected values from psql)."""

from __future__ import annotations

import datetime as dt

import pytest

from nodedb_server.errors import DBError
from nodedb_server.sql import ast
from nodedb_server.sql.expr import Ctx
from nodedb_server.sql.parse import parse_one


def value(sql: str, row: dict | None = None, params: list | None = None):  # type: ignore[no-untyped-def, type-arg]
    stmt = parse_one(f"SELECT {sql}")
    assert isinstance(stmt, ast.Select)
    return stmt.items[0].expr.eval(row or {}, Ctx(params=params or []))


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("7 / 2", 3),
        ("-7 / 2", -3),
        ("7 % -3", 1),
        ("7.0 / 2", 3.5),
        ("'ab' || 'cd'", "abcd"),
        ("lower('AbC')", "abc"),
        ("upper('abc')", "ABC"),
        ("length('héllo')", 5),
        ("abs(-4)", 4),
        ("coalesce(NULL, NULL, 'x')", "x"),
        ("NULL = NULL", None),
        ("NULL IS NULL", True),
        ("1 IS NOT NULL", True),
        ("NULL AND false", False),
        ("NULL AND true", None),
        ("NULL OR true", True),
        ("NULL OR false", None),
        ("NOT NULL", None),
        ("2 IN (1, 2)", True),
        ("3 IN (1, 2)", False),
        ("3 IN (1, NULL)", None),
        ("3 NOT IN (1, NULL)", None),
        ("2 BETWEEN 1 AND 3", True),
        ("'abc' LIKE 'a%'", True),
        ("'abc' LIKE 'A%'", False),
        ("'abc' ILIKE 'A%'", True),
        ("'a_c' LIKE 'a\\_c'", True),
        ("'42'::int + 1", 43),
        ("CAST('2.5' AS float8)", 2.5),
        ("'true'::bool", True),
        ("1 < 2", True),
        ("'b' > 'a'", True),
    ],
)
def test_constant_expressions(sql: str, expected: object) -> None:
    got = value(sql)
    assert got == expected and type(got) is type(expected), (sql, got)


def test_fields_and_parameters() -> None:
    row = {"n": 4, "name": "ada", "doc": {"a": {"b": [10, 20]}}}
    assert value("n * 2", row) == 8
    assert value("missing", row) is None
    assert value("n > $1", row, [3]) is True
    assert value("doc_get(doc, '$.a.b[1]')", row) == "20"
    assert value("name || '!'", row) == "ada!"


def test_time_bucket_aligns_to_the_epoch() -> None:
    got = value("time_bucket('1 hour', '2026-03-01T10:42:00Z'::timestamptz)")
    assert got == dt.datetime(2026, 3, 1, 10, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("sql", "sqlstate"),
    [
        ("1 / 0", "22012"),
        ("'x'::int", "22P02"),
        ("time_bucket('1 hour')", "42883"),
        ("crdt_state('c')", "42883"),
        ("doc_get('{}', '$.a', 3)", "42883"),
        ("no_such_function(1)", "42883"),
    ],
)
def test_errors_carry_postgresqls_sqlstate(sql: str, sqlstate: str) -> None:
    with pytest.raises(DBError) as err:
        value(sql)
    assert err.value.sqlstate == sqlstate, (sql, err.value.message)
