"""CREATE TABLE, ALTER TABLE .. ADD COLUMN and DROP TABLE: each statement compared with
the answer PostgreSQL gives (rows, column types, command tags, SQLSTATEs); a table's
schema kept through kill -9, checkpoints and a backup restored; SQLAlchemy's ORM and
pandas creating and filling tables of their own."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.ext.asyncio import create_async_engine

from tests.serverproc import ServerProcess

# Each statement runs on PostgreSQL and on the server, in order, on one connection each.
SCRIPT = [
    "CREATE TABLE orders (id SERIAL PRIMARY KEY, customer TEXT NOT NULL, total NUMERIC(10, 2),"
    " qty INTEGER DEFAULT 1, big BIGINT, small SMALLINT, ok BOOLEAN, r REAL,"
    " d DOUBLE PRECISION, v VARCHAR(20), j JSONB, at TIMESTAMP, atz TIMESTAMPTZ, b BYTEA)",
    "INSERT INTO orders (customer, total) VALUES ('ann', 10.5), ('bob', 20) RETURNING id, qty",
    "INSERT INTO orders (id, customer, big, small, ok, r, d, v, j, at, atz, b) VALUES (10, 'cid',"
    " 9000000000, 7, true, 1.5, 2.25, 'vv', '{\"a\": [1, 2]}', '2024-01-02 03:04:05',"
    " '2024-01-02 03:04:05+00', '\\x0102')",
    "SELECT * FROM orders ORDER BY id",
    "SELECT id, customer FROM orders WHERE id = 10",
    "SELECT id FROM orders WHERE id IN (1, 10) ORDER BY id",
    "INSERT INTO orders (total) VALUES (1)",
    "INSERT INTO orders (customer, colour) VALUES ('x', 1)",
    "INSERT INTO orders (customer, qty) VALUES ('x', 'abc')",
    "INSERT INTO orders (customer, small) VALUES ('x', 40000)",
    "INSERT INTO orders (customer, qty) VALUES ('x', 3000000000)",
    "INSERT INTO orders (id, customer) VALUES (10, 'dup')",
    "INSERT INTO orders (customer, v) VALUES ('x', 'abcdefghijklmnopqrstuvwxyz')",
    "INSERT INTO orders (id, customer, total) VALUES (30, 'round', 1.005) RETURNING total",
    "INSERT INTO orders (id, customer, total) VALUES (31, 'big', 123456789)",
    "INSERT INTO orders (id, customer, v) VALUES (32, 'sp', 'abc                       ')"
    " RETURNING length(v)",
    "INSERT INTO orders (id, customer, at) VALUES (40, 'tz', '2024-01-01 10:00:00+05')"
    " RETURNING at",
    "INSERT INTO orders (customer, small) VALUES ('b', true)",
    "SELECT sum(total) AS s, avg(total) AS a, count(total) FROM orders",
    "SELECT id, coalesce(total, 0) AS t FROM orders ORDER BY id",
    "SELECT id FROM orders WHERE total = 10.5",
    "DELETE FROM orders WHERE nmae IS NULL",  # a misspelt column is an error, not NULL
    "UPDATE orders SET qty = 1 WHERE nmae IS NULL",
    "SELECT nosuch FROM orders",
    "SELECT id FROM orders ORDER BY nosuch",
    "SELECT count(*) FROM orders",
    "DELETE FROM orders WHERE id >= 30",
    "UPDATE orders SET customer = NULL WHERE id = 10",
    "UPDATE orders SET colour = 'red' WHERE id = 10",
    "UPDATE orders SET qty = qty + 1 WHERE id = 10 RETURNING id, qty",
    "ALTER TABLE orders ADD COLUMN note TEXT",
    "ALTER TABLE orders ADD COLUMN note TEXT",
    "ALTER TABLE orders ADD COLUMN IF NOT EXISTS note TEXT",
    "ALTER TABLE nosuch ADD COLUMN note TEXT",
    "ALTER TABLE IF EXISTS nosuch ADD COLUMN note TEXT",
    "UPDATE orders SET note = 'rush' WHERE id = 2",
    "SELECT id, note FROM orders ORDER BY id",
    "INSERT INTO orders VALUES (20, 'pos', 1.25, 4)",
    "SELECT id, customer, total, qty, note FROM orders WHERE id = 20",
    "INSERT INTO orders VALUES (21, 'x', 1, 1, 1, 1, true, 1, 1, 'v', '{}', NULL, NULL, NULL,"
    " 'n', 'too many')",
    "CREATE TABLE orders (id INT)",
    "CREATE TABLE IF NOT EXISTS orders (id INT)",
    "CREATE TABLE nokey (a BIGINT, b TEXT)",
    "INSERT INTO nokey VALUES (1, 'x'), (2, 'y')",
    "SELECT * FROM nokey ORDER BY a",
    "CREATE INDEX ix_nokey_a ON nokey (a)",
    "SELECT b FROM nokey WHERE a = 2",
    "SELECT o.customer, n.b FROM orders o JOIN nokey n ON n.a + 9 = o.id ORDER BY 1",
    "SELECT customer, qty * 2 AS twice FROM orders WHERE qty > 1 ORDER BY customer",
    "SELECT o.customer, o.total, n.b FROM orders o LEFT JOIN nokey n ON n.a = o.id ORDER BY o.id",
    "SELECT sum(o.total) AS s, max(o.total) AS m FROM orders o JOIN orders p ON p.id = o.id",
    "SELECT DISTINCT total FROM orders WHERE total IS NOT NULL ORDER BY total",
    "CREATE TABLE big (id INT PRIMARY KEY, customer TEXT)",
    "INSERT INTO big SELECT id, customer FROM orders WHERE qty > 1",
    "INSERT INTO big (customer, id) SELECT customer || '!', id + 100 FROM orders WHERE id = 1"
    " RETURNING id, customer",
    "INSERT INTO big (id) SELECT id + 1000 FROM orders WHERE id = 2",
    "INSERT INTO big (id) SELECT id, customer FROM orders",
    "INSERT INTO big SELECT id, customer FROM orders WHERE id = 10",
    "SELECT * FROM big ORDER BY id",
    "DROP TABLE nokey",
    "DROP TABLE IF EXISTS nokey",
    "SELECT count(*) FROM nokey",
    "CREATE TABLE nokey (a TEXT)",
    "INSERT INTO nokey VALUES ('again')",
    "SELECT * FROM nokey",
    "CREATE TABLE pg_mine (k TEXT PRIMARY KEY)",
    "INSERT INTO pg_mine (k) VALUES ('ok')",
    "SELECT k FROM pg_mine",
    "CREATE TABLE seqt (id SERIAL PRIMARY KEY, v TEXT)",
    "SELECT pg_get_serial_sequence('seqt', 'id'), pg_get_serial_sequence('seqt', 'v')",
    "SELECT nextval('seqt_id_seq')",
    "INSERT INTO seqt (v) VALUES ('a') RETURNING id",
    "SELECT currval('seqt_id_seq')",
    "SELECT setval('seqt_id_seq', 10)",
    "INSERT INTO seqt (v) VALUES ('b') RETURNING id",
    "SELECT setval('seqt_id_seq', 20, false)",
    "INSERT INTO seqt (v) VALUES ('c') RETURNING id",
    "SELECT nextval('no_such_seq')",
    "TRUNCATE orders",
    "SELECT count(*) FROM orders",
]


def _outcome(conn: psycopg.Connection[Any], sql: str) -> tuple[Any, ...]:
    try:
        cur = conn.execute(sql)
    except psycopg.Error as e:
        return ("error", e.sqlstate)
    cols = [(d.name, d.type_code) for d in cur.description or []]
    return (cur.statusmessage, cols, cur.fetchall() if cur.description else None)


def test_table_statements_answer_as_postgresql_does(server: ServerProcess, postgres: Any) -> None:
    with (
        psycopg.connect(postgres.dsn(), autocommit=True) as pg,
        psycopg.connect(server.dsn(), autocommit=True) as ours,
    ):
        pg.execute("DROP TABLE IF EXISTS orders, nokey, pg_mine, big, seqt")
        for sql in SCRIPT:
            assert _outcome(ours, sql) == _outcome(pg, sql), sql


def _table_state(srv: ServerProcess) -> tuple[Any, ...]:
    with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
        cols = conn.execute(
            "SELECT column_name, data_type, is_nullable, column_default"
            " FROM information_schema.columns WHERE table_name = 'items' ORDER BY ordinal_position"
        ).fetchall()
        rows = conn.execute("SELECT * FROM items ORDER BY id").fetchall()
    return cols, rows


def test_a_tables_schema_and_rows_survive_kill9_checkpoint_and_restore(tmp_path: Path) -> None:
    allowed = tmp_path / "backups"
    allowed.mkdir()
    env = {"NODEDB_BACKUP_ALLOWED_DIRS": str(allowed)}
    srv = ServerProcess(tmp_path / "data", env=env).start()
    try:
        with psycopg.connect(srv.dsn(), autocommit=True) as su:
            su.execute("CREATE TENANT acme")
        with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE items (id BIGSERIAL PRIMARY KEY, name VARCHAR(40) NOT NULL,"
                " price NUMERIC DEFAULT 0, seen TIMESTAMPTZ)"
            )
            conn.execute("INSERT INTO items (name) VALUES ('a'), ('b')")
            conn.execute("ALTER TABLE items ADD COLUMN tag TEXT")
            conn.execute("INSERT INTO items (name, tag) VALUES ('c', 't')")
        before = _table_state(srv)
        assert before[0] == [
            ("id", "bigint", "NO", "nextval('items_id_seq'::regclass)"),
            ("name", "character varying", "NO", None),
            ("price", "numeric", "YES", "0"),
            ("seen", "timestamp with time zone", "YES", None),
            ("tag", "text", "YES", None),
        ]
        assert [r[:2] for r in before[1]] == [(1, "a"), (2, "b"), (3, "c")]

        srv.kill9()  # replayed from the WAL
        srv.start()
        assert _table_state(srv) == before
        with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        srv.kill9()  # loaded from the checkpoint
        srv.start()
        assert _table_state(srv) == before
        with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
            # the generated key goes on past the keys stored, after a restart too
            assert conn.execute(
                "INSERT INTO items (name) VALUES ('d') RETURNING id"
            ).fetchone() == (4,)
            conn.execute("DELETE FROM items WHERE id = 4")
            conn.execute(f"BACKUP TENANT acme TO '{allowed}/acme.bak'")
            conn.execute("TRUNCATE items")
            conn.execute(f"RESTORE TENANT acme FROM '{allowed}/acme.bak'")
        assert _table_state(srv) == before
        with psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn:
            # DROP TABLE purges: a restore brings the table back only when asked to
            conn.execute("DROP TABLE items")
            conn.execute(f"RESTORE TENANT acme FROM '{allowed}/acme.bak'")
            assert conn.execute(
                "SELECT count(*) FROM pg_class WHERE relname = 'items'"
            ).fetchone() == (0,)
            conn.execute(f"RESTORE TENANT acme FROM '{allowed}/acme.bak' WITH (resurrect)")
        assert _table_state(srv) == before
        with (
            psycopg.connect(srv.dsn(database="acme"), autocommit=True) as conn,
            pytest.raises(psycopg.errors.NotNullViolation),
        ):
            conn.execute("INSERT INTO items (price) VALUES (1)")  # the schema is enforced
    finally:
        srv.kill9()


class Base(orm.DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(50), index=True)
    score: orm.Mapped[float | None]
    joined: orm.Mapped[dt.datetime | None]


def _orm_round_trip(session: orm.Session) -> list[tuple[Any, ...]]:
    session.add_all([User(name="ann", score=1.5), User(name="bob")])
    session.commit()
    with session.begin():
        session.add(User(name="kept"))
        nested = session.begin_nested()
        session.add(User(name="undone"))
        session.flush()
        nested.rollback()
    ann = session.scalars(sa.select(User).where(User.name == "ann")).one()
    ann.score = 2.5
    session.commit()
    assert session.get(User, ann.id) is ann
    rows = session.execute(sa.select(User.id, User.name, User.score).order_by(User.id)).all()
    return [tuple(r) for r in rows]


ORM_ROWS = [(1, "ann", 2.5), (2, "bob", None), (3, "kept", None)]


@pytest.mark.parametrize("driver", ["psycopg", "pg8000"])
def test_sqlalchemy_orm_creates_fills_and_inspects_its_tables(
    server: ServerProcess, driver: str
) -> None:
    engine = sa.create_engine(f"postgresql+{driver}://nodedb@127.0.0.1:{server.port}/nodedb")
    try:
        Base.metadata.create_all(engine)
        with orm.Session(engine) as session:
            assert _orm_round_trip(session) == ORM_ROWS
        insp = sa.inspect(engine)
        assert insp.get_table_names() == ["users"]
        cols = [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns("users")]
        assert cols == [
            ("id", "INTEGER", False),
            ("name", "VARCHAR(50)", False),
            ("score", "DOUBLE PRECISION", True),
            ("joined", "TIMESTAMP", True),
        ]
        assert insp.get_pk_constraint("users")["constrained_columns"] == ["id"]
        assert [(i["name"], i["column_names"]) for i in insp.get_indexes("users")] == [
            ("ix_users_name", ["name"])
        ]
        Base.metadata.drop_all(engine)
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_sqlalchemy_orm_over_asyncpg(server: ServerProcess) -> None:
    async def run() -> list[tuple[Any, ...]]:
        engine = create_async_engine(f"postgresql+asyncpg://nodedb@127.0.0.1:{server.port}/nodedb")
        try:
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all)
            async with engine.connect() as conn:
                return await conn.run_sync(lambda c: _orm_round_trip(orm.Session(bind=c)))
        finally:
            await engine.dispose()

    assert asyncio.run(run()) == ORM_ROWS


FRAME = pd.DataFrame(
    {
        "n": [1, 2, 3],
        "name": ["a", "b", None],
        "x": [1.5, None, 3.25],
        "ok": [True, False, True],
        "at": pd.to_datetime(["2024-01-01 10:00:00", "2024-06-30 23:59:59", "2025-02-03 00:00:00"]),
    }
)


@pytest.mark.parametrize("driver", ["psycopg", "pg8000"])
def test_pandas_to_sql_creates_appends_replaces_and_read_sql_reads_back(
    server: ServerProcess, driver: str
) -> None:
    engine = sa.create_engine(f"postgresql+{driver}://nodedb@127.0.0.1:{server.port}/nodedb")
    try:
        FRAME.to_sql("frame", engine, index=False)
        got = pd.read_sql("SELECT * FROM frame ORDER BY n", engine)
        pd.testing.assert_frame_equal(got, FRAME, check_dtype=False)
        assert str(got["at"].dtype).startswith("datetime64")

        FRAME.assign(n=FRAME.n + 3).to_sql("frame", engine, index=False, if_exists="append")
        assert pd.read_sql("SELECT count(*) AS c FROM frame", engine)["c"].tolist() == [6]
        # with the index, as pandas writes it by default (a column named "index")
        FRAME.to_sql("frame", engine, if_exists="replace")
        back = pd.read_sql_table("frame", engine)
        assert back.columns.tolist() == ["index", *FRAME.columns]
        assert back["index"].tolist() == [0, 1, 2]
        with pytest.raises(ValueError, match="already exists"):
            FRAME.to_sql("frame", engine)  # if_exists="fail"
    finally:
        engine.dispose()


def test_table_parameters_take_their_columns_types(server: ServerProcess) -> None:
    """Untyped parameters (pg8000 sends every one as text, OID 0) are read as the
    table's column types, stored and compared as those."""
    import pg8000.native

    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id INT PRIMARY KEY, amount NUMERIC, at TIMESTAMPTZ)")
    con = pg8000.native.Connection("nodedb", host="127.0.0.1", port=server.port)
    try:
        con.run(
            "INSERT INTO t (id, amount, at) VALUES (:i, :a, :w)",
            i="7",
            a="1.25",
            w="2024-05-06 07:08:09+00",
        )
        assert con.run("SELECT id, amount, at FROM t WHERE id = :i", i="7") == [
            [7, decimal.Decimal("1.25"), dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)]
        ]
    finally:
        con.close()


def test_errors_read_as_postgresqls(server: ServerProcess, postgres: Any) -> None:
    """The message and detail of the errors an application shows its users."""
    script = [
        "CREATE TABLE msg (id INT PRIMARY KEY, name VARCHAR(3) NOT NULL, n SMALLINT)",
        "INSERT INTO msg VALUES (1, 'a', 1)",
    ]
    failing = [
        "INSERT INTO msg VALUES (1, 'b', 1)",
        "INSERT INTO msg (id) VALUES (2)",
        "INSERT INTO msg VALUES (3, 'long', 1)",
        "INSERT INTO msg VALUES (4, 'd', 70000)",
        "INSERT INTO msg (id, name, colour) VALUES (5, 'e', 'red')",
        "SELECT nosuch FROM msg",
    ]
    got, want = [], []
    for dsn, out in ((server.dsn(), got), (postgres.dsn(), want)):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS msg")
            for sql in script:
                conn.execute(sql)
            for sql in failing:
                with pytest.raises(psycopg.Error) as err:
                    conn.execute(sql)
                diag = err.value.diag
                out.append((sql, diag.sqlstate, diag.message_primary, diag.message_detail))
    assert got == want
