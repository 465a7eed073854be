"""The catalog queries real clients send, answered as PostgreSQL answers them.

tests/fixtures/catalog/{psql,sqlalchemy,jdbc}.sql hold the statements psql's describe
commands, SQLAlchemy's inspector (and pandas on top of it) and PostgreSQL's JDBC driver
sent to a real PostgreSQL, taken from its statement log by
tests/fixtures/catalog/capture.py (which says how to regenerate them). Each statement runs,
with its logged parameters and over the protocol the client used, against the server and
against a real PostgreSQL holding the same schema, as role nodedb in database nodedb on
both. The answers must have the same column names, column type OIDs and number of rows,
and the same rows, leaving out only values that are naturally server-specific (below).

Statements run through psycopg's libpq binding (psycopg.pq), so values are compared
exactly as each server put them on the wire (text format), and parameters go as text of
unspecified type, on both servers alike.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import pq

from bench.pg import Postgres
from tests.fixtures.catalog.capture import OID_PLACEHOLDER, ROLE, SCHEMA, SEPARATOR
from tests.serverproc import ServerProcess

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "catalog"
CLIENTS = ("psql", "sqlalchemy", "jdbc")

# Column types whose values are object identifiers or moments, which differ between any
# two servers: left out of the row comparison (their names and type OIDs still count).
SERVER_SPECIFIC_TYPES = {
    24: "regproc",
    26: "oid",
    28: "xid",
    30: "oidvector",
    194: "pg_node_tree",  # a stored expression tree, which embeds oids
    1028: "_oid",
    1114: "timestamp",
    1184: "timestamptz",
    2202: "regprocedure",
    2203: "regoper",
    2204: "regoperator",
    2205: "regclass",
    2206: "regtype",
    4089: "regnamespace",
    4096: "regrole",
}
# Columns, by name, whose values are naturally server-specific whatever their type.
SERVER_SPECIFIC_COLUMNS = {
    "version",  # select pg_catalog.version(): the server's own version string
    "cardinality",  # JDBC getIndexInfo: ci.reltuples, PostgreSQL's planner estimate
    "pages",  # JDBC getIndexInfo: ci.relpages, the index's size on disk
}

# Statements whose rows cannot match PostgreSQL's, by design or because the PostgreSQL
# cluster holds more than the schema: their column names and types must still match,
# and every row the server answers must be one of PostgreSQL's rows.
ROWS_DIFFER: dict[str, str] = {
    # \du: the cluster also has its bootstrap superuser "postgres"
    "psql-29-a8a110": "PostgreSQL's bootstrap role postgres",
    # \l: the cluster also has databases postgres, template0 and template1
    "psql-30-eb5e2a": "PostgreSQL's databases postgres, template0, template1",
    # pg_opclass WHERE NOT opcdefault: PostgreSQL's 58 built-in non-default operator
    # classes (text_pattern_ops, ...), which the server does not emulate
    "sqlalchemy-12-1efe66": "PostgreSQL's built-in non-default operator classes",
    # getTables(null, "%", null) lists every relation, PostgreSQL's own system tables,
    # views and indexes in pg_catalog and information_schema too
    "jdbc-02-c0c589": "PostgreSQL's system relations",
}

# Statements that cannot answer as PostgreSQL does at all, with the reason. The test still
# runs them, and asserts the server answers them or refuses them with an SQLSTATE, and
# keeps serving. (None so far: every captured statement reads what the server emulates.)
KNOWN_DIFFERENCES: dict[str, str] = {}

# Statements the server does not yet answer as PostgreSQL does: strict xfail, so that a
# fix shows up as XPASS and the entry must go. Found by this test; see each reason.
FAILING: dict[str, str] = {}


@dataclass(frozen=True)
class Captured:
    client: str
    number: int
    sources: str
    protocol: str
    params: tuple[str | None, ...] | None
    sql: str

    @property
    def id(self) -> str:
        digest = hashlib.sha1(f"{self.sql}\0{self.params}".encode()).hexdigest()[:6]
        return f"{self.client}-{self.number:02d}-{digest}"


def load(client: str) -> list[Captured]:
    text = (FIXTURES / f"{client}.sql").read_text()
    out: list[Captured] = []
    for chunk in text.split(f"\n{SEPARATOR}\n")[1:]:
        meta: dict[str, str] = {}
        lines = chunk.split("\n")
        while lines and lines[0].startswith("-- "):
            key, _, value = lines.pop(0)[3:].partition(": ")
            meta[key] = value
        params = json.loads(meta["params"]) if "params" in meta else None
        out.append(
            Captured(
                client,
                len(out) + 1,
                meta["source"],
                meta["protocol"],
                None if params is None else tuple(params),
                "\n".join(lines).strip(),
            )
        )
    return out


CAPTURED = [c for client in CLIENTS for c in load(client)]


def _param(c: Captured) -> object:
    marks = []
    if c.id in FAILING:
        marks.append(pytest.mark.xfail(strict=True, reason=FAILING[c.id]))
    return pytest.param(c, id=c.id, marks=marks)


@dataclass
class Answer:
    names: list[str]
    types: list[int]
    rows: list[tuple[str | None, ...]]


@dataclass
class Refusal:
    sqlstate: str | None
    message: str


_OID = re.compile(re.escape(OID_PLACEHOLDER).replace(re.escape("%s"), r"([\w.]+)"))


def _with_oids(text: str, oids: dict[str, str]) -> str:
    """{oid:public.people} -> the relation's oid on this server (0 if it has none)."""
    return _OID.sub(lambda m: oids.get(m.group(1), "0"), text)


def _connect(dsn: str) -> pq.PGconn:
    conn = pq.PGconn.connect(dsn.encode())
    assert conn.status == pq.ConnStatus.OK, conn.get_error_message()
    return conn


def run(dsn: str, c: Captured, oids: dict[str, str]) -> Answer | Refusal:
    conn = _connect(dsn)
    try:
        sql = _with_oids(c.sql, oids).encode()
        if c.protocol == "simple":
            res = conn.exec_(sql)
        else:
            values = [None if p is None else _with_oids(p, oids).encode() for p in c.params or ()]
            res = conn.exec_params(sql, values)
        if res.status == pq.ExecStatus.FATAL_ERROR:
            state = res.error_field(pq.DiagnosticField.SQLSTATE)
            return Refusal(state.decode() if state else None, res.get_error_message())
        assert res.status == pq.ExecStatus.TUPLES_OK, (res.status, res.get_error_message())
        names = [(res.fname(i) or b"").decode() for i in range(res.nfields)]
        types = [res.ftype(i) for i in range(res.nfields)]
        rows = []
        for r in range(res.ntuples):
            row = []
            for i in range(res.nfields):
                v = res.get_value(r, i)
                row.append(None if v is None else v.decode())
            rows.append(tuple(row))
        return Answer(names, types, rows)
    finally:
        conn.finish()


def _relation_oids(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.oid::text, n.nspname || '.' || c.relname FROM pg_catalog.pg_class c"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public'"
        ).fetchall()
    return {name: oid for oid, name in rows}


def _ordered(sql: str) -> bool:
    """Whether the statement ends with an ORDER BY of its own (outside parentheses and
    string literals), so that the order of its rows is defined."""
    depth, last = 0, None
    for m in re.finditer(r"'(?:[^']|'')*'|\(|\)|\border\s+by\b", sql, re.I):
        tok = m.group(0)
        if tok == "(":
            depth += 1
        elif tok == ")":
            depth -= 1
        elif tok[0] != "'" and depth == 0:
            last = m.start()
    return last is not None


def _comparable(a: Answer) -> list[tuple[str | None, ...]]:
    keep = [
        i
        for i, (name, oid) in enumerate(zip(a.names, a.types, strict=True))
        if oid not in SERVER_SPECIFIC_TYPES and name.lower() not in SERVER_SPECIFIC_COLUMNS
    ]
    return [tuple(row[i] for i in keep) for row in a.rows]


@dataclass
class Servers:
    ours: str
    pg: str
    our_oids: dict[str, str]
    pg_oids: dict[str, str]


@pytest.fixture(scope="module")
def servers(shared_server: ServerProcess, postgres: Postgres) -> Iterator[Servers]:
    with psycopg.connect(postgres.dsn(), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS nodedb WITH (FORCE)")
        admin.execute("DROP ROLE IF EXISTS nodedb")
        admin.execute(ROLE)
        admin.execute("CREATE DATABASE nodedb OWNER nodedb")
    pg_dsn = f"host=127.0.0.1 port={postgres.port} user=nodedb dbname=nodedb"
    for dsn in (shared_server.dsn(), pg_dsn):
        with psycopg.connect(dsn, autocommit=True) as conn:
            for statement in SCHEMA:
                conn.execute(statement)
    try:
        yield Servers(
            shared_server.dsn(), pg_dsn, _relation_oids(shared_server.dsn()), _relation_oids(pg_dsn)
        )
    finally:
        with psycopg.connect(postgres.dsn(), autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS nodedb WITH (FORCE)")


def _still_serving(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("captured", [_param(c) for c in CAPTURED])
def test_captured_query_answers_as_postgresql(servers: Servers, captured: Captured) -> None:
    want = run(servers.pg, captured, servers.pg_oids)
    assert isinstance(want, Answer), f"PostgreSQL refused its own client's query: {want}"
    got = run(servers.ours, captured, servers.our_oids)
    _still_serving(servers.ours)
    if captured.id in KNOWN_DIFFERENCES:
        if isinstance(got, Refusal):
            assert got.sqlstate and len(got.sqlstate) == 5, got
        return
    assert isinstance(got, Answer), f"{captured.sources}: {got.sqlstate} {got.message}"
    assert got.names == want.names
    assert got.types == want.types
    ours, theirs = _comparable(got), _comparable(want)
    if captured.id in ROWS_DIFFER:
        assert not Counter(ours) - Counter(theirs), "rows PostgreSQL does not have"
        return
    assert len(got.rows) == len(want.rows), (got.rows, want.rows)
    if not _ordered(captured.sql):
        ours, theirs = sorted(ours, key=repr), sorted(theirs, key=repr)
    assert ours == theirs


@pytest.mark.parametrize("captured", [pytest.param(c, id=c.id) for c in CAPTURED])
def test_captured_query_leaves_the_server_serving(servers: Servers, captured: Captured) -> None:
    """Every statement, the failing ones too (without xfail): the server answers it or
    refuses it with an SQLSTATE, and goes on serving."""
    got = run(servers.ours, captured, servers.our_oids)
    if isinstance(got, Refusal):
        assert got.sqlstate and len(got.sqlstate) == 5, got
    _still_serving(servers.ours)


def test_every_client_has_captured_queries() -> None:
    for client in CLIENTS:
        assert load(client), f"tests/fixtures/catalog/{client}.sql holds no statements"


def test_listed_differences_and_failures_name_captured_queries() -> None:
    ids = {c.id for c in CAPTURED}
    assert not set(KNOWN_DIFFERENCES) - ids
    assert not set(ROWS_DIFFER) - ids
    assert not set(FAILING) - ids
    assert not set(KNOWN_DIFFERENCES) & (set(FAILING) | set(ROWS_DIFFER))
