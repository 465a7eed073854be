"""A statement is its whole text: words left after a complete statement are 42601 and the
statement does not run as its shorter prefix; what a statement reads is judged by the
relations it names, never by its text; a FROM-less SELECT answers as PostgreSQL does."""

from __future__ import annotations

import subprocess
from typing import Any

import asyncpg
import psycopg
import pytest

from tests.serverproc import ServerProcess

SETUP = [
    "CREATE COLLECTION users",
    "INSERT INTO users (id, name) VALUES ('u1', 'Alice')",
    "CREATE COLLECTION kv TYPE KEY_VALUE (key TEXT PRIMARY KEY, hits INT8)",
    "INSERT INTO kv (key, hits) VALUES ('k1', 1)",
    "CREATE COLLECTION articles",
    "CREATE COLLECTION social",
]

# Every statement form the server parses, in an order in which each runs after the one
# before it. Each is first sent with " garbage" after it, which must be 42601 and change
# nothing; then it is run as written (unless marked False), which proves it a real form
# and, for a CREATE, that the garbage version created nothing.
FORMS: list[tuple[str, bool]] = [
    ("CREATE COLLECTION notes", True),
    ("CREATE COLLECTION IF NOT EXISTS notes2", True),
    ("CREATE COLLECTION tdoc TYPE DOCUMENT", True),
    ("CREATE COLLECTION kv2 TYPE KEY_VALUE (key TEXT PRIMARY KEY, hits INT8)", True),
    (
        "CREATE COLLECTION cpu TYPE COLUMNAR (ts TIMESTAMP TIME_KEY, host VARCHAR, load FLOAT) "
        "WITH profile = 'timeseries', partition_by = '1h'",
        True,
    ),
    ("CREATE TIMESERIES metrics WITH (partition_by = '1h')", True),
    ("CREATE TENANT acme", True),
    ("CREATE USER alice WITH PASSWORD 'secret' TENANT acme", True),
    ("GRANT BACKUP ON TENANT acme TO alice", True),
    ("CREATE INDEX idx_name ON users FIELDS name", True),
    ("CREATE INDEX IF NOT EXISTS idx_name ON users FIELDS name", True),
    ("CREATE INDEX ON kv FIELDS hits", True),
    (
        "CREATE VECTOR INDEX idx_emb ON articles FIELD embedding METRIC cosine DIM 3 WITH (m = 16)",
        True,
    ),
    ("INSERT INTO users (id, name) VALUES ('u2', 'Bob')", True),
    ("INSERT INTO users (id, name) VALUES ('u2', 'B') ON CONFLICT (id) DO NOTHING", True),
    (
        "INSERT INTO users (id, name) VALUES ('u2', 'B') ON CONFLICT (id) DO UPDATE SET name = 'Bo'",
        True,
    ),
    ("UPSERT INTO users (id, name) VALUES ('u3', 'Carol')", True),
    ("INSERT INTO users { id: 'u4', name: 'Dan' }", True),
    ("INSERT INTO users [{ id: 'u5' }, { id: 'u6' }]", True),
    ("INSERT INTO users { id: 'u4' } ON CONFLICT DO NOTHING", True),
    ("INSERT INTO users { id: 'u4' } ON CONFLICT DO UPDATE SET name = 'Daniel'", True),
    ("UPSERT INTO kv { key: 'k2', hits: 2 }", True),
    ("INSERT INTO articles { id: 'a1', embedding: [0.1, 0.2, 0.3] }", True),
    ("UPDATE users SET name = 'Al' WHERE id = 'u1'", True),
    ("UPDATE kv SET hits = 5", True),
    ("DELETE FROM users WHERE id = 'u6'", True),
    ("INSERT INTO users (id) VALUES ('u7') RETURNING *", True),
    ("INSERT INTO users { id: 'u8' } ON CONFLICT DO UPDATE SET name = 'H' RETURNING *", True),
    ("UPDATE users SET name = 'G' WHERE id = 'u7' RETURNING *", True),
    ("DELETE FROM users WHERE id IN ('u7', 'u8') RETURNING *", True),
    ("SELECT * FROM users WHERE id = 'u1'", True),
    ("SELECT 1 WHERE 1 = 0", True),
    ("SELECT name, count(*) FROM users GROUP BY name ORDER BY 2 DESC LIMIT 1 OFFSET 0", True),
    ("SELECT typname FROM pg_catalog.pg_type WHERE oid = 23", True),
    ("EXPLAIN SELECT * FROM users WHERE id = 'u1'", True),
    ("EXPLAIN ANALYZE SELECT * FROM users WHERE id = 'u1'", True),
    ("SEARCH articles USING VECTOR(embedding, ARRAY[0.1, 0.2, 0.3], 1)", True),
    (
        "GRAPH INSERT EDGE IN 'social' FROM 'alice' TO 'bob' TYPE 'knows' PROPERTIES { since: 2020 }",
        True,
    ),
    ("GRAPH INSERT EDGE IN 'social' FROM 'bob' TO 'carol' TYPE 'knows'", True),
    ("GRAPH NEIGHBORS OF 'alice' IN 'social' LABEL 'knows' DIRECTION out", True),
    ("GRAPH TRAVERSE FROM 'alice' IN 'social' DEPTH 2", True),
    ("GRAPH PATH FROM 'alice' TO 'carol' IN 'social' MAX_DEPTH 5", True),
    ("GRAPH ALGO PAGERANK ON social DAMPING 0.85 ITERATIONS 20", True),
    ("GRAPH ALGO WCC ON social", True),
    ("GRAPH DELETE EDGE IN 'social' FROM 'bob' TO 'carol' TYPE 'knows'", True),
    ("PREPARE by_id (text) AS SELECT name FROM users WHERE id = $1", True),
    ("EXECUTE by_id ('u1')", True),
    ("DEALLOCATE by_id", True),
    ("DEALLOCATE ALL", True),
    ("DISCARD ALL", True),
    ("SHOW COLLECTIONS", True),
    ("SHOW TENANTS", True),
    ("SHOW search_path", True),
    ("SHOW ALL", True),
    ("SHOW TIME ZONE", True),
    ("SHOW TRANSACTION ISOLATION LEVEL", True),
    ("DESCRIBE users", True),
    ("DESC kv", True),
    ("SET search_path = public", True),
    ("SET SESSION statement_timeout TO 0", True),
    ("SET TIME ZONE 'UTC'", True),
    ("SET datestyle = ISO, MDY", True),
    ("SET application_name = DEFAULT", True),
    ("RESET application_name", True),
    ("ALTER SYSTEM SET deactivated_collection_retention_days = 14", True),
    ("CHECKPOINT", True),
    ("BACKUP TENANT acme TO '{backups}/acme.bak'", True),
    ("BACKUP TENANT acme TO '{backups}/acme.bak' WITH (overwrite)", True),
    ("RESTORE TENANT acme FROM '{backups}/acme.bak' DRY RUN", True),
    ("RESTORE TENANT acme FROM '{backups}/acme.bak'", True),
    ("COPY (BACKUP TENANT acme) TO STDOUT", False),
    ("COPY tenant_restore(acme) FROM STDIN DRY RUN", False),
    ("COPY cpu FROM STDIN WITH (FORMAT csv)", False),
    ("COPY cpu (ts, host) FROM STDIN CSV HEADER", False),
    ("DROP INDEX idx_name", True),
    ("DROP INDEX IF EXISTS idx_name", True),
    ("DROP COLLECTION notes", True),
    ("UNDROP COLLECTION notes", True),
    ("DROP COLLECTION IF EXISTS notes", True),
    ("DROP COLLECTION notes2 PURGE", True),
    ("DROP USER alice", True),
    ("DROP TENANT acme", True),
    ("PURGE TENANT acme CONFIRM", True),
    ("BEGIN", False),
    ("BEGIN WORK", False),
    ("BEGIN TRANSACTION ISOLATION LEVEL READ COMMITTED", False),
    ("BEGIN ISOLATION LEVEL SERIALIZABLE, READ WRITE", False),
    ("START TRANSACTION", False),
    ("START TRANSACTION READ ONLY NOT DEFERRABLE", False),
    ("COMMIT", False),
    ("COMMIT WORK", False),
    ("COMMIT AND NO CHAIN", False),
    ("END", False),
    ("END TRANSACTION", False),
    ("ROLLBACK", False),
    ("ROLLBACK WORK", False),
    ("ABORT", False),
]
TRANSACTION_FORMS = [sql for sql, _ in FORMS if sql.split()[0] in ("BEGIN", "START")]
ENDING_FORMS = [sql for sql, _ in FORMS if sql.split()[0] in ("COMMIT", "END", "ROLLBACK", "ABORT")]


def _state(conn: psycopg.Connection[Any]) -> list[Any]:
    """What a statement could change that this test can see."""
    return [
        conn.info.transaction_status,
        conn.execute("SHOW COLLECTIONS").fetchall(),
        conn.execute("SHOW TENANTS").fetchall(),
        conn.execute("SHOW ALL").fetchall(),
        conn.execute("SELECT * FROM _system.dropped_collections").fetchall(),
        conn.execute("SELECT id, name FROM users ORDER BY id").fetchall(),
        conn.execute("SELECT key, hits FROM kv ORDER BY key").fetchall(),
        conn.execute("DESCRIBE users").fetchall(),
        conn.execute("DESCRIBE articles").fetchall(),
        conn.execute("GRAPH NEIGHBORS OF 'alice' IN 'social' DIRECTION both").fetchall(),
    ]


def test_text_after_any_statement_is_42601_and_changes_nothing(server: ServerProcess) -> None:
    backups = server.data_dir / "backups"  # the default [backup] allowed_dirs
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for sql in SETUP:
            conn.execute(sql)
        for form, run in FORMS:
            sql = form.replace("{backups}", str(backups))
            before = _state(conn)
            with pytest.raises(psycopg.errors.SyntaxError) as err:
                conn.execute(f"{sql} garbage")
            assert 'at or near "garbage"' in str(err.value).lower(), (sql, str(err.value))
            assert _state(conn) == before, f"{sql} garbage changed something"
            if run:
                conn.execute(sql)
        assert (backups / "acme.bak").exists()


@pytest.mark.parametrize("sql", TRANSACTION_FORMS)
def test_every_begin_form_opens_a_transaction(shared_server: ServerProcess, sql: str) -> None:
    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        conn.execute(sql)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        conn.execute("ROLLBACK")


NOT_IMPLEMENTED = [
    "COMMIT OFFSETS ON order_changes CONSUMER GROUP billing",
    "COMMIT OFFSET AT 123456 ON order_changes CONSUMER GROUP billing",
    "COMMIT PREPARED 'tx1'",
    "COMMIT AND CHAIN",
    "END AND CHAIN",
    "ROLLBACK PREPARED 'tx1'",
    "ROLLBACK AND CHAIN",
    *(f"{sql} garbage" for sql in ENDING_FORMS),
]


@pytest.mark.parametrize("sql", NOT_IMPLEMENTED)
def test_a_longer_commit_or_rollback_does_not_end_the_transaction(
    shared_server: ServerProcess, sql: str
) -> None:
    """COMMIT OFFSETS .. (change streams) must not run as the COMMIT it starts with: it is
    an error, which aborts the transaction as any error does, and its writes never land."""
    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION IF NOT EXISTS txn_tail")
        conn.execute("BEGIN")
        conn.execute("INSERT INTO txn_tail { id: 'pending' }")
        with pytest.raises(psycopg.Error):
            conn.execute(sql)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        conn.execute("ROLLBACK")
        assert conn.execute("SELECT count(*) FROM txn_tail").fetchone() == (0,)


# Clauses PostgreSQL has and we do not act on: refused, never run without them.
UNREAD_CLAUSES = [
    "SELECT * INTO copied FROM clauses",
    "SELECT * FROM clauses FOR UPDATE",
    "DELETE FROM clauses USING other WHERE clauses.id = other.id",
    "INSERT INTO clauses (id, n) VALUES ('c1', 9) ON CONFLICT (id) DO UPDATE SET n = 9 WHERE false",
    "INSERT INTO clauses { id: 'c1', n: 9 } ON CONFLICT DO UPDATE SET n = 9 WHERE false",
    "INSERT INTO clauses (id, n) VALUES ('c1', 9) ON CONFLICT ON CONSTRAINT c DO NOTHING",
]


@pytest.mark.parametrize("sql", UNREAD_CLAUSES)
def test_a_clause_we_do_not_act_on_is_refused(shared_server: ServerProcess, sql: str) -> None:
    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION IF NOT EXISTS clauses")
        conn.execute("UPSERT INTO clauses { id: 'c1', n: 1 }")
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute(sql)
        assert conn.execute("SELECT id, n FROM clauses").fetchall() == [("c1", 1)]
        assert "copied" not in [r[0] for r in conn.execute("SHOW COLLECTIONS")]


@pytest.mark.parametrize(
    ("sql", "rows"),
    [
        ("SELECT 1 WHERE 1 = 0", []),
        ("SELECT 1 WHERE false", []),
        ("SELECT 1 WHERE NULL", []),
        ("SELECT 1 WHERE 1 = NULL", []),
        ("SELECT 1 WHERE true", [(1,)]),
        ("SELECT 1 WHERE 2 > 1", [(1,)]),
        ("SELECT 1 LIMIT 0", []),
        ("SELECT 1 OFFSET 1", []),
        ("SELECT 1 WHERE true OFFSET 0", [(1,)]),
        ("SELECT count(*)", [(1,)]),
        ("SELECT count(*) WHERE false", [(0,)]),
        ("SELECT count(*) WHERE NULL", [(0,)]),
        ("SELECT sum(1), max(2) WHERE false", [(None, None)]),
        ("SELECT count(*) WHERE false LIMIT 0", []),
        ("SELECT * FROM fl_docs WHERE 1 = 0", []),
        ("SELECT * FROM fl_docs WHERE NULL", []),
        ("SELECT count(*) FROM fl_docs WHERE false", [(0,)]),
        ("SELECT key FROM fl_kv WHERE 1 = 0", []),
        ("SELECT count(*) FROM fl_kv WHERE NULL", [(0,)]),
        ("SELECT id FROM fl_docs WHERE true", [("d1",)]),
    ],
)
def test_constant_where_answers_as_postgresql(
    shared_server: ServerProcess, sql: str, rows: list[tuple[Any, ...]]
) -> None:
    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION IF NOT EXISTS fl_docs")
        conn.execute("UPSERT INTO fl_docs { id: 'd1' }")
        conn.execute(
            "CREATE COLLECTION IF NOT EXISTS fl_kv TYPE KEY_VALUE (key TEXT PRIMARY KEY, n INT8)"
        )
        conn.execute("UPSERT INTO fl_kv { key: 'k1', n: 1 }")
        assert conn.execute(sql).fetchall() == rows


# Names that hold a catalog relation's name (pg_type, pg_class, information_schema) but
# are ordinary collections.
LOOKALIKES = ["apg_typed", "my_pg_class_x", "information_schema_x", '"Apg_class Notes"']


@pytest.mark.parametrize("name", LOOKALIKES)
def test_collection_named_like_a_catalog_relation_is_a_collection(
    shared_server: ServerProcess, name: str
) -> None:
    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE COLLECTION {name} TYPE KEY_VALUE (key TEXT PRIMARY KEY, n INT8)")
        conn.execute(f"INSERT INTO {name} (key, n) VALUES ('pg_class', 1)")
        conn.execute(f"INSERT INTO {name} {{ key: 'k2', n: 2 }}")
        assert conn.execute(f"SELECT key, n FROM {name} ORDER BY key").fetchall() == [
            ("k2", 2),
            ("pg_class", 1),
        ]
        assert conn.execute(
            f"SELECT count(*) FROM {name} WHERE key = 'pg_class' OR key = 'pg_type'"
        ).fetchone() == (1,)


def test_a_string_naming_the_catalog_is_data(shared_server: ServerProcess) -> None:
    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION catalog_words")
        conn.execute("INSERT INTO catalog_words (id, note) VALUES ('w1', 'see pg_class')")
        assert conn.execute("SELECT 'pg_namespace' AS word").fetchone() == ("pg_namespace",)
        assert conn.execute(
            "SELECT id FROM catalog_words WHERE note = 'see pg_class'"
        ).fetchall() == [("w1",)]
        # The catalog itself is still the catalog, under its schema or by its bare name.
        assert conn.execute("SELECT typname FROM pg_type WHERE oid = 23").fetchone() == ("int4",)
        assert conn.execute(
            'SELECT nspname FROM "pg_catalog".pg_namespace WHERE oid = 11'
        ).fetchone() == ("pg_catalog",)


async def test_statements_of_one_query_message_commit_together(
    shared_server: ServerProcess,
) -> None:
    """One Query message of several statements is one transaction, as in PostgreSQL: a
    failing statement undoes the writes before it, so its error leaves nothing behind."""
    conn = await asyncpg.connect(
        host="127.0.0.1", port=shared_server.port, user="nodedb", database="nodedb"
    )
    try:
        await conn.execute("CREATE COLLECTION one_message TYPE KEY_VALUE (key TEXT PRIMARY KEY)")
        with pytest.raises(asyncpg.UndefinedTableError):
            await conn.execute(
                "INSERT INTO one_message (key) VALUES ('a'); SELECT * FROM no_such_collection"
            )
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "INSERT INTO one_message (key) VALUES ('b'); INSERT INTO one_message (key) VALUES ('b')"
            )
        assert await conn.fetchval("SELECT count(*) FROM one_message") == 0
        await conn.execute(
            "INSERT INTO one_message (key) VALUES ('c'); UPDATE one_message SET v = 1 WHERE key = 'c'"
        )
        assert await conn.fetch("SELECT key, v FROM one_message") == [("c", 1)]
    finally:
        await conn.close()


def test_psql_script_error_reports_and_keeps_nothing(shared_server: ServerProcess) -> None:
    sql = "INSERT INTO apg_script (key) VALUES ('x'); SELECT * FROM no_such_collection;"
    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION apg_script TYPE KEY_VALUE (key TEXT PRIMARY KEY)")
        out = subprocess.run(
            [*shared_server.psql(), "-c", sql], capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 1 and "no_such_collection" in out.stderr, out
        assert conn.execute("SELECT count(*) FROM apg_script").fetchone() == (0,)


def test_parameters_next_to_operators_parse_as_in_postgresql(shared_server: ServerProcess) -> None:
    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT %s::int8+%s::int8", (1, 2)).fetchone() == (3,)
        assert conn.execute("SELECT %s::text||%s::text", ("a", "b")).fetchone() == ("ab",)
        assert conn.execute("SELECT '$1+$2' AS t").fetchone() == ("$1+$2",)
        conn.execute("PREPARE sum2 (int8, int8) AS SELECT $1+$2")
        assert conn.execute("EXECUTE sum2 (40, 2)").fetchone() == (42,)
