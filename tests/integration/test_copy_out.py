"""COPY .. TO STDOUT in text and CSV through psql (and its \\copy), psycopg and asyncpg.
The expected texts are PostgreSQL's COPY formats for the same rows: text escapes a
backslash, tab, newline and CR and writes NULL as \\N; CSV quotes a value holding the
delimiter, the quote or a line break, and an empty string, and writes NULL as nothing."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest

from tests.serverproc import ServerProcess

ROWS = [
    ("u1", "Ann", 31),
    ("u2", "Bob, Jr.", None),
    ("u3", 'say "hi"\tand\\go', 5),
    ("u4", "", 7),
    ("u5", "two\nlines", 9),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("copyout") / "data").start()
    with psycopg.connect(srv.dsn(), autocommit=True) as c:
        c.execute("CREATE COLLECTION users")
        for row in ROWS:
            c.execute("INSERT INTO users (id, name, age) VALUES (%s, %s, %s::int8)", row)
        c.execute("CREATE COLLECTION kv TYPE KEY_VALUE (key TEXT PRIMARY KEY, hits INT8)")
        c.execute("INSERT INTO kv (key, hits) VALUES ('a', 1), ('b', 2)")
    yield srv
    srv.kill9()


def psql(server: ServerProcess, *commands: str) -> str:
    args = [*server.psql()]
    for cmd in commands:
        args += ["-c", cmd]
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=True).stdout


def copy_out(server: ServerProcess, sql: str) -> str:
    with psycopg.connect(server.dsn(), autocommit=True) as c, c.cursor().copy(sql) as copy:
        return b"".join(bytes(chunk) for chunk in copy).decode()


TEXT = 'u1\tAnn\t31\nu2\tBob, Jr.\t\\N\nu3\tsay "hi"\\tand\\\\go\t5\nu4\t\t7\nu5\ttwo\\nlines\t9\n'
CSV = (
    "id,name,age\n"
    "u1,Ann,31\n"
    'u2,"Bob, Jr.",\n'
    'u3,"say ""hi""\tand\\go",5\n'
    'u4,"",7\n'
    'u5,"two\nlines",9\n'
)


def test_copy_to_stdout_in_text_and_csv(server: ServerProcess) -> None:
    assert copy_out(server, "COPY users TO STDOUT") == TEXT
    assert copy_out(server, "COPY users TO STDOUT WITH (FORMAT csv, HEADER)") == CSV
    assert copy_out(server, "COPY users TO STDOUT CSV HEADER") == CSV  # the pre-9.0 words
    assert (
        copy_out(server, "COPY users (id, age) TO STDOUT (FORMAT csv, DELIMITER '|', NULL 'x')")
        == "u1|31\nu2|x\nu3|5\nu4|7\nu5|9\n"
    )
    assert copy_out(server, "COPY kv TO STDOUT (FORMAT csv)") == "a,1\nb,2\n"


def test_copy_a_query_to_stdout(server: ServerProcess) -> None:
    sql = "COPY (SELECT id, age * 2 AS twice FROM users WHERE age > 6 ORDER BY id) TO STDOUT CSV"
    assert copy_out(server, sql) == "u1,62\nu4,14\nu5,18\n"
    out = psql(server, "COPY (SELECT count(*) FROM users) TO STDOUT")
    assert out == "5\n"


def test_psql_copy_writes_a_client_file(server: ServerProcess, tmp_path: Path) -> None:
    target = tmp_path / "users.csv"
    out = psql(server, f"\\copy users TO '{target}' csv header")
    assert out.strip() == "COPY 5"
    assert target.read_text() == CSV


def test_asyncpg_copy_from_table_and_query(server: ServerProcess, tmp_path: Path) -> None:
    async def run() -> tuple[str, str]:
        conn = await asyncpg.connect(host="127.0.0.1", port=server.port, user="nodedb")
        try:
            table, query = tmp_path / "t.csv", tmp_path / "q.txt"
            await conn.copy_from_table("users", output=str(table), format="csv", header=True)
            await conn.copy_from_query("SELECT id FROM users WHERE age < 8", output=str(query))
            return table.read_text(), query.read_text()
        finally:
            await conn.close()

    table, query = asyncio.run(run())
    assert table == CSV
    assert sorted(query.split()) == ["u3", "u4"]


@pytest.mark.parametrize(
    ("sql", "state"),
    [
        ("COPY users TO '/tmp/x'", "0A000"),  # server-side files are never written
        ("COPY users TO STDOUT (FORMAT binary, HEADER)", "42601"),
        ("COPY users TO STDOUT (FORMAT xml)", "22023"),
        ("COPY users TO STDOUT (DELIMITER '||')", "22023"),
        ("COPY users TO STDOUT (QUOTE '''')", "0A000"),  # QUOTE is CSV's
        ("COPY nosuch TO STDOUT", "42P01"),
        ("COPY (DELETE FROM users) TO STDOUT", "0A000"),
    ],
)
def test_bad_copy_to_is_refused_and_the_session_goes_on(
    server: ServerProcess, sql: str, state: str
) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.Error) as err, c.cursor().copy(sql) as copy:
            for _ in copy:
                pass
        assert err.value.sqlstate == state, err.value
        assert c.execute("SELECT count(*) FROM users").fetchone() == (5,)
