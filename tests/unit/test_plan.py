"""Which plan a statement gets, by its WHERE and the collection's indexes (no sockets)."""

from __future__ import annotations

import pytest

from nodedb_server.engines.document import DocumentCollection
from nodedb_server.engines.timeseries import TimeseriesCollection
from nodedb_server.errors import UndefinedTable
from nodedb_server.sql import ast
from nodedb_server.sql.parse import parse_one
from nodedb_server.sql.plan import (
    Aggregate,
    Filter,
    Limit,
    NoSource,
    PartitionScan,
    Project,
    RowsAccess,
    Sort,
    ViewScan,
    plan_select,
    plan_write,
)


@pytest.fixture
def collections():  # type: ignore[no-untyped-def]
    docs = DocumentCollection("docs")
    docs.add_index("idx_docs_n", "n")
    docs.add_index("idx_docs_city", "city")
    engines = {"docs": docs, "m": TimeseriesCollection("m", "ts", {})}

    def lookup(name: str):  # type: ignore[no-untyped-def]
        if name not in engines:
            raise UndefinedTable(f'collection "{name}" does not exist')
        return engines[name]

    return lookup


def kinds(plan) -> list[str]:  # type: ignore[no-untyped-def]
    return [type(step).__name__ for step in plan.steps()]


def select(sql: str, lookup) -> object:  # type: ignore[no-untyped-def]
    stmt = parse_one(sql)
    assert isinstance(stmt, ast.Select)
    return plan_select(stmt, lookup)


@pytest.mark.parametrize(
    ("where", "access", "probed"),
    [
        ("id = 'a'", "key", None),
        ("'a' = id", "key", None),
        ("id = $1", "key", None),
        ("id IN ('a', 'b')", "key", None),
        ("id = 'a' AND n > 3", "key", None),
        ("n = 3", "index", ["n"]),
        ("n > 3 AND n <= 9", "index", ["n"]),
        ("3 < n", "index", ["n"]),
        ("n IN (1, 2)", "index", ["n"]),
        ("n = 3 AND city = 'x'", "index", ["n", "city"]),
        ("other = 3", "scan", None),
        ("n = 3 OR city = 'x'", "scan", None),
        ("n + 1 = 3", "scan", None),
        ("id > 'a'", "scan", None),
    ],
)
def test_the_access_step_follows_the_where(collections, where, access, probed) -> None:  # type: ignore[no-untyped-def]
    plan = select(f"SELECT * FROM docs WHERE {where}", collections)
    assert kinds(plan) == ["RowsAccess", "Filter", "Project"]
    leaf = plan.leaf
    assert isinstance(leaf, RowsAccess) and leaf.access.kind == access
    if probed is not None:
        assert [p.field for p in leaf.access.probes] == probed


def test_a_range_on_one_field_is_one_probe_with_both_bounds(collections) -> None:  # type: ignore[no-untyped-def]
    plan = select("SELECT * FROM docs WHERE n >= 3 AND n < 9", collections)
    (probe,) = plan.leaf.access.probes
    assert probe.field == "n" and probe.low is not None and probe.high is not None
    assert probe.low_inclusive and not probe.high_inclusive


def test_steps_appear_as_the_statement_needs_them(collections) -> None:  # type: ignore[no-untyped-def]
    assert kinds(select("SELECT * FROM docs", collections)) == ["RowsAccess", "Project"]
    assert kinds(select("SELECT city, count(*) FROM docs GROUP BY city", collections)) == [
        "RowsAccess",
        "Aggregate",
        "Project",
    ]
    full = select("SELECT n FROM docs WHERE n > 1 ORDER BY n DESC LIMIT 5 OFFSET 2", collections)
    assert kinds(full) == ["RowsAccess", "Filter", "Project", "Sort", "Limit"]
    assert isinstance(full.filter, Filter) and isinstance(full.sort, Sort)
    assert isinstance(full.limit, Limit) and isinstance(full.project, Project)
    assert full.aggregate is None
    assert isinstance(select("SELECT max(n) FROM docs", collections).aggregate, Aggregate)


def test_sources_other_than_row_collections(collections) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(select("SELECT 1", collections).leaf, NoSource)
    view = select("SELECT * FROM _system.wal WHERE bytes > 0", collections)
    assert isinstance(view.leaf, ViewScan) and kinds(view)[:2] == ["ViewScan", "Filter"]
    ts = select("SELECT * FROM m WHERE ts > '2026-01-01'", collections)
    assert isinstance(ts.leaf, PartitionScan)
    assert ts.filter is not None and ts.filter.columnar
    with pytest.raises(UndefinedTable):
        select("SELECT * FROM missing", collections)


def test_a_plan_is_kept_until_the_indexes_change(collections) -> None:  # type: ignore[no-untyped-def]
    stmt = parse_one("SELECT * FROM docs WHERE n = 3")
    assert isinstance(stmt, ast.Select)
    first = plan_select(stmt, collections)
    assert plan_select(stmt, collections) is first
    collections("docs").drop_index("n")
    again = plan_select(stmt, collections)
    assert again is not first and again.leaf.access.kind == "scan"


def test_update_and_delete_plan_their_rows_only(collections) -> None:  # type: ignore[no-untyped-def]
    for sql in ("UPDATE docs SET x = 1 WHERE n = 3", "DELETE FROM docs WHERE n = 3"):
        stmt = parse_one(sql)
        assert isinstance(stmt, ast.Update | ast.Delete)
        plan = plan_write(stmt, collections)
        assert kinds(plan) == ["RowsAccess", "Filter"] and plan.leaf.access.kind == "index"
