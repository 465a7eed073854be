"""W3, W4 and W8 of BENCH.md: timeseries COPY and time buckets, and vector search."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time

import asyncpg
import numpy as np
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


# HNSW parameters for W8: usearch's defaults (m 16, ef_search 64) reach recall 0.21 on
# 100,000 random 128-d vectors; these reach 0.95 (see bench/RESULTS.md for the trade).
W8_INDEX = "WITH (m = 32, ef_construction = 256, ef_search = 512)"


def w8_load(dsn: str, n: int, dim: int) -> tuple[np.ndarray, float]:
    """Load the vectors, then build the index over them; returns (vectors, build seconds)."""
    rng = np.random.default_rng(8)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE COLLECTION items")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO items (id, emb) VALUES (%s, %s::float4[])",
                [(f"i{i}", vectors[i].tolist()) for i in range(n)],
            )
        start = time.perf_counter()
        conn.execute(
            f"CREATE VECTOR INDEX idx_items ON items FIELD emb METRIC cosine DIM {dim} {W8_INDEX}"
        )
        return vectors, time.perf_counter() - start


def w8_search(
    dsn: str, vectors: np.ndarray, seconds: float, connections: int = 16
) -> tuple[float, float]:
    """SEARCH k=10 from 16 connections: (queries/s, recall@10 against exact search)."""
    rng = np.random.default_rng(81)
    queries = rng.standard_normal((200, vectors.shape[1])).astype(np.float32)
    norms = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    async def run() -> tuple[int, float]:
        conns = [
            await psycopg.AsyncConnection.connect(dsn, autocommit=True) for _ in range(connections)
        ]
        done = 0
        hits = total = 0
        deadline = time.perf_counter() + seconds

        async def worker(conn: psycopg.AsyncConnection, wid: int) -> None:
            nonlocal done, hits, total
            i = wid
            while time.perf_counter() < deadline:
                q = queries[i % len(queries)]
                cur = await conn.execute("SEARCH items USING VECTOR(emb, %s, 10)", (q.tolist(),))
                got = [r[0] for r in await cur.fetchall()]
                if i < len(queries):
                    exact = np.argsort(-(norms @ (q / np.linalg.norm(q))))[:10]
                    hits += len(set(got) & {f"i{j}" for j in exact})
                    total += 10
                done += 1
                i += connections

        start = time.perf_counter()
        await asyncio.gather(*(worker(c, w) for w, c in enumerate(conns)))
        elapsed = time.perf_counter() - start
        for c in conns:
            await c.close()
        return int(done / elapsed), hits / max(total, 1)

    qps, recall = asyncio.run(run())
    return float(qps), recall


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
