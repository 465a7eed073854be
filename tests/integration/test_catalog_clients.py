"""The catalog as the clients read it: psql's \\d family and SQLAlchemy's inspect(),
each over a real server and the real client, naming the collections, fields and
indexes that exist."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.serverproc import ServerProcess


@pytest.fixture(scope="module")
def catalog_server(shared_server: ServerProcess) -> ServerProcess:
    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION people")
        conn.execute(
            "INSERT INTO people (id, name, age, joined) VALUES"
            " ('p1', 'Ann', 31, '2024-01-02T03:04:05Z'::timestamptz), ('p2', 'Ben', 22, NULL)"
        )
        conn.execute("CREATE INDEX idx_people_age ON people FIELDS age")
        conn.execute("CREATE COLLECTION kv_stuff TYPE KEY_VALUE (key TEXT PRIMARY KEY, hits INT8)")
    return shared_server


def _psql(srv: ServerProcess, command: str) -> str:
    out = subprocess.run(
        [*srv.psql(), "-X", "-v", "ON_ERROR_STOP=1", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_psql_lists_tables_as_relations_in_public(catalog_server: ServerProcess) -> None:
    out = _psql(catalog_server, "\\dt")
    assert "List of relations" in out
    lines = [line.split("|") for line in out.splitlines() if "|" in line]
    rows = {cells[1].strip(): [c.strip() for c in cells] for cells in lines[1:]}
    assert rows["people"][:3] == ["public", "people", "table"]
    assert rows["kv_stuff"][:3] == ["public", "kv_stuff", "table"]


def test_psql_describes_a_collection_with_its_types_key_and_indexes(
    catalog_server: ServerProcess,
) -> None:
    out = _psql(catalog_server, "\\d people")
    assert 'Table "public.people"' in out
    columns = {
        c[0].strip(): [x.strip() for x in c]
        for c in (line.split("|") for line in out.splitlines() if line.count("|") == 4)
    }
    assert columns["id"][1:4] == ["text", "", "not null"]
    assert columns["name"][1] == "text"
    assert columns["age"][1] == "bigint"
    assert columns["joined"][1] == "timestamp with time zone"
    assert '"people_pkey" PRIMARY KEY, btree (id)' in out
    assert '"idx_people_age" btree (age)' in out


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("\\l", ["List of databases", "nodedb", "UTF8"]),
        ("\\dn", ["List of schemas", "public"]),
        ("\\du", ["List of roles", "nodedb", "Superuser"]),
        ("\\di", ["idx_people_age", "people_pkey", "kv_stuff_pkey"]),
        ("\\df", ["List of functions", "(0 rows)"]),
        ("\\d+ people", ['Table "public.people"', "extended", "Access method: heap"]),
        ("\\d idx_people_age", ['Index "public.idx_people_age"', 'for table "public.people"']),
    ],
)
def test_psql_meta_commands(
    catalog_server: ServerProcess, command: str, expected: list[str]
) -> None:
    out = _psql(catalog_server, command)
    for text in expected:
        assert text in out, out


def test_psql_describe_of_unknown_name_says_so(catalog_server: ServerProcess) -> None:
    out = subprocess.run(
        [*catalog_server.psql(), "-X", "-c", "\\d nosuch"], capture_output=True, text=True
    )
    assert 'Did not find any relation named "nosuch"' in out.stderr


def _inspect(conn: Any) -> dict[str, Any]:
    insp = sa.inspect(conn)
    return {
        "tables": sorted(insp.get_table_names()),
        "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns("people")],
        "pk": insp.get_pk_constraint("people")["constrained_columns"],
        "indexes": [(i["name"], i["column_names"]) for i in insp.get_indexes("people")],
        "has": insp.has_table("people"),
        "has_not": insp.has_table("nosuch"),
    }


EXPECTED = {
    "tables": ["kv_stuff", "people"],
    "columns": [
        ("id", "TEXT", False),
        ("name", "TEXT", True),
        ("age", "BIGINT", True),
        ("joined", "TIMESTAMP", True),
    ],
    "pk": ["id"],
    "indexes": [("idx_people_age", ["age"])],
    "has": True,
    "has_not": False,
}


@pytest.mark.parametrize("driver", ["psycopg", "pg8000"])
def test_sqlalchemy_inspects_tables_columns_keys_and_indexes(
    catalog_server: ServerProcess, driver: str
) -> None:
    engine = sa.create_engine(
        f"postgresql+{driver}://nodedb@127.0.0.1:{catalog_server.port}/nodedb"
    )
    try:
        with engine.connect() as conn:
            assert _inspect(conn) == EXPECTED
    finally:
        engine.dispose()


def test_sqlalchemy_asyncpg_inspects(catalog_server: ServerProcess) -> None:
    async def run() -> dict[str, Any]:
        engine = create_async_engine(
            f"postgresql+asyncpg://nodedb@127.0.0.1:{catalog_server.port}/nodedb"
        )
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(_inspect)
        finally:
            await engine.dispose()

    assert asyncio.run(run()) == EXPECTED


def test_sqlalchemy_reflects_a_table_and_queries_it(catalog_server: ServerProcess) -> None:
    engine = sa.create_engine(f"postgresql+psycopg://nodedb@127.0.0.1:{catalog_server.port}/nodedb")
    try:
        meta = sa.MetaData()
        people = sa.Table("people", meta, autoload_with=engine)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(people.c.name).where(people.c.age > 25).order_by(people.c.name)
            ).all()
        assert [r.name for r in rows] == ["Ann"]
    finally:
        engine.dispose()


def test_information_schema_lists_tables_and_columns(catalog_server: ServerProcess) -> None:
    with psycopg.connect(catalog_server.dsn()) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            " ORDER BY table_name"
        ).fetchall()
        assert ("people",) in tables and ("kv_stuff",) in tables
        cols = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'kv_stuff' ORDER BY ordinal_position"
        ).fetchall()
        assert cols == [("key", "text"), ("hits", "bigint")]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT unnest(current_schemas(true))",  # pgcli at start-up
        "SELECT current_schemas(false)",
        "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname !~ '^pg_' ORDER BY 1",
        "SELECT pg_catalog.pg_get_userbyid(10) IS NOT NULL",
    ],
)
def test_catalog_answers_match_postgresql(
    catalog_server: ServerProcess, postgres: Any, sql: str
) -> None:
    with psycopg.connect(postgres.dsn()) as pg, psycopg.connect(catalog_server.dsn()) as ours:
        want = pg.execute(sql)
        got = ours.execute(sql)
        assert [d.name for d in got.description or []] == [d.name for d in want.description or []]
        assert got.fetchall() == want.fetchall()
