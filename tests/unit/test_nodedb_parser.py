"""Statement text to ``ast`` statements, through ``sql.parse.parse`` and nothing else: the
examples of docs/SQL.md, the same with text after their end, and one table of texts and
the statements they must give, for every statement family."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import pytest

from nodedb_server import types as t
from nodedb_server.errors import DBError
from nodedb_server.sql import ast, catalog_query
from nodedb_server.sql.expr import ArrayExpr, Cast, Cmp, Const, Field, ObjectExpr, Param
from nodedb_server.sql.nodedb_statements import STATEMENTS
from nodedb_server.sql.parse import parse
from tests.integration.test_docs_sql import DOC, Example, examples


def plain(value: Any) -> Any:
    """A statement as nested tuples, lists and dicts, each node led by its class name:
    expression nodes compare by identity, and these compare by content."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (
            type(value).__name__,
            *(plain(getattr(value, f.name)) for f in dataclasses.fields(value)),
        )
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def parse_one(sql: str) -> ast.Statement:
    statements = parse(sql)
    assert len(statements) == 1, statements
    return statements[0]


# ---- docs/SQL.md --------------------------------------------------------------------------------


def psql_statements(script: str) -> Iterator[str]:
    """The statements of a psql script as the page writes them: each ends with ``;`` at the
    end of a line, and a COPY .. FROM STDIN is followed by its data, up to ``\\.``."""
    lines = iter(script.splitlines())
    pending: list[str] = []
    for line in lines:
        pending.append(line)
        if line.rstrip().endswith(";"):
            sql = "\n".join(pending).rstrip()[:-1]
            pending = []
            yield sql
            if re.search(r"(?i)\bfrom\s+stdin\b", sql):
                for data in lines:
                    if data == "\\.":
                        break
    assert not "".join(pending).strip(), f"no ; after {pending}"


# The statement each example must parse to, by its leading words (the longest that match).
DOC_TYPES: dict[str, type] = {
    "create collection": ast.CreateCollection,
    "create table": ast.CreateCollection,
    "alter table": ast.AddColumns,
    "drop table": ast.DropCollection,
    "create timeseries": ast.CreateCollection,
    "create index": ast.CreateIndex,
    "create vector index": ast.CreateVectorIndex,
    "create tenant": ast.CreateTenant,
    "create user": ast.CreateUser,
    "drop collection": ast.DropCollection,
    "drop index": ast.DropIndex,
    "drop tenant": ast.DropTenant,
    "undrop collection": ast.UndropCollection,
    "purge tenant": ast.PurgeTenant,
    "grant": ast.Grant,
    "insert into": ast.Insert,
    "upsert into": ast.Insert,
    "update": ast.Update,
    "delete from": ast.Delete,
    "select": ast.Select,
    "with": ast.RelationalQuery,
    "select crdt_apply(": ast.CrdtApply,
    "explain": ast.Explain,
    "search": ast.VectorSearch,
    "graph insert edge": ast.GraphEdgeWrite,
    "graph delete edge": ast.GraphEdgeWrite,
    "graph neighbors": ast.GraphQuery,
    "graph traverse": ast.GraphQuery,
    "graph path": ast.GraphQuery,
    "graph algo": ast.GraphAlgo,
    "copy": ast.CopyFrom,
    "copy (select": ast.CopyTo,
    "backup tenant": ast.BackupTenant,
    "restore tenant": ast.RestoreTenant,
    "begin": ast.Begin,
    "commit": ast.Commit,
    "rollback": ast.Rollback,
    "rollback to": ast.RollbackTo,
    "savepoint": ast.Savepoint,
    "declare": ast.DeclareCursor,
    "fetch": ast.FetchCursor,
    "move": ast.FetchCursor,
    "close": ast.CloseCursor,
    "release": ast.ReleaseSavepoint,
    "show collections": ast.ShowCollections,
    "show tenants": ast.ShowTenants,
    "show restore": ast.ShowRestoreRange,
    "show": ast.Show,
    "describe": ast.DescribeCollection,
    "set": ast.SetVar,
    "alter system": ast.AlterSystem,
    "checkpoint": ast.Checkpoint,
    "prepare": ast.Prepare,
    "execute": ast.ExecutePrepared,
    "deallocate": ast.Deallocate,
    "discard": ast.Discard,
    "truncate": ast.Truncate,
    "create change stream": ast.CreateChangeStream,
    "drop change stream": ast.DropChangeStream,
    "show change streams": ast.ShowChangeStreams,
    "create consumer group": ast.CreateConsumerGroup,
    "drop consumer group": ast.DropConsumerGroup,
    "select * from stream": ast.ReadStream,
    "commit offsets": ast.CommitOffsets,
    "commit offset": ast.CommitOffsets,
    "show changes": ast.ShowChanges,
    "listen": ast.Listen,
    "unlisten": ast.Unlisten,
    "notify": ast.Notify,
    "live select": ast.LiveSelect,
    "kill live query": ast.KillLive,
}
# The relations SQL.md says catalog queries are answered from.
CATALOG_NAMES = re.compile(
    r"\b(pg_catalog|information_schema|" + "|".join(sorted(catalog_query.NAMES)) + r")\b"
)
# What the native planner leaves to DataFusion (sql/relational.py).
RELATIONAL_WORDS = re.compile(
    r"(?is)\b(join|distinct|over|union|intersect|except|case)\b|^\s*with\b"
)
# Standard SQL, read by sqlglot; every other statement is one of NodeDB's own forms.
STANDARD = (
    ast.Select,
    ast.Update,
    ast.Delete,
    ast.CatalogQuery,
    ast.RelationalQuery,
    ast.Explain,
    ast.CrdtApply,
)


def expected_type(sql: str) -> type:
    words = " ".join(sql.lower().split())
    lead = max(
        (k for k in DOC_TYPES if words.startswith(k) and not words[len(k) : len(k) + 1].isalnum()),
        key=len,
    )
    if DOC_TYPES[lead] is ast.Select and CATALOG_NAMES.search(sql):
        return ast.CatalogQuery
    if DOC_TYPES[lead] is ast.Select and RELATIONAL_WORDS.search(sql):
        return ast.RelationalQuery
    return DOC_TYPES[lead]


def check_doc_statement(sql: str, stmt: ast.Statement) -> None:
    assert type(stmt) is expected_type(sql), (sql, stmt)
    if isinstance(stmt, ast.Insert):
        literal = re.match(r"(?is)\s*(insert|upsert)\s+into\s+\w+\s*[{\[]", sql) is not None
        assert stmt.object_form is literal, sql
        assert stmt.upsert is sql.lstrip().lower().startswith("upsert"), sql
    if isinstance(stmt, ast.Explain):
        body = re.sub(r"(?is)^\s*explain\s+(analyze\s+)?", "", sql)
        assert type(stmt.statement) is expected_type(body), sql
        assert stmt.analyze is (re.match(r"(?is)\s*explain\s+analyze\b", sql) is not None)
    if isinstance(stmt, ast.Prepare):
        body = re.split(r"(?i)\bas\b", sql, maxsplit=1)[1].strip()
        assert stmt.sql == body and type(stmt.statement) is expected_type(body), sql


DOC_BLOCKS = [(ex, list(psql_statements(ex.sql))) for ex in examples(DOC.read_text())]
DOC_STATEMENTS = [
    (ex, sql) for ex, statements in DOC_BLOCKS if ex.error is None for sql in statements
]


def test_the_page_gives_enough_statements_to_mean_something() -> None:
    assert sum(len(s) for _, s in DOC_BLOCKS) > 90
    assert len({expected_type(sql) for _, sql in DOC_STATEMENTS}) > 35


@pytest.mark.parametrize(
    ("example", "statements"), DOC_BLOCKS, ids=[f"SQL.md:{ex.line}" for ex, _ in DOC_BLOCKS]
)
def test_every_docs_example_parses_to_its_statement(
    example: Example, statements: list[str]
) -> None:
    """psql stops a block at its first error: a block marked with a code the parser raises
    must stop there, with that code; every statement before it (and every statement of any
    other block) parses to the statement its words name."""
    for sql in statements:
        try:
            stmt = parse_one(sql)
        except DBError as e:
            assert example.error is not None, f"{sql}: {e.sqlstate} {e.message}"
            assert e.sqlstate == example.error, f"{sql}: {e.sqlstate} {e.message}"
            return
        check_doc_statement(sql, stmt)
    assert example.error != "42601", f"block at line {example.line} parsed whole"


TRAILERS = (" garbage", " , x", " )")


def _ends_in_a_list(stmt: ast.Statement) -> bool:
    """A comma after these continues the statement: SET datestyle = ISO, MDY; RETURNING a, b;
    CREATE INDEX .. FIELDS a, b (refused as 0A000, one field per index); DROP TABLE a, b
    and ALTER TABLE t ADD a int, ADD b int."""
    return (
        isinstance(stmt, ast.SetVar | ast.CreateIndex | ast.AddColumns)
        or bool(isinstance(stmt, ast.Insert) and stmt.returning)
        or (isinstance(stmt, ast.DropCollection) and stmt.tag == "DROP TABLE")
    )


def _with_trailers() -> Iterator[tuple[str, str]]:
    for _, sql in DOC_STATEMENTS:
        stmt = parse_one(sql)
        if isinstance(stmt, (*STANDARD, ast.Prepare, ast.DeclareCursor)):
            continue  # sqlglot reads their end (PREPARE's and DECLARE's is a statement)
        if isinstance(stmt, ast.Insert) and not stmt.object_form:
            continue
        for trailer in TRAILERS:
            if trailer != " , x" or not _ends_in_a_list(stmt):
                yield sql, trailer


@pytest.mark.parametrize(("sql", "trailer"), list(_with_trailers()))
def test_text_after_a_nodedb_statement_is_42601(sql: str, trailer: str) -> None:
    with pytest.raises(DBError) as err:
        parse(sql + trailer)
    assert err.value.sqlstate == "42601", err.value.message
    if trailer == " garbage":  # a word no statement takes is named, wherever it comes
        assert 'near "garbage"' in err.value.message.lower(), err.value.message


# sqlglot (30.x) reads a comma after WHERE, HAVING or OFFSET as a comma join and
# ``LIMIT a, b`` as MySQL's LIMIT b OFFSET a; PostgreSQL refuses each as a syntax error.
@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM users WHERE age > 30 , x", 'syntax error at or near ","'),
        ("SELECT count(*) FROM users GROUP BY age HAVING count(*) > 1, x", 'near ","'),
        ("SELECT * FROM users OFFSET 1, x", 'syntax error at or near ","'),
        ("SELECT * FROM users LIMIT 1, 2", "LIMIT #,# syntax is not supported"),
    ],
)
def test_a_stray_comma_in_a_select_is_42601(sql: str, message: str) -> None:
    with pytest.raises(DBError) as err:
        parse(sql)
    assert err.value.sqlstate == "42601", err.value.message
    assert message in err.value.message


def test_commas_where_postgresql_takes_them_still_parse() -> None:
    stmt = parse_one("SELECT a, b FROM t WHERE a IN (1, 2) ORDER BY a, b LIMIT 1 OFFSET 2")
    assert isinstance(stmt, ast.Select) and len(stmt.order_by) == 2
    # a real comma join is a join, run by DataFusion
    assert isinstance(parse_one("SELECT * FROM a, b WHERE a.x = 1"), ast.RelationalQuery)


def test_the_trailers_reach_every_nodedb_form_of_the_page() -> None:
    forms = {type(parse_one(sql)) for sql, _ in _with_trailers()}
    assert len(forms) >= 28, sorted(f.__name__ for f in forms)


# ---- every statement family -----------------------------------------------------------------

HOUR_US = 3600 * 10**6
FAMILIES: list[tuple[str, ast.Statement]] = [
    (
        "CREATE TABLE orders (id SERIAL NOT NULL, customer VARCHAR(30) NOT NULL,"
        " total NUMERIC(10, 2) DEFAULT 0, at TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),"
        " w timestamp with time zone, f FLOAT(24), d double precision, PRIMARY KEY (id))",
        ast.CreateCollection(
            "orders",
            "document",
            {},
            False,
            {
                "table": {
                    "columns": [
                        ["id", "int4", True, {"serial": True}, -1],
                        ["customer", "varchar", True, None, 34],
                        ["total", "numeric", False, {"value": 0}, (10 << 16 | 2) + 4],
                        ["at", "timestamp", False, {"now": True}, -1],
                        ["w", "timestamptz", False, None, -1],
                        ["f", "float4", False, None, -1],
                        ["d", "float8", False, None, -1],
                    ],
                    "key": "id",
                }
            },
        ),
    ),
    (
        "create table if not exists public.t (index BIGINT, b text, c boolean, j jsonb)",
        ast.CreateCollection(
            "t",
            "document",
            {},
            True,
            {
                "table": {
                    "columns": [
                        ["index", "int8", False, None, -1],
                        ["b", "text", False, None, -1],
                        ["c", "bool", False, None, -1],
                        ["j", "jsonb", False, None, -1],
                    ],
                    "key": None,
                }
            },
        ),
    ),
    (
        "CREATE TABLE s (n bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT s_pk PRIMARY KEY,"
        " v text NULL)",
        ast.CreateCollection(
            "s",
            "document",
            {},
            False,
            {
                "table": {
                    "columns": [
                        ["n", "int8", True, {"serial": True}, -1],
                        ["v", "text", False, None, -1],
                    ],
                    "key": "n",
                }
            },
        ),
    ),
    (
        "ALTER TABLE IF EXISTS orders ADD COLUMN note TEXT, ADD IF NOT EXISTS n INT8 NOT NULL",
        ast.AddColumns(
            "orders",
            (
                (["note", "text", False, None, -1], False),
                (["n", "int8", True, None, -1], True),
            ),
            True,
        ),
    ),
    ("DROP TABLE IF EXISTS orders CASCADE", ast.DropCollection("orders", True, True, "DROP TABLE")),
    ("CREATE INDEX ix_t_a ON public.t USING btree (a)", ast.CreateIndex("ix_t_a", "t", "a", False)),
    ("CREATE COLLECTION users", ast.CreateCollection("users", "document", {}, False, {})),
    ("create collection Users type document", ast.CreateCollection("users", "document", {})),
    (
        "CREATE COLLECTION IF NOT EXISTS c TYPE KEY_VALUE (key TEXT PRIMARY KEY, hits INT8)",
        ast.CreateCollection("c", "kv", {"hits": "int8"}, True, {}),
    ),
    (
        "CREATE COLLECTION cpu TYPE COLUMNAR (ts TIMESTAMP TIME_KEY, host VARCHAR, load FLOAT) "
        "WITH profile = 'timeseries', partition_by = '1h'",
        ast.CreateCollection(
            "cpu",
            "timeseries",
            {"ts": "timestamp", "host": "text", "load": "float"},
            False,
            {"time_key": "ts", "partition_us": HOUR_US, "dynamic": False},
        ),
    ),
    (
        "CREATE TIMESERIES metrics WITH (partition_by = '1d')",
        ast.CreateCollection(
            "metrics",
            "timeseries",
            {"ts": "timestamp"},
            False,
            {"time_key": "ts", "partition_us": 24 * HOUR_US, "dynamic": True},
        ),
    ),
    ("CREATE TENANT acme", ast.CreateTenant("acme")),
    (
        "CREATE USER alice WITH PASSWORD 'it''s' TENANT acme",
        ast.CreateUser("alice", "it's", "acme"),
    ),
    ("CREATE ROLE bob PASSWORD 'pw'", ast.CreateUser("bob", "pw", None)),
    ("CREATE INDEX idx_age ON users FIELDS age", ast.CreateIndex("idx_age", "users", "age")),
    ("CREATE INDEX IF NOT EXISTS ON kv FIELD hits", ast.CreateIndex(None, "kv", "hits", True)),
    (
        "CREATE VECTOR INDEX idx_emb ON articles FIELD embedding METRIC cosine DIM 3 "
        "WITH (m = 16, ef_search = 64)",
        ast.CreateVectorIndex(
            "idx_emb", "articles", "embedding", "cosine", 3, {"m": 16, "ef_search": 64}
        ),
    ),
    (
        "CREATE VECTOR INDEX v ON articles METRIC l2 DIM 128",
        ast.CreateVectorIndex("v", "articles", None, "l2", 128, {}),
    ),
    ("DROP COLLECTION users", ast.DropCollection("users", False, False)),
    ("DROP COLLECTION IF EXISTS users PURGE", ast.DropCollection("users", True, True)),
    ("DROP INDEX idx_age", ast.DropIndex("idx_age", False)),
    ("DROP INDEX IF EXISTS idx_age", ast.DropIndex("idx_age", True)),
    ("DROP TENANT acme", ast.DropTenant("acme")),
    ("DROP USER alice", ast.DropUser("alice")),
    ("DROP ROLE alice", ast.DropUser("alice")),
    ("UNDROP COLLECTION users", ast.UndropCollection("users")),
    ("PURGE TENANT acme CONFIRM", ast.PurgeTenant("acme")),
    ("GRANT BACKUP ON TENANT acme TO alice", ast.Grant("backup", "acme", "alice")),
    (
        "INSERT INTO users { id: 'u3', n: -2, tags: ['ops'], addr: { city: 'Oslo' }, ok: true }",
        ast.Insert(
            "users",
            [
                [
                    ("id", Const("u3")),
                    ("n", Const(-2)),
                    ("tags", ArrayExpr([Const("ops")])),
                    ("addr", ObjectExpr([("city", Const("Oslo"))])),
                    ("ok", Const(True)),
                ]
            ],
            object_form=True,
        ),
    ),
    (
        "INSERT INTO users [ { id: 'u4' }, { id: $1, at: $2::timestamptz } ] ON CONFLICT DO NOTHING",
        ast.Insert(
            "users",
            [[("id", Const("u4"))], [("id", Param(0)), ("at", Cast(Param(1), t.TIMESTAMPTZ))]],
            ast.OnConflict("nothing"),
            object_form=True,
        ),
    ),
    (
        "UPSERT INTO sessions { key: 'k', ttl: 3600 }",
        ast.Insert(
            "sessions", [[("key", Const("k")), ("ttl", Const(3600))]], upsert=True, object_form=True
        ),
    ),
    (
        "INSERT INTO users { id: 'u6' } ON CONFLICT (id) DO UPDATE SET age = 51 RETURNING id",
        ast.Insert(
            "users",
            [[("id", Const("u6"))]],
            ast.OnConflict("update", [("age", Const(51))]),
            object_form=True,
            returning=[ast.SelectItem(Field("id"), "id")],
        ),
    ),
    ("SHOW COLLECTIONS", ast.ShowCollections()),
    ("SHOW TENANTS", ast.ShowTenants()),
    ("SHOW search_path", ast.Show("search_path")),
    ("SHOW nodedb.wal_segment", ast.Show("nodedb.wal_segment")),
    ('SHOW "collections"', ast.Show("collections")),
    ("SHOW TIME ZONE", ast.Show("time zone")),
    ("SHOW TRANSACTION ISOLATION LEVEL", ast.Show("transaction_isolation")),
    ("SHOW SESSION AUTHORIZATION", ast.Show("session_authorization")),
    ("DESCRIBE counters", ast.DescribeCollection("counters")),
    ("DESC counters", ast.DescribeCollection("counters")),
    ("SET application_name = 'docs'", ast.SetVar("application_name", "docs")),
    ("SET SESSION statement_timeout TO -5", ast.SetVar("statement_timeout", "-5")),
    ('SET LOCAL search_path = "$user", public', ast.SetVar("search_path", '"$user", public')),
    ("SET TIME ZONE 'UTC'", ast.SetVar("timezone", "UTC")),
    ("SET datestyle TO ISO, MDY", ast.SetVar("datestyle", "ISO, MDY")),
    ("SET search_path = DEFAULT", ast.SetVar("search_path", None)),
    ("SET SESSION AUTHORIZATION alice", ast.SetVar("session_authorization", "alice")),
    ("SET ROLE alice", ast.SetVar("role", "alice")),
    ("RESET application_name", ast.SetVar("application_name", None)),
    ("RESET SESSION AUTHORIZATION", ast.SetVar("session_authorization", None)),
    ("RESET ALL", ast.SetVar("all", None)),
    ("BEGIN", ast.Begin()),
    ("BEGIN WORK ISOLATION LEVEL REPEATABLE READ, READ ONLY", ast.Begin()),
    ("START TRANSACTION NOT DEFERRABLE", ast.Begin()),
    ("COMMIT", ast.Commit()),
    ("COMMIT TRANSACTION AND NO CHAIN", ast.Commit()),
    ("END WORK", ast.Commit()),
    ("ROLLBACK", ast.Rollback()),
    ("ABORT TRANSACTION", ast.Rollback()),
    ("SAVEPOINT sp1", ast.Savepoint("sp1")),
    (
        'DECLARE "c1" NO SCROLL CURSOR WITHOUT HOLD FOR SELECT id FROM t WHERE n > $1',
        ast.DeclareCursor("c1", parse_one("SELECT id FROM t WHERE n > $1"), False),  # type: ignore[arg-type]
    ),
    (
        "DECLARE c INSENSITIVE CURSOR WITH HOLD FOR SELECT * FROM t",
        ast.DeclareCursor("c", parse_one("SELECT * FROM t"), True),  # type: ignore[arg-type]
    ),
    ("FETCH FORWARD 5 FROM c", ast.FetchCursor("c", 5, False)),
    ("FETCH ALL IN c", ast.FetchCursor("c", None, False)),
    ("FETCH FORWARD ALL FROM c", ast.FetchCursor("c", None, False)),
    ("FETCH c", ast.FetchCursor("c", 1, False)),
    ("FETCH NEXT FROM c", ast.FetchCursor("c", 1, False)),
    ("MOVE 3 IN c", ast.FetchCursor("c", 3, True)),
    ("CLOSE c", ast.CloseCursor("c")),
    ("CLOSE ALL", ast.CloseCursor(None)),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", ast.SetTransaction()),
    (
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED, READ WRITE",
        ast.SetTransaction(),
    ),
    ("RELEASE SAVEPOINT sp1", ast.ReleaseSavepoint("sp1")),
    ("RELEASE sp1", ast.ReleaseSavepoint("sp1")),
    ("ROLLBACK TO SAVEPOINT sp1", ast.RollbackTo("sp1")),
    ("ROLLBACK WORK TO sp1", ast.RollbackTo("sp1")),
    (
        "GRAPH INSERT EDGE IN 'social' FROM 'alice' TO $1 TYPE 'knows' PROPERTIES { since: 2020 }",
        ast.GraphEdgeWrite(
            False,
            "social",
            Const("alice"),
            Param(0),
            Const("knows"),
            ObjectExpr([("since", Const(2020))]),
        ),
    ),
    (
        "GRAPH DELETE EDGE IN social FROM 'alice' TO 'bob' LABEL 'knows'",
        ast.GraphEdgeWrite(True, "social", Const("alice"), Const("bob"), Const("knows")),
    ),
    (
        "GRAPH NEIGHBORS OF 'alice' IN 'social' LABEL 'knows' DIRECTION both",
        ast.GraphQuery(
            "neighbors", "social", Const("alice"), label=Const("knows"), direction="both"
        ),
    ),
    (
        "GRAPH TRAVERSE FROM 'alice' DEPTH 2 IN 'social'",
        ast.GraphQuery("traverse", "social", Const("alice"), depth=Const(2)),
    ),
    (
        "GRAPH PATH FROM 'alice' TO 'carol' IN 'social' MAX_DEPTH 5 DIRECTION in",
        ast.GraphQuery(
            "path", "social", Const("alice"), target=Const("carol"), depth=Const(5), direction="in"
        ),
    ),
    (
        "GRAPH ALGO PAGERANK ON social DAMPING 0.85 ITERATIONS 20",
        ast.GraphAlgo("pagerank", "social", Const(0.85), Const(20)),
    ),
    ("GRAPH ALGO WCC ON 'social'", ast.GraphAlgo("wcc", "social")),
    (
        "COPY cpu (ts, host) FROM STDIN CSV HEADER",
        ast.CopyFrom("cpu", ["ts", "host"], "csv", True, None),
    ),
    (
        "COPY cpu FROM STDIN WITH (FORMAT 'csv', HEADER false, DELIMITER ';')",
        ast.CopyFrom("cpu", None, "csv", False, ";"),
    ),
    ("COPY cpu FROM STDIN", ast.CopyFrom("cpu", None, "text", False, None)),
    ("COPY (BACKUP TENANT acme) TO STDOUT", ast.BackupTenant("acme", None, False)),
    (
        "COPY tenant_restore(acme) FROM STDIN DRY RUN",
        ast.RestoreTenant("acme", None, True, False, False),
    ),
    (
        "COPY tenant_restore(acme) FROM STDIN WITH (rename)",
        ast.RestoreTenant("acme", None, False, True, False),
    ),
    ("BACKUP TENANT acme TO '/b/acme.bak'", ast.BackupTenant("acme", "/b/acme.bak", False)),
    (
        "BACKUP TENANT acme TO '/b/acme.bak' WITH (overwrite)",
        ast.BackupTenant("acme", "/b/acme.bak", True),
    ),
    (
        "RESTORE TENANT acme FROM '/b/acme.bak'",
        ast.RestoreTenant("acme", "/b/acme.bak", False, False, False),
    ),
    (
        "RESTORE TENANT acme FROM '/b/acme.bak' DRY RUN WITH (rename, resurrect)",
        ast.RestoreTenant("acme", "/b/acme.bak", True, True, True),
    ),
    (
        "RESTORE TENANT acme FROM '/b/acme.bak' UNTIL LSN 123456 DRY RUN",
        ast.RestoreTenant("acme", "/b/acme.bak", True, until_lsn=123456),
    ),
    (
        "RESTORE TENANT acme FROM '/b/acme.bak' UNTIL TIMESTAMP '2026-04-02 10:00:00.000001+00'",
        ast.RestoreTenant("acme", "/b/acme.bak", False, until_us=1775124000000001),
    ),
    (
        # Without a zone the literal is UTC.
        "RESTORE TENANT acme FROM SNAPSHOT UNTIL TIMESTAMP '2026-04-02 12:00:00.5'",
        ast.RestoreTenant("acme", None, False, snapshot=True, until_us=1775131200500000),
    ),
    ("SHOW RESTORE RANGE FOR TENANT acme", ast.ShowRestoreRange("acme")),
    (
        "ALTER SYSTEM SET deactivated_collection_retention_days = 14",
        ast.AlterSystem("deactivated_collection_retention_days", "14"),
    ),
    (
        "ALTER SYSTEM SET deactivated_collection_retention_days TO 7",
        ast.AlterSystem("deactivated_collection_retention_days", "7"),
    ),
    (
        "SEARCH articles USING VECTOR(embedding, ARRAY[0.1, 0.3], $1)",
        ast.VectorSearch("articles", "embedding", ArrayExpr([Const(0.1), Const(0.3)]), Param(0)),
    ),
    ("CHECKPOINT", ast.Checkpoint()),
    ("CREATE CHANGE STREAM s ON orders", ast.CreateChangeStream("s", "orders")),
    (
        "create change stream if not exists s on orders with (compaction = 'key')",
        ast.CreateChangeStream("s", "orders", "key", True),
    ),
    ("DROP CHANGE STREAM IF EXISTS s", ast.DropChangeStream("s", True)),
    ("SHOW CHANGE STREAMS", ast.ShowChangeStreams()),
    ("CREATE CONSUMER GROUP g ON s", ast.CreateConsumerGroup("g", "s")),
    ("DROP CONSUMER GROUP IF EXISTS g ON s", ast.DropConsumerGroup("g", "s", True)),
    ("SELECT * FROM STREAM s CONSUMER GROUP g", ast.ReadStream("s", "g")),
    ("select * from stream s consumer group g limit 10", ast.ReadStream("s", "g", 10)),
    ("COMMIT OFFSETS ON s CONSUMER GROUP g", ast.CommitOffsets("s", "g")),
    ("COMMIT OFFSET AT 42 ON s CONSUMER GROUP g", ast.CommitOffsets("s", "g", 42)),
    ("SHOW CHANGES FOR orders SINCE LSN 5 LIMIT 10", ast.ShowChanges("orders", 5, None, 10)),
    ("LISTEN Jobs", ast.Listen("jobs")),
    ("UNLISTEN jobs", ast.Unlisten("jobs")),
    ("UNLISTEN *", ast.Unlisten(None)),
    ("KILL LIVE QUERY 'ab12'", ast.KillLive("ab12")),
    (
        "LIVE SELECT * FROM orders WHERE total > 100 SINCE LSN 5",
        ast.LiveSelect(
            parse("SELECT * FROM orders WHERE total > 100")[0],  # type: ignore[arg-type]
            5,
        ),
    ),
    ("NOTIFY jobs", ast.Notify("jobs")),
    ("NOTIFY \"Jobs\", 'payload'", ast.Notify("Jobs", "payload")),
    (
        "show changes for orders since '2026-04-01T00:00:00Z'",
        ast.ShowChanges("orders", None, 1775001600000000),
    ),
    (
        "EXECUTE hits_of ('k', $1)",
        ast.ExecutePrepared("hits_of", [Const("k"), Param(0)]),
    ),
    ("EXECUTE hits_of", ast.ExecutePrepared("hits_of", [])),
    ("DEALLOCATE hits_of", ast.Deallocate("hits_of")),
    ("DEALLOCATE PREPARE hits_of", ast.Deallocate("hits_of")),
    ("DEALLOCATE ALL", ast.Deallocate(None)),
    ("DISCARD ALL", ast.Discard("all")),
    ("TRUNCATE users", ast.Truncate(("users",))),
    ("TRUNCATE TABLE ONLY a, b RESTART IDENTITY CASCADE", ast.Truncate(("a", "b"))),
    ("DISCARD TEMPORARY", ast.Discard("temp")),
    (
        "PREPARE by_key (text, int8) AS SELECT hits FROM counters WHERE key = $1",
        ast.Prepare(
            "by_key",
            (t.TEXT, t.INT8),
            ast.Select(
                [ast.SelectItem(Field("hits"), "hits")],
                False,
                "counters",
                Cmp("=", Field("key"), Param(0)),
            ),
            "SELECT hits FROM counters WHERE key = $1",
        ),
    ),
    (
        "SELECT crdt_apply('notes', 'doc1', $1)",
        ast.CrdtApply(Const("notes"), Const("doc1"), Param(0)),
    ),
    ("", ast.Empty()),
    ("  ;  ", ast.Empty()),
    ("-- only a comment", ast.Empty()),
]


@pytest.mark.parametrize(("sql", "expected"), FAMILIES, ids=[sql[:60] for sql, _ in FAMILIES])
def test_each_statement_family_parses_to_its_fields(sql: str, expected: ast.Statement) -> None:
    assert plain(parse(sql)) == plain([expected])


def test_statements_in_one_text_parse_in_order_split_outside_strings() -> None:
    got = parse("BEGIN; INSERT INTO c { id: ';' };COMMIT;")
    insert = ast.Insert("c", [[("id", Const(";"))]], object_form=True)
    assert plain(got) == plain([ast.Begin(), insert, ast.Commit()])


def test_every_entry_of_the_statement_table_has_a_family_case() -> None:
    """Adding a statement is adding an entry to the table: this asks for its case above."""
    texts = [" ".join(sql.lower().split()) for sql, _ in FAMILIES + REFUSED_FAMILIES]
    for key in STATEMENTS:
        assert any(text == key or text.startswith(key + " ") for text in texts), key


# Entries of the statement table that only refuse, with a clearer message than a
# syntax error (each is also in REFUSED below).
REFUSED_FAMILIES = [("CREATE UNIQUE INDEX u ON t (a)", None)]


# Texts refused, with their SQLSTATE and a part of the message where the order in which
# two faults are found matters (text left over is reported before what was read is judged).
REFUSED: list[tuple[str, str, str]] = [
    ("CREATE TABLE t (a date)", "0A000", "type date"),
    ("CREATE TABLE t (a int[])", "0A000", "array"),
    ("CREATE TABLE t (a int unique)", "0A000", "unique"),
    ("CREATE TABLE t (a int, UNIQUE (a))", "0A000", "unique"),
    ("CREATE TABLE t (a int REFERENCES u (id))", "0A000", "foreign key"),
    ("CREATE TABLE t (a int, CONSTRAINT f FOREIGN KEY (a) REFERENCES u (id))", "0A000", "foreign"),
    ("CREATE TABLE t (a int CHECK (a > 0))", "0A000", "check"),
    ("CREATE TABLE t (a int, a text)", "42701", "more than once"),
    ("CREATE TABLE t (ctid int)", "42701", "system column"),
    ("CREATE TABLE t (a int primary key, b int primary key)", "42P16", "multiple primary keys"),
    ("CREATE TABLE t (a int, b int, PRIMARY KEY (a, b))", "0A000", "more than one column"),
    ("CREATE TABLE t (a int, PRIMARY KEY (b))", "42703", '"b"'),
    ("CREATE TABLE t (a float8 primary key)", "0A000", "primary key of type float8"),
    ("CREATE TABLE t (a serial, b int primary key)", "0A000", "serial"),
    ("CREATE TABLE t (a text GENERATED ALWAYS AS IDENTITY)", "22023", "identity"),
    ("CREATE TABLE t (a int DEFAULT 'x')", "22P02", ""),
    ("CREATE TABLE t (a varchar(2) DEFAULT 'abc')", "22001", "character varying(2)"),
    ("CREATE TABLE t (a numeric(3, 1) DEFAULT 100)", "22003", "overflow"),
    ("CREATE TABLE t (a numeric(2, 3))", "22023", "scale"),
    ("CREATE TABLE t (a varchar(0))", "22023", "length"),
    ("CREATE TABLE t (a int) WITH (fillfactor = 70)", "42601", 'near "with"'),
    ("CREATE TABLE t AS SELECT 1", "0A000", ""),
    ("CREATE TABLE other.t (a int)", "3F000", "other"),
    ("CREATE UNIQUE INDEX u ON t (a)", "0A000", "unique"),
    ("CREATE INDEX i ON t (a, b)", "0A000", "one field"),
    ("CREATE INDEX i ON t USING gin (a)", "0A000", "gin"),
    ("ALTER TABLE t DROP COLUMN a", "0A000", "drop"),
    ("ALTER TABLE t RENAME TO u", "0A000", "rename"),
    ("ALTER TABLE t ADD CONSTRAINT c PRIMARY KEY (a)", "0A000", "constraint"),
    ("ALTER TABLE t ADD COLUMN a int PRIMARY KEY", "0A000", "primary key"),
    ("DROP TABLE a, b", "0A000", "one table"),
    ("CREATE", "42601", ""),
    ("DROP VECTOR INDEX v", "42601", ""),
    ("UNDROP TENANT acme", "42601", 'near "tenant": expected collection'),
    ("START WORK", "42601", 'near "work": expected transaction'),
    ("ALTER TENANT t RENAME", "42601", 'near "tenant": expected table or system'),
    ("BACKUP acme TO '/b/x'", "42601", 'near "acme": expected tenant'),
    ("GRAPH FLY FROM 'a' IN 'g'", "42601", ""),
    ("GRAPH ALGO BFS ON g", "42601", "bfs is not known"),
    ("GRAPH TRAVERSE FROM 'a' IN 'g'", "42601", "depth is required"),
    ("GRANT SELECT ON TENANT acme TO alice", "42601", "privilege select is not known"),
    ("GRANT SELECT ON TENANT acme TO alice garbage", "42601", 'near "garbage"'),
    ("PURGE TENANT acme", "42601", "add confirm"),
    ("COMMIT OFFSETS ON s", "42601", "expected consumer"),
    ("COMMIT OFFSET AT -1 ON s CONSUMER GROUP g", "42601", "expected an lsn"),
    ("CREATE CHANGE STREAM s ON t WITH (compaction = 'all')", "22023", "compaction must be"),
    ("CREATE CHANGE STREAM s ON t WITH (retention = '1d')", "42601", "unknown option"),
    ("SELECT * FROM STREAM s CONSUMER GROUP g LIMIT x", "42601", "expected a row count"),
    ("COMMIT NOW", "42601", 'near "now"'),
    ("LIVE SELECT name FROM orders", "42601", "select * from a collection"),
    ("LIVE SELECT * FROM orders ORDER BY id", "42601", "no group by"),
    ("LIVE SELECT * FROM orders SINCE LSN soon", "42601", "expected an lsn"),
    ("LIVE DELETE FROM orders", "42601", "expected select"),
    ("RESTORE TENANT a FROM SNAPSHOT", "42601", "expected until"),
    ("RESTORE TENANT a FROM SNAPSHOT UNTIL LSN 5 WITH (rename)", "42601", "do not apply"),
    ("RESTORE TENANT a FROM '/b/x' UNTIL LSN -1", "42601", "expected an lsn"),
    ("RESTORE TENANT a FROM '/b/x' UNTIL TIMESTAMP 'soon'", "22P02", "timestamp"),
    ("COMMIT AND CHAIN", "0A000", ""),
    ("COMMIT PREPARED 'x'", "0A000", ""),
    ("ABORT TO SAVEPOINT s", "42601", 'near "to"'),
    ("SAVEPOINT", "42601", "at end of input"),
    ("DECLARE c SCROLL CURSOR FOR SELECT 1", "0A000", "scroll"),
    ("DECLARE c BINARY CURSOR FOR SELECT 1", "0A000", "binary"),
    ("DECLARE c CURSOR FOR DELETE FROM t", "0A000", "select"),
    ("DECLARE c CURSOR SELECT 1", "42601", 'near "select"'),
    ("FETCH PRIOR FROM c", "0A000", "scroll"),
    ("FETCH 2 FROM", "42601", "end of input"),
    ("SET TRANSACTION", "42601", "transaction mode"),
    ("SET SESSION CHARACTERISTICS TRANSACTION READ ONLY", "42601", 'near "transaction"'),
    ("ROLLBACK TO", "42601", "at end of input"),
    ("CREATE INDEX ON c FIELDS a, b", "0A000", ""),
    ("CREATE VECTOR INDEX v ON c METRIC dot DIM 3", "42601", "metric dot"),
    ("CREATE VECTOR INDEX v ON c METRIC l2 DIM 0", "42601", "dim"),
    ("CREATE VECTOR INDEX v ON c METRIC l2 DIM 3 WITH (depth = 3)", "42601", "depth"),
    ("CREATE COLLECTION c TYPE GRAPH", "42601", "graph is not supported"),
    ("CREATE COLLECTION c TYPE KEY_VALUE (id TEXT PRIMARY KEY)", "42601", ""),
    ("CREATE COLLECTION c TYPE COLUMNAR (a INT, b TEXT)", "42601", "time_key"),
    ("CREATE TIMESERIES m WITH (colour = 'red')", "42601", "unknown option colour"),
    ("CREATE TIMESERIES m WITH (colour = 'red') garbage", "42601", 'near "garbage"'),
    ("COPY c FROM '/etc/passwd'", "0A000", ""),
    ("COPY c FROM STDIN WITH (FORMAT parquet)", "22023", ""),
    ("COPY c FROM STDIN WITH (DELIMITER ';;')", "22023", ""),
    ("COPY c FROM STDIN WITH (ESCAPE 'x')", "42601", "escape"),
    ("DISCARD EVERYTHING", "42601", ""),
    ("TRUNCATE", "42601", ""),
    ("TRUNCATE a b", "42601", ""),
    ("SHOW", "42601", ""),
    ("SET application_name", "42601", "expected = or to"),
    ('EXECUTE ""', "42601", "zero-length"),
    ("EXECUTE p ()", "42601", ""),
    ("PREPARE p AS CREATE COLLECTION c", "42601", ""),
    ("EXPLAIN SHOW TENANTS", "42601", ""),
    ("INSERT INTO c { id: 'a' } { id: 'b' }", "42601", ""),
    ("INSERT INTO c [ 1 ]", "42601", "object literal"),
    ("SELECT DISTINCT x.a FROM _system.wal x", "0A000", ""),
    ("SELECT 1 FROM pg_type WHERE", "42601", ""),
]


@pytest.mark.parametrize(("sql", "sqlstate", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_texts_give_their_sqlstate(sql: str, sqlstate: str, message: str) -> None:
    with pytest.raises(DBError) as err:
        parse(sql)
    assert err.value.sqlstate == sqlstate, err.value.message
    assert message in err.value.message.lower(), err.value.message


def test_a_catalog_query_is_routed_by_the_relations_it_names() -> None:
    """pg_type read from the catalog; a string or a collection that only looks like one,
    or a WITH of that name, read as an ordinary query."""
    for sql in (
        "SELECT typname FROM pg_type WHERE oid = 20",
        "SELECT t.typname FROM pg_catalog.pg_type t WHERE t.oid = any($1::oid[])",
        "SELECT typname AS name, oid, oid::regtype::text AS regtype FROM pg_type t "
        "WHERE t.oid = 23 ORDER BY t.oid",
    ):
        assert isinstance(parse_one(sql), ast.CatalogQuery), sql
    for sql, source in (
        ("SELECT 'pg_type' AS name FROM apg_typed", "apg_typed"),
        ("SELECT oid FROM pg_typed WHERE oid = 'pg_class'", "pg_typed"),
        ("SELECT * FROM PG_TYPE", "PG_TYPE"),
        ("WITH pg_type AS (SELECT 1 AS a) SELECT a FROM pg_type", None),
        ("SELECT 'pg_type', $1+$2 AS s FROM t", "t"),
    ):
        stmt = parse_one(sql)
        if source is None:  # a WITH is an ordinary (relational) query, naming no collection
            assert isinstance(stmt, ast.RelationalQuery) and stmt.query.tables == (), sql
            continue
        assert isinstance(stmt, ast.Select) and stmt.source == source, (sql, stmt)


def test_parameters_an_operator_follows_at_once_parse_as_in_postgresql() -> None:
    """sqlglot cannot tokenize $1+$2; the text is spaced after each $n, not inside strings."""
    spaced = parse_one("SELECT a FROM c WHERE a = $1+$2 AND b = '$3+x'")
    written = parse_one("SELECT a FROM c WHERE a = $1 + $2 AND b = '$3+x'")
    assert plain(spaced) == plain(written)
    assert "'$3+x'" in repr(plain(spaced))
    insert = parse_one("INSERT INTO c (a, b) VALUES ($1,$2::int8-$3)")
    assert plain(insert) == plain(parse_one("INSERT INTO c (a, b) VALUES ($1, $2::int8 - $3)"))
