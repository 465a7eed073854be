"""Event Plane figures (``make bench ARGS="--only EVT"``).

- W1 on a server with one change stream on ``docs`` and one consumer group read
  and committed continuously (``SELECT * FROM STREAM .. LIMIT 1000`` then
  ``COMMIT OFFSETS``), versus W1 on a server with no stream; alternating runs on
  two servers; goal >= 0.9x of none. Two consumers: a paced one, which waits 20
  ms after a batch short of the limit (as a consumer with a poll interval does),
  and an eager one, which reads again at once while rows come back (under W1 it
  reads about 400 batches of 15 to 20 changes a second). The consumer is its own
  process, so it competes for the cores as a real one would.
- Stream visibility: for each change the consumer reads, its read time minus the
  change's commit time (the ``ts`` column), p50 and p99.
- Commit-to-notification latency under W1 load: a prober process inserts a row
  every 50 ms into ``docs`` and listens to ``LIVE SELECT * FROM docs WHERE name =
  'probe'``; the time from the INSERT being acknowledged to its notification
  arriving, p50 and p99 (a notification that arrives before the prober's other
  thread has seen the acknowledgement counts as 0).
- Catch-up: with the consumer stopped, W1 runs for the run length; the consumer
  then drains the backlog: changes/s, once warm (the WAL's in-memory tail) and
  once after a restart (read back from the segment files).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.workloads import NODEDB, setup, w1_insert
from tests.serverproc import ServerProcess

BATCH = 1000
POLL_S = 0.02
PROBE_EVERY_S = 0.05


def _dsn(port: int) -> str:
    return f"host=127.0.0.1 port={port} user=nodedb dbname=nodedb"


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---- the processes the bench starts --------------------------------------------------------


def consume(port: int, seconds: float, drain: bool, paced: bool = False) -> dict[str, Any]:
    """Read and commit group ``g`` of stream ``s`` for ``seconds`` (or, with ``drain``,
    until a read comes back empty): changes read, and each one's visibility lag.
    ``paced``: wait POLL_S after a batch short of the limit, not only after none."""
    lags: list[float] = []
    changes = batches = 0
    deadline = time.monotonic() + seconds
    with psycopg.connect(_dsn(port), autocommit=True) as conn:
        started = time.monotonic()
        while time.monotonic() < deadline:
            rows = conn.execute(f"SELECT * FROM STREAM s CONSUMER GROUP g LIMIT {BATCH}").fetchall()
            now = time.time()
            if rows:
                conn.execute("COMMIT OFFSETS ON s CONSUMER GROUP g")
                changes += len(rows)
                batches += 1
                lags += [now - row[6].timestamp() for row in rows]
                if paced and len(rows) < BATCH:
                    time.sleep(POLL_S)
            elif drain:
                break
            else:
                time.sleep(POLL_S)
        elapsed = time.monotonic() - started
    return {
        "changes": changes,
        "batches": batches,
        "seconds": elapsed,
        "lag_p50": _percentile(lags, 0.5),
        "lag_p99": _percentile(lags, 0.99),
    }


def probe(port: int, seconds: float) -> dict[str, Any]:
    """Insert a probe row every PROBE_EVERY_S and time its LIVE SELECT notification."""
    sent: dict[str, float] = {}
    acked: dict[str, float] = {}
    received: dict[str, float] = {}
    with psycopg.connect(_dsn(port), autocommit=True) as sub:
        row = sub.execute("LIVE SELECT * FROM docs WHERE name = 'probe'").fetchone()
        assert row is not None
        channel = row[1]
        stop = threading.Event()

        def listen() -> None:
            while not stop.is_set():
                for n in sub.notifies(timeout=0.2, stop_after=None):
                    if n.channel == channel:
                        received[json.loads(n.payload)["id"]] = time.perf_counter()

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        with psycopg.connect(_dsn(port), autocommit=True) as w:
            deadline = time.monotonic() + seconds
            i = 0
            while time.monotonic() < deadline:
                key = f"probe-{time.time_ns()}-{i}"
                sent[key] = time.perf_counter()
                w.execute("INSERT INTO docs (id, name, age) VALUES (%s, 'probe', 0)", (key,))
                acked[key] = time.perf_counter()
                i += 1
                time.sleep(PROBE_EVERY_S)
        time.sleep(1.0)  # the last notifications
        stop.set()
        listener.join()
    lat = [max(0.0, received[k] - acked[k]) for k in acked if k in received]
    whole = [received[k] - sent[k] for k in acked if k in received]
    return {
        "probes": len(acked),
        "received": len(lat),
        "p50": _percentile(lat, 0.5),
        "p99": _percentile(lat, 0.99),
        "sent_p50": _percentile(whole, 0.5),
        "sent_p99": _percentile(whole, 0.99),
    }


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.events", *args], stdout=subprocess.PIPE, text=True
    )


def _result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"bench.events {proc.args} exited {proc.returncode}"
    return dict(json.loads(out.splitlines()[-1]))


# ---- the figures ---------------------------------------------------------------------------


async def _w1(port: int, seconds: float, run_id: int) -> float:
    return await w1_insert(dataclasses.replace(NODEDB, port=port), seconds, run_id)


def _prepare(port: int) -> None:
    asyncio.run(setup(dataclasses.replace(NODEDB, port=port)))
    with psycopg.connect(_dsn(port), autocommit=True) as c:
        c.execute("CREATE CHANGE STREAM s ON docs")
        c.execute("CREATE CONSUMER GROUP g ON s")


def run(work: Path, seconds: float, runs: int) -> list[str]:
    none = ServerProcess(work / "evt-none").start()
    with_stream = ServerProcess(work / "evt-stream").start()
    figures: dict[str, list[float]] = {"none": [], "paced": [], "eager": []}
    consumed: dict[str, list[dict[str, Any]]] = {"paced": [], "eager": []}
    try:
        asyncio.run(setup(dataclasses.replace(NODEDB, port=none.port)))
        _prepare(with_stream.port)
        for i in range(runs):
            figures["none"].append(asyncio.run(_w1(none.port, seconds, i)))
            for how in ("paced", "eager"):
                consumer = _spawn(how, str(with_stream.port), str(seconds + 1.0))
                time.sleep(0.5)  # connected and polling before the load starts
                run_id = 2 * i + (how == "eager")
                figures[how].append(asyncio.run(_w1(with_stream.port, seconds, run_id)))
                consumed[how].append(_result(consumer))
        prober = _spawn("probe", str(with_stream.port), str(seconds))
        consumer = _spawn("paced", str(with_stream.port), str(seconds + 1.5))
        asyncio.run(_w1(with_stream.port, seconds, 2 * runs))
        latency = _result(prober)
        _result(consumer)
        # Catch-up: a backlog of one run's writes, drained warm, then after a restart.
        catch_up = {}
        for how in ("warm", "after restart"):
            asyncio.run(_w1(with_stream.port, seconds, 2 * runs + 1 + len(catch_up)))
            if how == "after restart":
                with_stream.stop()
                with_stream.start()
            catch_up[how] = _result(_spawn("drain", str(with_stream.port)))
    finally:
        none.stop()
        with_stream.stop()
    off = statistics.median(figures["none"])
    lines = []
    for how in ("paced", "eager"):
        on, runs_of = statistics.median(figures[how]), consumed[how]
        lag50 = statistics.median(c["lag_p50"] for c in runs_of)
        lag99 = max(c["lag_p99"] for c in runs_of)
        read = sum(c["changes"] for c in runs_of)
        batches = sum(c["batches"] for c in runs_of)
        lines.append(
            f"EVT: W1 with one change stream and one {how} consumer group reading and "
            f"committing {on:,.0f} rows/s vs no stream {off:,.0f} rows/s = {on / off:.2f}x "
            f"(goal >= 0.9x); it read {read:,} changes in {batches:,} batches, each visible "
            f"in the stream {lag50 * 1000:.0f} ms after its commit at p50 (median of runs), "
            f"{lag99 * 1000:.0f} ms at p99 (worst run)"
        )
    lines += [
        f"EVT: commit acknowledged to LIVE SELECT notification under W1 load: p50 "
        f"{latency['p50'] * 1000:.1f} ms, p99 {latency['p99'] * 1000:.1f} ms "
        f"({latency['received']} of {latency['probes']} probes received); from the INSERT "
        f"sent (its commit included): p50 {latency['sent_p50'] * 1000:.1f} ms, p99 "
        f"{latency['sent_p99'] * 1000:.1f} ms",
    ]
    for how, c in catch_up.items():
        lines.append(
            f"EVT: consumer catch-up ({how}): {c['changes']:,} changes in {c['seconds']:.2f} s "
            f"= {c['changes'] / c['seconds']:,.0f} changes/s, batches of {BATCH}"
        )
    return lines


def main() -> None:
    what, port, *rest = sys.argv[1:]
    if what in ("paced", "eager"):
        out = consume(int(port), float(rest[0]), drain=False, paced=what == "paced")
    elif what == "drain":
        out = consume(int(port), 3600.0, drain=True)
    elif what == "probe":
        out = probe(int(port), float(rest[0]))
    else:
        raise SystemExit(f"unknown: {what}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
