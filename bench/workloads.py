"""W1 and W2 of BENCH.md, driven by asyncpg against either server with the same code."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass

import asyncpg

CONNECTIONS = 16


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    user: str
    database: str
    # DDL and the insert differ only where a schemaless collection needs them to.
    create: str
    insert: str
    select: str


NODEDB = Target(
    "nodedb",
    0,
    "nodedb",
    "nodedb",
    "CREATE COLLECTION IF NOT EXISTS docs",
    "INSERT INTO docs (id, name, age) VALUES ($1, $2, $3::int8)",
    "SELECT * FROM docs WHERE id = $1",
)
POSTGRES = Target(
    "postgresql",
    0,
    "postgres",
    "postgres",
    "CREATE TABLE docs (id text PRIMARY KEY, name text, age int8)",
    "INSERT INTO docs (id, name, age) VALUES ($1, $2, $3)",
    "SELECT * FROM docs WHERE id = $1",
)


async def _pool(t: Target) -> list[asyncpg.Connection]:
    return [
        await asyncpg.connect(host="127.0.0.1", port=t.port, user=t.user, database=t.database)
        for _ in range(CONNECTIONS)
    ]


async def _run_for(conns: list[asyncpg.Connection], seconds: float, op) -> int:  # type: ignore[no-untyped-def]
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(conn: asyncpg.Connection, wid: int) -> None:
        nonlocal done
        for i in itertools.count():
            if time.perf_counter() >= deadline:
                return
            await op(conn, wid, i)
            done += 1

    await asyncio.gather(*(worker(c, w) for w, c in enumerate(conns)))
    return done


async def w1_insert(t: Target, seconds: float, run_id: int) -> float:
    """Single-row INSERT of a small document, 16 connections, prepared: rows/s."""
    conns = await _pool(t)
    try:
        stmts = [await c.prepare(t.insert) for c in conns]

        async def op(conn: asyncpg.Connection, wid: int, i: int) -> None:
            await stmts[wid].fetch(f"r{run_id}-w{wid}-{i}", f"name-{i}", i)

        start = time.perf_counter()
        n = await _run_for(conns, seconds, op)
        return n / (time.perf_counter() - start)
    finally:
        for c in conns:
            await c.close()


async def w2_point_select(t: Target, seconds: float, keys: list[str]) -> float:
    """Point SELECT by primary key, 16 connections, prepared: rows/s."""
    conns = await _pool(t)
    try:
        stmts = [await c.prepare(t.select) for c in conns]
        rng = random.Random(7)

        async def op(conn: asyncpg.Connection, wid: int, i: int) -> None:
            row = await stmts[wid].fetchrow(rng.choice(keys))
            assert row is not None

        start = time.perf_counter()
        n = await _run_for(conns, seconds, op)
        return n / (time.perf_counter() - start)
    finally:
        for c in conns:
            await c.close()


async def setup(t: Target) -> None:
    conn = await asyncpg.connect(host="127.0.0.1", port=t.port, user=t.user, database=t.database)
    try:
        await conn.execute(t.create)
    finally:
        await conn.close()


async def existing_keys(t: Target, limit: int = 10000) -> list[str]:
    conn = await asyncpg.connect(host="127.0.0.1", port=t.port, user=t.user, database=t.database)
    try:
        rows = await conn.fetch("SELECT id FROM docs LIMIT 10000")
        return [r["id"] for r in rows][:limit]
    finally:
        await conn.close()
