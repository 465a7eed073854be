"""WAL archiving and point-in-time recovery figures (``make bench ARGS="--only ARCH"``).

- W1 with archiving off and on (local archive directory, and S3 on a SeaweedFS
  started here), alternating runs on two servers: goal on >= 0.95x off.
- Archive lag under that W1 load: sampled every 0.25 s (from 1.5 x LAG_DELAY
  into each run on), the age of the newest record the archive holds (its
  note's ``last_us``), median and max; it is a sawtooth of period
  ``max_delay_seconds`` (set to LAG_DELAY here).
- Replay speed, records/s: crash recovery after ``kill -9`` (W7's kind: rows
  committed one per statement by 16 connections, no checkpoint since) read from
  the server's own recovery log line, and RESTORE .. UNTIL LSN from a backup
  over the same archived WAL, from local storage and from S3: the replay as the
  server's log line times it (fetching, checking and applying the records; goal:
  no slower than the crash recovery), then with the checkpoint that makes the
  result durable, and the whole statement as the client sees it (also staging
  the backup and switching).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import statistics
import threading
import time
from pathlib import Path

import asyncpg

from bench.workloads import NODEDB, Target, setup, w1_insert
from tests.serverproc import ServerProcess

LAG_DELAY = 2.0  # [wal_archive] max_delay_seconds for the lag figure
SEGMENT_BYTES = 16 << 20


def _archive_env(kind: str, work: Path, s3: object | None) -> dict[str, str]:
    env = {
        "NODEDB_WAL_ARCHIVE_ENABLED": "true",
        "NODEDB_WAL_ARCHIVE_MAX_DELAY_SECONDS": str(LAG_DELAY),
        "NODEDB_WAL_SEGMENT_BYTES": str(SEGMENT_BYTES),
    }
    if kind == "s3":
        assert s3 is not None
        bucket = s3.create_bucket(f"bench-{int(time.time() * 1000)}")  # type: ignore[attr-defined]
        env |= {
            "NODEDB_WAL_ARCHIVE_ENDPOINT": s3.endpoint,  # type: ignore[attr-defined]
            "NODEDB_WAL_ARCHIVE_BUCKET": bucket,
            "NODEDB_WAL_ARCHIVE_ACCESS_KEY": "nodedb-test-access",
            "NODEDB_WAL_ARCHIVE_SECRET_KEY": "nodedb-test-secret-0123456789",
        }
    else:
        env["NODEDB_WAL_ARCHIVE_PATH"] = str(work / f"archive-{kind}")
    return env


class LagSampler:
    """The age of the newest archived record, sampled from a local archive's notes."""

    def __init__(self, notes: Path):
        self.notes = notes
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _newest_us(self) -> int | None:
        names = sorted(self.notes.glob("*.wal.json")) if self.notes.is_dir() else []
        if not names:
            return None
        return int(json.loads(names[-1].read_text())["last_us"])

    def _run(self) -> None:
        # Until the first seal of this run, the newest archived record is from before
        # it (the server sat idle between runs): those samples measure the pause.
        settled = time.monotonic() + 1.5 * LAG_DELAY
        while not self._stop.wait(0.25):
            newest = self._newest_us()
            if newest is not None and time.monotonic() >= settled:
                self.samples.append(time.time() - newest / 1e6)

    def __enter__(self) -> LagSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def _w1(port: int, seconds: float, run_id: int) -> float:
    t = dataclasses.replace(NODEDB, port=port)
    await setup(t)
    return await w1_insert(t, seconds, run_id)


def w1_on_off(work: Path, seconds: float, runs: int) -> dict[str, float]:
    off = ServerProcess(work / "w1-off").start()
    on = ServerProcess(work / "w1-on", env=_archive_env("local", work, None)).start()
    figures: dict[str, list[float]] = {"off": [], "on": []}
    lag: list[float] = []
    try:
        for i in range(runs):
            figures["off"].append(asyncio.run(_w1(off.port, seconds, i)))
            with LagSampler(work / "archive-local" / "tenants" / "1" / "wal") as sampler:
                figures["on"].append(asyncio.run(_w1(on.port, seconds, i)))
            lag += sampler.samples
    finally:
        off.stop()
        on.stop()
    return {
        "off": statistics.median(figures["off"]),
        "on": statistics.median(figures["on"]),
        "lag_median": statistics.median(lag) if lag else float("nan"),
        "lag_max": max(lag) if lag else float("nan"),
    }


async def _load_tenant(port: int, seconds: float) -> None:
    """16 connections, one row per commit, into tenant ``bench``."""
    t = Target("nodedb", port, "nodedb", "bench", NODEDB.create, NODEDB.insert, NODEDB.select)
    await w1_insert(t, seconds, 0)


def _replayed_per_second(log: str) -> tuple[int, float]:
    """(records, seconds) of tenant bench's last recovery, from its log line."""
    found = re.findall(
        r"tenant bench \(id \d+\): checkpoint LSN \d+, (\d+) records replayed.*?, ([\d.]+)s", log
    )
    records, secs = found[-1]
    return int(records), float(secs)


def _pitr_per_second(log: str) -> tuple[int, float, float]:
    """(records, replay seconds, checkpoint seconds) of the last point-in-time restore,
    from its log line."""
    found = re.findall(
        r"point-in-time restore of tenant bench: (\d+) archived records replayed.*? "
        r"in ([\d.]+)s, .*?; then the checkpoint in ([\d.]+)s",
        log,
    )
    records, secs, ckpt_secs = found[-1]
    return int(records), float(secs), float(ckpt_secs)


async def _sql(port: int, database: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="nodedb", database=database)
    try:
        return list(await conn.fetch(sql, timeout=3600))
    finally:
        await conn.close()


def replay(work: Path, kind: str, seconds: float, s3: object | None) -> dict[str, float]:
    """Crash replay and PITR replay of the same commits, archive ``kind``."""
    work.mkdir(parents=True)
    backups = work / f"backups-{kind}"
    backups.mkdir()
    env = _archive_env(kind, work, s3) | {
        "NODEDB_WAL_FSYNC": "batch",
        "NODEDB_BACKUP_ALLOWED_DIRS": str(backups),
    }
    srv = ServerProcess(work / f"replay-{kind}", env=env).start()
    try:
        asyncio.run(_sql(srv.port, "nodedb", "CREATE TENANT bench"))
        asyncio.run(_sql(srv.port, "bench", NODEDB.create))
        path = backups / "before.bak"
        asyncio.run(_sql(srv.port, "nodedb", f"BACKUP TENANT bench TO '{path}'"))
        asyncio.run(_load_tenant(srv.port, seconds))
        (count,) = asyncio.run(_sql(srv.port, "bench", "SELECT count(*) FROM docs"))[0]
        srv.kill9()
        srv.start(timeout=3600)
        crash_records, crash_s = _replayed_per_second(srv.log())
        (end,) = asyncio.run(
            _sql(srv.port, "nodedb", "SELECT max(last_lsn) FROM _system.wal WHERE tenant = 'bench'")
        )[0]
        started = time.monotonic()
        row = asyncio.run(
            _sql(srv.port, "nodedb", f"RESTORE TENANT bench FROM '{path}' UNTIL LSN {end}")
        )[0]
        pitr_s = time.monotonic() - started
        (after,) = asyncio.run(_sql(srv.port, "bench", "SELECT count(*) FROM docs"))[0]
        assert after == count, f"PITR gave {after} rows, {count} were loaded"
        replayed, replay_s, ckpt_s = _pitr_per_second(srv.log())
        assert replayed == row["records_replayed"]
        return {
            "rows": count,
            "crash_records_s": crash_records / crash_s,
            "replay_records_s": replayed / replay_s,
            "durable_records_s": replayed / (replay_s + ckpt_s),
            "pitr_records": row["records_replayed"],
            "pitr_s": pitr_s,
            "pitr_records_s": row["records_replayed"] / pitr_s,
        }
    finally:
        srv.stop()


def run(work: Path, seconds: float, runs: int, with_s3: bool) -> list[str]:
    w1 = w1_on_off(work, seconds, runs)
    lines = [
        f"ARCH W1 (rows/s, median of {runs} x {seconds:g} s, alternating): archiving off "
        f"{w1['off']:,.0f}, on (local) {w1['on']:,.0f} = {w1['on'] / w1['off']:.2f}x "
        f"(goal >= 0.95x); archive lag under that load (max_delay_seconds = {LAG_DELAY:g}): "
        f"median {w1['lag_median']:.2f} s, max {w1['lag_max']:.2f} s",
    ]
    kinds = ["local"]
    s3 = None
    if with_s3:
        from tests.seaweed import SeaweedS3

        s3 = SeaweedS3(work / "seaweed").start()
        kinds.append("s3")
    try:
        for kind in kinds:
            rs = [replay(work / f"{kind}-{i}", kind, max(seconds, 10.0), s3) for i in range(runs)]
            med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            lines.append(
                f"ARCH replay, archive on {kind} (median of {runs}, each about {med['rows']:,.0f} "
                f"commits): crash recovery {med['crash_records_s']:,.0f} records/s (its log "
                f"line); point-in-time replay (fetch, check, apply; its log line) "
                f"{med['replay_records_s']:,.0f} records/s = "
                f"{med['replay_records_s'] / med['crash_records_s']:.2f}x of crash replay "
                f"(goal >= 1.0x); with the checkpoint that makes it durable "
                f"{med['durable_records_s']:,.0f} records/s = "
                f"{med['durable_records_s'] / med['crash_records_s']:.2f}x; whole RESTORE .. "
                f"UNTIL LSN statement {med['pitr_records_s']:,.0f} records/s = "
                f"{med['pitr_records_s'] / med['crash_records_s']:.2f}x; each run (crash, "
                "replay): "
                + ", ".join(f"{r['crash_records_s']:,.0f}/{r['replay_records_s']:,.0f}" for r in rs)
            )
    finally:
        if s3 is not None:
            s3.stop()  # type: ignore[attr-defined]
    return lines
