"""W8 and W8b of BENCH.md: vector search over clustered data, and loading it.

The data is embedding-like: a mixture of 1,000 Gaussian clusters in 128 dimensions,
and each query is a fresh draw from the same mixture. W8 runs SEARCH k = 10 from 16
connections and prints beside it usearch called in-process on the same vectors with
the same parameters, one query a call: that is the goal's reference. W8b loads the
vectors into a collection that already has its vector index, by executemany of
INSERTs, and reports vectors/s. Both use asyncpg, with the vector as a float4[]
parameter (binary on the wire).
"""

from __future__ import annotations

import asyncio
import statistics
import time

import asyncpg
import numpy as np
from usearch.index import Index

from nodedb_server.engines.vector import HNSW_DEFAULTS

DIM = 128
CLUSTERS = 1000
SPREAD = 0.5  # each cluster's standard deviation per dimension; centres are N(0, 1)
K = 10
CONNECTIONS = 16
BATCH = 1000  # rows per executemany call
RECALL_QUERIES = 200
# The server's defaults for an index created without WITH (m 16, ef_construction 64,
# ef_search 64) reach recall@10 1.000 on this data; the in-process reference is given
# the same.
INDEX = "CREATE VECTOR INDEX idx_{0} ON {0} FIELD emb METRIC cosine DIM {1}"


def mixture(n: int, seed: int) -> np.ndarray:
    """``n`` draws from the fixed mixture (its centres do not depend on ``seed``)."""
    centres = np.random.default_rng(1000).standard_normal((CLUSTERS, DIM)).astype(np.float32)
    rng = np.random.default_rng(seed)
    which = rng.integers(0, CLUSTERS, n)
    return (centres[which] + SPREAD * rng.standard_normal((n, DIM))).astype(np.float32)


def exact_top(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """The true k nearest by cosine distance, one row per query."""
    vn = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return np.argsort(-(qn @ vn.T), axis=1)[:, :K]


async def _connect(port: int, user: str, database: str) -> asyncpg.Connection:
    return await asyncpg.connect(host="127.0.0.1", port=port, user=user, database=database)


async def w8b_load(port: int, user: str, database: str, name: str, vectors: np.ndarray) -> float:
    """Load into a new indexed collection by executemany of INSERTs: vectors/s."""
    conn = await _connect(port, user, database)
    try:
        await conn.execute(f"CREATE COLLECTION {name}")
        await conn.execute(INDEX.format(name, DIM))
        rows = [(f"i{i}", v) for i, v in enumerate(vectors.tolist())]
        start = time.perf_counter()
        for i in range(0, len(rows), BATCH):
            await conn.executemany(
                f"INSERT INTO {name} (id, emb) VALUES ($1, $2::float4[])", rows[i : i + BATCH]
            )
        elapsed = time.perf_counter() - start
        count = await conn.fetchval(f"SELECT count(*) FROM {name}")
        assert count == len(rows), f"{count} of {len(rows)} vectors stored"
        return len(rows) / elapsed
    finally:
        await conn.close()


async def w8_search(
    port: int,
    user: str,
    database: str,
    name: str,
    queries: np.ndarray,
    truth: np.ndarray,
    seconds: float,
) -> tuple[float, float]:
    """SEARCH k = 10 from 16 connections: (queries/s, recall@10 against exact search)."""
    conns = [await _connect(port, user, database) for _ in range(CONNECTIONS)]
    qs = queries.tolist()
    want = [{f"i{j}" for j in row} for row in truth.tolist()]
    done = hits = total = 0
    try:
        stmts = [
            await c.prepare(f"SEARCH {name} USING VECTOR(emb, $1::float4[], {K})") for c in conns
        ]
        deadline = time.perf_counter() + seconds

        async def worker(wid: int) -> None:
            nonlocal done, hits, total
            i = wid
            while time.perf_counter() < deadline:
                got = [r[0] for r in await stmts[wid].fetch(qs[i % len(qs)])]
                if i < len(qs):
                    hits += len(set(got) & want[i])
                    total += K
                done += 1
                i += CONNECTIONS

        start = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(CONNECTIONS)))
        return done / (time.perf_counter() - start), hits / max(total, 1)
    finally:
        for c in conns:
            await c.close()


def in_process(
    vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, seconds: float
) -> tuple[float, float]:
    """usearch in this process, same data and parameters, one query a call:
    (queries/s, recall@10)."""
    index = Index(
        ndim=DIM,
        metric="cos",
        dtype="f32",
        connectivity=HNSW_DEFAULTS["m"],
        expansion_add=HNSW_DEFAULTS["ef_construction"],
        expansion_search=HNSW_DEFAULTS["ef_search"],
    )
    index.add(np.arange(len(vectors), dtype=np.uint64), vectors, threads=2)
    hits = 0
    for q, row in zip(queries, truth, strict=True):
        hits += len(set(index.search(q, K).keys.tolist()) & set(row.tolist()))
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        index.search(queries[done % len(queries)], K)
        done += 1
    return done / (time.perf_counter() - start), hits / (K * len(queries))


def run(port: int, user: str, database: str, n: int, seconds: float, runs: int) -> dict[str, float]:
    """Each figure the median of ``runs``; each run loads a collection of its own."""
    vectors = mixture(n, seed=8)
    queries = mixture(RECALL_QUERIES, seed=81)
    truth = exact_top(vectors, queries)
    figs: dict[str, list[float]] = {}
    for r in range(runs):
        name = f"items{r}"
        load = asyncio.run(w8b_load(port, user, database, name, vectors))
        qps, recall = asyncio.run(w8_search(port, user, database, name, queries, truth, seconds))
        ref_qps, ref_recall = in_process(vectors, queries, truth, seconds)
        for key, value in (
            ("W8", qps),
            ("W8_recall", recall),
            ("W8_ref", ref_qps),
            ("W8_ref_recall", ref_recall),
            ("W8b", load),
        ):
            figs.setdefault(key, []).append(value)
    return {key: statistics.median(values) for key, values in figs.items()}
