"""W7 of BENCH.md: restart after kill -9 with N single-row commits since the last checkpoint.

Both servers are loaded through 16 connections, one row per commit, with checkpoints
kept out of the way (PostgreSQL: checkpoint_timeout = 1d, max_wal_size = 64GB; ours:
checkpoints off by config) and commits acknowledged before their fsync to load faster
(PostgreSQL: synchronous_commit = off; ours: fsync = "batch"). One last commit with
synchronous_commit on makes PostgreSQL's WAL durable up to it, so that both sides
recover every acknowledged row. Then kill -9 (for PostgreSQL, the postmaster and every
backend) and time from exec to the first answered SELECT count(*), checking the count.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from pathlib import Path
from subprocess import Popen

import asyncpg

from bench.pg import Postgres
from tests.serverproc import ServerProcess

CONNECTIONS = 16
PG_SETTINGS = {
    "checkpoint_timeout": "1d",
    "max_wal_size": "64GB",
    "synchronous_commit": "off",
}
NODEDB_ENV = {
    "NODEDB_CHECKPOINT_INTERVAL_SECONDS": "0",
    "NODEDB_CHECKPOINT_WAL_BYTES": "0",
    "NODEDB_WAL_FSYNC": "batch",
}


async def _load(port: int, user: str, database: str, create: str, insert: str, n: int) -> int:
    """``n`` single-row commits from 16 connections; returns how many were acknowledged."""
    conns = [
        await asyncpg.connect(host="127.0.0.1", port=port, user=user, database=database)
        for _ in range(CONNECTIONS)
    ]
    try:
        await conns[0].execute(create)
        counter = itertools.count()
        acked = 0

        async def worker(conn: asyncpg.Connection) -> None:
            nonlocal acked
            stmt = await conn.prepare(insert)
            while (i := next(counter)) < n:
                await stmt.fetch(f"k{i}", f"name-{i}", i)
                acked += 1

        await asyncio.gather(*(worker(c) for c in conns))
        return acked
    finally:
        for c in conns:
            await c.close()


async def _first_count(
    port: int, user: str, database: str, table: str, timeout: float, proc: Popen[bytes]
) -> int:
    """Poll until the server answers SELECT count(*); returns the count."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} during recovery")
        try:
            conn = await asyncpg.connect(
                host="127.0.0.1", port=port, user=user, database=database, timeout=1
            )
            try:
                return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
            finally:
                await conn.close()
        except (TimeoutError, OSError, asyncpg.PostgresError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.005)


def nodedb(work: Path, n: int) -> tuple[float, int, int]:
    """(seconds from exec to the first answered count, rows acknowledged, rows found)."""
    work.mkdir(parents=True, exist_ok=True)
    srv = ServerProcess(work / "w7-nodedb", env=NODEDB_ENV).start()
    try:
        acked = asyncio.run(
            _load(
                srv.port,
                "nodedb",
                "nodedb",
                "CREATE COLLECTION IF NOT EXISTS w7",
                "INSERT INTO w7 (id, name, age) VALUES ($1, $2, $3::int8)",
                n,
            )
        )
        srv.kill9()
        start = time.perf_counter()
        srv.start(timeout=600, wait_ready=False)  # the count waits for the tenant
        assert srv.proc is not None
        found = asyncio.run(_first_count(srv.port, "nodedb", "nodedb", "w7", 600, srv.proc))
        return time.perf_counter() - start, acked, found
    finally:
        srv.stop(timeout=600)


def postgres(n: int) -> tuple[float, int, int]:
    pg = Postgres().start(PG_SETTINGS)
    try:
        acked = asyncio.run(
            _load(
                pg.port,
                "postgres",
                "postgres",
                "CREATE TABLE w7 (id text PRIMARY KEY, name text, age int8)",
                "INSERT INTO w7 (id, name, age) VALUES ($1, $2, $3)",
                n,
            )
        )

        async def durable() -> None:
            conn = await asyncpg.connect(host="127.0.0.1", port=pg.port, user="postgres")
            try:
                await conn.execute("SET synchronous_commit = on")
                await conn.execute("CREATE TABLE w7_flush (x int)")
            finally:
                await conn.close()

        asyncio.run(durable())
        pg.kill9()
        start = time.perf_counter()
        proc = pg.exec_postgres()
        try:
            found = asyncio.run(_first_count(pg.port, "postgres", "postgres", "w7", 600, proc))
        except BaseException:
            proc.kill()
            print((pg.dir / "log").read_text()[-2000:])
            raise
        return time.perf_counter() - start, acked, found
    finally:
        pg.stop()


def run(work: Path, n: int, runs: int) -> dict[str, float]:
    """Each time the median of ``runs`` (each run loads both servers afresh)."""
    ours, theirs, found, acked = [], [], [], []
    for r in range(runs):
        seconds, ours_acked, ours_found = nodedb(work / f"run{r}", n)
        if ours_found < ours_acked:
            raise AssertionError(f"W7: {ours_acked - ours_found} acknowledged rows lost")
        ours.append(seconds)
        seconds, pg_acked, pg_found = postgres(n)
        theirs.append(seconds)
        found.append(pg_found)
        acked.append(pg_acked)
    return {
        "W7": statistics.median(ours),
        "W7_pg": statistics.median(theirs),
        "W7_rows": n,
        "W7_pg_found": min(found),
        "W7_pg_acked": max(acked),
    }
