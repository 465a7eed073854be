"""kill -9 under concurrent load: every acknowledged write survives, none is applied twice.

Each writer records what it attempted and what was acknowledged, for every
engine in the mix (documents with a vector field, a KV counter, KV upserts,
graph edges, CRDT, timeseries). After
each restart, everything acknowledged must be there, nothing unattempted may
appear, and the counter must lie between the acknowledged and the attempted
number of increments. CRDT updates from one Loro peer per writer must all be
in the merged state.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
from dataclasses import dataclass, field

import asyncpg
import loro
import pytest

from tests.serverproc import ServerProcess

CYCLES = int(os.environ.get("NODEDB_FAULT_CYCLES", "3"))
T0 = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
WRITERS = 6


@dataclass
class Ledger:
    docs_attempted: set[str] = field(default_factory=set)
    docs_acked: list[str] = field(default_factory=list)
    edges_acked: list[tuple[str, str]] = field(default_factory=list)
    crdt_acked: list[tuple[int, str]] = field(default_factory=list)
    ts_acked: list[dt.datetime] = field(default_factory=list)
    counter_acked: int = 0
    counter_attempted: int = 0


async def _connect(srv: ServerProcess) -> asyncpg.Connection:
    return await asyncpg.connect(host="127.0.0.1", port=srv.port, user="nodedb", database="nodedb")


async def _writer(
    srv: ServerProcess, wid: int, cycle: int, ledger: Ledger, stop: asyncio.Event
) -> None:
    try:
        conn = await _connect(srv)
    except (OSError, asyncpg.PostgresError):
        return
    n = 0
    peer = loro.LoroDoc()
    peer.peer_id = cycle * 100 + wid + 1
    text = peer.get_text("log")
    try:
        while not stop.is_set():
            doc_id = f"c{cycle}-w{wid}-{n}"
            n += 1
            ledger.docs_attempted.add(doc_id)
            await conn.execute(
                "INSERT INTO docs (id, w, n, emb) VALUES ($1, $2::int8, $3::int8, "
                "ARRAY[$2::float8, $3::float8, 1.0])",
                doc_id,
                wid,
                n,
            )
            ledger.docs_acked.append(doc_id)
            ledger.counter_attempted += 1
            await conn.execute("UPDATE counters SET n = n + 1 WHERE key = 'total'")
            ledger.counter_acked += 1
            await conn.execute("UPSERT INTO kv { key: $1, v: $2::int8 }", f"w{wid}", n)
            await conn.execute(
                "GRAPH INSERT EDGE IN 'g' FROM $1 TO $2 TYPE 'wrote'", f"w{wid}", doc_id
            )
            ledger.edges_acked.append((f"w{wid}", doc_id))
            before = peer.oplog_vv
            text.insert(text.len_unicode, f"<{doc_id}>")
            peer.commit()
            update = bytes(peer.export(loro.ExportMode.Updates(before)))
            await conn.execute("SELECT crdt_apply('notes', 'shared', $1)", update)
            ledger.crdt_acked.append((wid, f"<{doc_id}>"))
            at = T0 + dt.timedelta(seconds=len(ledger.ts_acked) + wid * 100_000)
            await conn.execute(
                "INSERT INTO metrics (ts, w, v) VALUES ($1, $2, $3)", at, wid, float(n)
            )
            ledger.ts_acked.append(at)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError):
        return
    finally:
        conn.terminate()


async def _verify(conn: asyncpg.Connection, ledger: Ledger, cycle: int) -> None:
    present = {r["id"] for r in await conn.fetch("SELECT id FROM docs")}
    missing = [d for d in ledger.docs_acked if d not in present]
    assert not missing, f"cycle {cycle}: acknowledged documents lost: {missing[:5]}"
    assert present <= ledger.docs_attempted, "documents appeared that nobody wrote"
    assert await conn.fetchval("SELECT COUNT(*) FROM docs") == len(present)
    for doc_id in random.Random(cycle).sample(ledger.docs_acked, min(20, len(ledger.docs_acked))):
        _, w, n = doc_id.split("-")
        nearest = await conn.fetchrow(
            f"SEARCH docs USING VECTOR(emb, ARRAY[{w[1:]}.0, {int(n) + 1}.0, 1.0], 1)"
        )
        assert nearest is not None and nearest["distance"] < 1e-3, f"{doc_id}: {nearest}"
    total = await conn.fetchval("SELECT n FROM counters WHERE key = 'total'")
    assert ledger.counter_acked <= total <= ledger.counter_attempted, (
        f"cycle {cycle}: counter {total} outside "
        f"[{ledger.counter_acked}, {ledger.counter_attempted}]"
    )
    # The increments lost in the crash are now known: the bounds start again from here.
    ledger.counter_acked = ledger.counter_attempted = total
    edges = set()
    for w in range(WRITERS):
        for r in await conn.fetch("GRAPH NEIGHBORS OF $1 IN 'g'", f"w{w}"):
            edges.add((f"w{w}", r["node"]))
    lost = [e for e in ledger.edges_acked if e not in edges]
    assert not lost, f"cycle {cycle}: acknowledged edges lost: {lost[:5]}"
    assert {dst for _, dst in edges} <= ledger.docs_attempted
    snapshot = await conn.fetchval("SELECT crdt_state('notes', 'shared')")
    merged = loro.LoroDoc()
    if snapshot is not None:
        merged.import_(snapshot)
    body = merged.get_text("log").to_string()
    lost_crdt = [piece for _, piece in ledger.crdt_acked if piece not in body]
    assert not lost_crdt, f"cycle {cycle}: acknowledged CRDT updates lost: {lost_crdt[:5]}"
    stamps = {r["ts"] for r in await conn.fetch("SELECT ts FROM metrics")}
    lost_ts = [at for at in ledger.ts_acked if at not in stamps]
    assert not lost_ts, f"cycle {cycle}: acknowledged timeseries rows lost: {lost_ts[:5]}"


async def _crash_cycles(srv: ServerProcess, cycles: int) -> Ledger:
    conn = await _connect(srv)
    await conn.execute("CREATE COLLECTION docs")
    await conn.execute("CREATE VECTOR INDEX idx_emb ON docs FIELD emb METRIC l2 DIM 3")
    await conn.execute("CREATE COLLECTION counters TYPE KEY_VALUE (key TEXT PRIMARY KEY, n INT8)")
    await conn.execute("CREATE COLLECTION kv TYPE KEY_VALUE (key TEXT PRIMARY KEY)")
    await conn.execute("INSERT INTO counters (key, n) VALUES ('total', 0)")
    await conn.execute("CREATE COLLECTION notes")
    await conn.execute(
        "CREATE COLLECTION metrics TYPE COLUMNAR (ts TIMESTAMP TIME_KEY, w BIGINT, v FLOAT) "
        "WITH profile = 'timeseries', partition_by = '1h'"
    )
    await conn.close()
    ledger = Ledger()
    rng = random.Random(1234)
    for cycle in range(cycles):
        stop = asyncio.Event()
        tasks = [asyncio.create_task(_writer(srv, w, cycle, ledger, stop)) for w in range(WRITERS)]
        await asyncio.sleep(0.4 + rng.random() * 0.8)
        if cycle % 2 == 1:
            conn = await _connect(srv)
            await conn.execute("CHECKPOINT")  # some cycles recover from checkpoint + WAL
            await conn.close()
            await asyncio.sleep(0.2)
        srv.kill9()
        stop.set()
        await asyncio.gather(*tasks)
        srv.start()
        conn = await _connect(srv)
        try:
            await _verify(conn, ledger, cycle)
        finally:
            await conn.close()
    return ledger


@pytest.mark.fault
async def test_kill9_loses_no_acknowledged_write(server: ServerProcess) -> None:
    ledger = await _crash_cycles(server, CYCLES)
    assert len(ledger.docs_acked) > 50, "the load produced too few writes to mean anything"
    assert "records replayed" in server.log()
