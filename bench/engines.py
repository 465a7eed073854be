"""W3 and W4 of BENCH.md (timeseries COPY and time buckets), and the index-at-scale report."""

from __future__ import annotations

import datetime as dt
import random
import time

import asyncpg
import psycopg

T0 = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
NODEDB_CPU = (
    "CREATE COLLECTION cpu TYPE COLUMNAR (ts TIMESTAMP TIME_KEY, host VARCHAR, load FLOAT) "
    "WITH profile = 'timeseries', partition_by = '1h'"
)
PG_CPU = "CREATE TABLE cpu (ts timestamptz NOT NULL, host text, load float8)"
NODEDB_BUCKETS = (
    "SELECT time_bucket('5 minutes', ts) AS b, host, AVG(load), COUNT(*) FROM cpu "
    "GROUP BY b, host ORDER BY b"
)
PG_BUCKETS = (
    "SELECT date_bin('5 minutes', ts, '2000-01-01') AS b, host, AVG(load), COUNT(*) "
    "FROM cpu GROUP BY b, host ORDER BY b"
)


def cpu_csv(rows: int) -> bytes:
    """``rows`` rows over one day, 8 hosts, as CSV (the same bytes for both servers)."""
    rng = random.Random(11)
    step = 86_400_000_000 // rows
    base = int(T0.timestamp() * 1_000_000)
    lines = []
    for i in range(rows):
        ts = dt.datetime.fromtimestamp((base + i * step) / 1e6, dt.UTC)
        lines.append(f"{ts:%Y-%m-%d %H:%M:%S.%f}+00,h{rng.randrange(8)},{rng.random():.4f}\n")
    return "".join(lines).encode()


async def w3_copy(
    port: int, user: str, database: str, create: str, data: bytes, rows: int
) -> float:
    """COPY ... FROM STDIN (csv) of the whole data set: rows/s."""
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user=user, database=database)
    try:
        await conn.execute(create)
        start = time.perf_counter()
        await conn.copy_to_table("cpu", source=_chunks(data), format="csv")
        return rows / (time.perf_counter() - start)
    finally:
        await conn.close()


async def _chunks(data: bytes, size: int = 1 << 20):  # type: ignore[no-untyped-def]
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def w4_buckets(port: int, user: str, database: str, query: str, runs: int) -> float:
    """time_bucket (date_bin) + GROUP BY over the W3 rows: median ms."""
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user=user, database=database)
    try:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            rows = await conn.fetch(query)
            times.append((time.perf_counter() - start) * 1000)
            assert len(rows) == 288 * 8
        return sorted(times)[len(times) // 2]
    finally:
        await conn.close()


def index_at_scale(dsn: str, n: int) -> list[str]:
    """Load ``n`` documents, index one field, and show that an indexed query touches only
    its matches (EXPLAIN ANALYZE), with the load, index build and query times."""
    rng = random.Random(12)
    lines = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE COLLECTION people")
        start = time.perf_counter()
        for i in range(0, n, 1000):
            body = ", ".join(
                f"{{ id: 'p{j}', age: {rng.randrange(100)}, city: 'c{j % 1000}' }}"
                for j in range(i, min(i + 1000, n))
            )
            conn.execute(f"INSERT INTO people [ {body} ]")
        lines.append(f"loaded {n:,} documents in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        conn.execute("CREATE INDEX idx_city ON people FIELDS city")
        lines.append(f"CREATE INDEX on a 1,000-value field: {time.perf_counter() - start:.2f} s")
        start = time.perf_counter()
        plan = [
            r[0] for r in conn.execute("EXPLAIN ANALYZE SELECT id FROM people WHERE city = 'c7'")
        ]
        lines.append(
            f"indexed query: {(time.perf_counter() - start) * 1000:.1f} ms; plan: {' / '.join(plan)}"
        )
        start = time.perf_counter()
        plan = [r[0] for r in conn.execute("EXPLAIN ANALYZE SELECT id FROM people WHERE age = 7")]
        lines.append(
            f"unindexed query: {(time.perf_counter() - start) * 1000:.1f} ms; plan: {' / '.join(plan)}"
        )
    return lines
