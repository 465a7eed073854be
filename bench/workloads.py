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


async def _rate(t: Target, sql: str, seconds: float, op) -> float:  # type: ignore[no-untyped-def]
    """Statements per second of ``op(prepared_statement, worker, i)`` over 16 connections."""
    conns = await _pool(t)
    try:
        stmts = [await c.prepare(sql) for c in conns]
        start = time.perf_counter()
        n = await _run_for(conns, seconds, lambda conn, wid, i: op(stmts[wid], wid, i))
        return n / (time.perf_counter() - start)
    finally:
        for c in conns:
            await c.close()


async def w1_insert(t: Target, seconds: float, run_id: int) -> float:
    """Single-row INSERT of a small document, 16 connections, prepared: rows/s."""

    async def op(stmt: asyncpg.PreparedStatement, wid: int, i: int) -> None:
        await stmt.fetch(f"r{run_id}-w{wid}-{i}", f"name-{i}", i)

    return await _rate(t, t.insert, seconds, op)


async def w2_point_select(t: Target, seconds: float, keys: list[str]) -> float:
    """Point SELECT by primary key, 16 connections, prepared: rows/s."""
    rng = random.Random(7)

    async def op(stmt: asyncpg.PreparedStatement, wid: int, i: int) -> None:
        row = await stmt.fetchrow(rng.choice(keys))
        assert row is not None

    return await _rate(t, t.select, seconds, op)


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
