"""PostgreSQL's JDBC driver (Debian's libpostgresql-jdbc-java) against the server:
DatabaseMetaData.getTables, getColumns, getPrimaryKeys and getIndexInfo, a savepoint rolled back, a typed parameter.
The program is tests/java/JdbcMeta.java, compiled here with javac."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import psycopg

from tests.serverproc import ROOT, ServerProcess

JAR = Path("/usr/share/java/postgresql.jar")


def test_jdbc_metadata_savepoint_and_parameters(server: ServerProcess, tmp_path: Path) -> None:
    assert JAR.exists() and shutil.which("javac"), "tests/ensure_tools.sh installs them"
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION users")
        conn.execute(
            "INSERT INTO users (id, name, age) VALUES ('u1', 'Alice', 30), ('u2', 'Bob', 25)"
        )
        conn.execute("CREATE INDEX idx_age ON users FIELDS age")
        conn.execute(
            "CREATE TABLE orders (id SERIAL PRIMARY KEY, customer VARCHAR(20) NOT NULL,"
            " qty INT DEFAULT 1)"
        )
    shutil.copy(ROOT / "tests" / "java" / "JdbcMeta.java", tmp_path)
    subprocess.run(
        ["javac", "-cp", str(JAR), "JdbcMeta.java"], cwd=tmp_path, check=True, timeout=120
    )
    out = subprocess.run(
        ["java", "-cp", f"{JAR}:.", "JdbcMeta", str(server.port)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "table users TABLE" in lines
    assert [line for line in lines if line.startswith("column ")] == [
        "column id text 12",
        "column name text 12",
        "column age int8 -5",
    ]
    assert [line for line in lines if line.startswith("pk ")] == ["pk id users_pkey"]
    assert [line for line in lines if line.startswith("index ")] == [
        "index users_pkey id false",
        "index idx_age age true",
    ]
    assert [line for line in lines if line.startswith("tcolumn ")] == [
        "tcolumn id serial 0 nextval('orders_id_seq'::regclass)",
        "tcolumn customer varchar 0 null",
        "tcolumn qty int4 1 1",
    ]
    assert [line for line in lines if line.startswith("row ")] == ["row j1"]  # j2 rolled back
    assert [line for line in lines if line.startswith("older ")] == ["older Alice"]
