"""COPY .. FROM STDIN into document and key-value collections (text and csv), through
psql's \\copy and psycopg's copy(): rows land typed as their fields are, and a bad line
loads nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest

from tests.serverproc import ServerProcess


def _psql(srv: ServerProcess, *commands: str) -> subprocess.CompletedProcess[str]:
    args = [*srv.psql(), "-X", "-v", "ON_ERROR_STOP=1"]
    for c in commands:
        args += ["-c", c]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def test_psql_copy_round_trips_a_collection(shared_server: ServerProcess, tmp_path: Path) -> None:
    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION cin_src")
        conn.execute(
            "INSERT INTO cin_src (id, name, n) VALUES ('a', 'tab\there', 1), ('b', 'new\nline', 2),"
            " ('c', NULL, 3)"
        )
        conn.execute("CREATE COLLECTION cin_dst")
        conn.execute("INSERT INTO cin_dst (id, name, n) VALUES ('z', 'seed', 0)")  # n is int8
    dump = tmp_path / "rows.txt"
    out = _psql(
        shared_server,
        f"\\copy (SELECT id, name, n FROM cin_src WHERE id <> 'z') TO '{dump}'",
        f"\\copy cin_dst (id, name, n) FROM '{dump}'",
    )
    assert out.returncode == 0, out.stderr
    assert "COPY 3" in out.stdout
    with psycopg.connect(shared_server.dsn()) as conn:
        rows = conn.execute("SELECT id, name, n FROM cin_dst ORDER BY id").fetchall()
    assert rows == [("a", "tab\there", 1), ("b", "new\nline", 2), ("c", None, 3), ("z", "seed", 0)]


def test_csv_with_header_into_a_key_value_collection(shared_server: ServerProcess) -> None:
    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION cin_kv TYPE KEY_VALUE (key TEXT PRIMARY KEY, hits INT8)")
        with conn.cursor() as cur:
            with cur.copy(
                "COPY cin_kv (key, hits, note) FROM STDIN WITH (FORMAT csv, HEADER)"
            ) as cp:
                cp.write('key,hits,note\nk1,5,"a, b"\nk2,7,\n')
            assert cur.rowcount == 2
        rows = conn.execute("SELECT key, hits, note FROM cin_kv ORDER BY key").fetchall()
        assert rows == [("k1", 5, "a, b"), ("k2", 7, None)]


@pytest.mark.parametrize(
    ("data", "sqlstate"),
    [
        ("k9\t1\nk1\t2\n", "23505"),  # k1 exists: nothing of the COPY lands
        ("k8\t1\nk7\n", "22P04"),  # a line short of values
        ("k6\tmany\n", "22P02"),  # hits is int8
    ],
)
def test_a_bad_line_loads_nothing(shared_server: ServerProcess, data: str, sqlstate: str) -> None:
    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        conn.execute(
            "CREATE COLLECTION IF NOT EXISTS cin_bad TYPE KEY_VALUE (key TEXT PRIMARY KEY, hits INT8)"
        )
        conn.execute("UPSERT INTO cin_bad { key: 'k1', hits: 1 }")
        with (
            pytest.raises(psycopg.Error) as err,
            conn.cursor() as cur,
            cur.copy("COPY cin_bad (key, hits) FROM STDIN") as cp,
        ):
            cp.write(data)
        assert err.value.sqlstate == sqlstate
        assert conn.execute("SELECT key, hits FROM cin_bad").fetchall() == [("k1", 1)]


def test_copy_in_a_transaction_rolls_back(shared_server: ServerProcess) -> None:
    with psycopg.connect(shared_server.dsn()) as conn:
        conn.execute("CREATE COLLECTION cin_txn")
        conn.commit()
        with conn.cursor() as cur, cur.copy("COPY cin_txn (id, v) FROM STDIN") as cp:
            cp.write("x\t1\n")
        assert conn.execute("SELECT id FROM cin_txn").fetchall() == [("x",)]
        conn.rollback()
        assert conn.execute("SELECT id FROM cin_txn").fetchall() == []


def test_asyncpg_copy_records_to_table_binary(shared_server: ServerProcess) -> None:
    """asyncpg describes the collection's columns, encodes the records in those types and
    sends binary COPY; they land typed."""
    import asyncio
    import datetime as dt

    import asyncpg

    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION cin_bin")
        conn.execute(
            "INSERT INTO cin_bin (id, n, x, ok, at, label) VALUES"
            " ('seed', 1, 0.5, true, '2024-01-01T00:00:00Z'::timestamptz, 's')"
        )
    at = dt.datetime(2025, 6, 7, 8, 9, 10, tzinfo=dt.UTC)

    async def load() -> str:
        conn = await asyncpg.connect(f"postgresql://nodedb@127.0.0.1:{shared_server.port}/nodedb")
        try:
            return await conn.copy_records_to_table(
                "cin_bin",
                records=[("r1", 10, 1.25, False, at, "one"), ("r2", None, 2.5, True, None, None)],
                columns=["id", "n", "x", "ok", "at", "label"],
            )
        finally:
            await conn.close()

    assert asyncio.run(load()) == "COPY 2"
    with psycopg.connect(shared_server.dsn()) as conn:
        rows = conn.execute(
            "SELECT id, n, x, ok, at, label FROM cin_bin WHERE id <> 'seed' ORDER BY id"
        ).fetchall()
    assert rows == [("r1", 10, 1.25, False, at, "one"), ("r2", None, 2.5, True, None, None)]


def test_psycopg_binary_copy_and_a_truncated_stream(shared_server: ServerProcess) -> None:
    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION cin_pbin TYPE KEY_VALUE (key TEXT PRIMARY KEY, hits INT8)")
        with conn.cursor() as cur:
            with cur.copy("COPY cin_pbin (key, hits) FROM STDIN (FORMAT binary)") as cp:
                cp.set_types(["text", "int8"])
                cp.write_row(("a", 1))
                cp.write_row(("b", None))
            assert cur.rowcount == 2
        assert conn.execute("SELECT key, hits FROM cin_pbin ORDER BY key").fetchall() == [
            ("a", 1),
            ("b", None),
        ]
        with (
            pytest.raises(psycopg.Error) as err,
            conn.cursor() as cur,
            cur.copy("COPY cin_pbin (key, hits) FROM STDIN (FORMAT binary)") as cp,
        ):
            cp.write(b"PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00")
        assert err.value.sqlstate == "22P04"
        assert conn.execute("SELECT count(*) FROM cin_pbin").fetchone() == (2,)


def test_binary_copy_out_and_back_in(shared_server: ServerProcess) -> None:
    """COPY .. TO STDOUT (FORMAT binary) read by psycopg with the described types, and its
    bytes loaded into another collection with binary COPY FROM."""
    import datetime as dt

    at = dt.datetime(2024, 2, 3, 4, 5, 6, tzinfo=dt.UTC)
    with psycopg.connect(shared_server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION bout_src")
        conn.execute(
            "INSERT INTO bout_src (id, n, x, at, tags) VALUES"
            " ('a', 1, 1.5, %s, NULL), ('b', NULL, -2.25, NULL, NULL)",
            (at,),
        )
        with conn.cursor() as cur:
            with cur.copy(
                "COPY (SELECT id, n, x, at FROM bout_src ORDER BY id) TO STDOUT (FORMAT binary)"
            ) as cp:
                cp.set_types(["text", "int8", "float8", "timestamptz"])
                rows = list(cp.rows())
            with cur.copy(
                "COPY (SELECT id, n, x, at FROM bout_src ORDER BY id) TO STDOUT (FORMAT binary)"
            ) as cp:
                raw = b"".join(bytes(b) for b in cp)
        assert rows == [("a", 1, 1.5, at), ("b", None, -2.25, None)]
        assert raw.startswith(b"PGCOPY\n\xff\r\n\x00") and raw.endswith(b"\xff\xff")
        conn.execute("CREATE COLLECTION bout_dst")
        conn.execute("INSERT INTO bout_dst (id, n, x, at) VALUES ('seed', 0, 0.5, %s)", (at,))
        with (
            conn.cursor() as cur,
            cur.copy("COPY bout_dst (id, n, x, at) FROM STDIN (FORMAT binary)") as cp,
        ):
            cp.write(raw)
        got = conn.execute(
            "SELECT id, n, x, at FROM bout_dst WHERE id <> 'seed' ORDER BY id"
        ).fetchall()
        assert got == [("a", 1, 1.5, at), ("b", None, -2.25, None)]
