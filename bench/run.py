"""``make bench``: the workloads of BENCH.md against PostgreSQL (or, for W8, usearch called
in-process) on this machine, plus the physical ceilings. ``--only W7,W8`` picks some.

Prints one table and appends it, dated, to bench/RESULTS.md (the history is the point).
Each figure is the median of ``--runs`` runs; the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import os
import platform
import statistics
import tempfile
from pathlib import Path

from bench import archive as archive_bench
from bench import backup as backup_bench
from bench import ceilings, engines, recovery, vectors
from bench import events as events_bench
from bench.pg import Postgres
from bench.workloads import (
    NODEDB,
    POSTGRES,
    Target,
    existing_keys,
    setup,
    w1_insert,
    w2_point_select,
)
from nodedb_server import __version__
from nodedb_server.engines.vector import HNSW_DEFAULTS
from tests.serverproc import ServerProcess

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


async def measure(t: Target, seconds: float, runs: int) -> dict[str, float]:
    await setup(t)
    w1 = [await w1_insert(t, seconds, r) for r in range(runs)]
    keys = await existing_keys(t)
    w2 = [await w2_point_select(t, seconds, keys) for _ in range(runs)]
    return {"W1": statistics.median(w1), "W2": statistics.median(w2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument(
        "--w5-scale", type=float, default=1.0, help="W5/W6 tenant size (1.0: about 1 GB)"
    )
    ap.add_argument(
        "--only", default="W1,W2,W3,W4,W5,W7,W8,IDX,ARCH,EVT", help="comma-separated workloads"
    )
    args = ap.parse_args()
    only = set(args.only.upper().split(","))
    seconds = 2.0 if args.quick else args.seconds
    runs = 1 if args.quick else args.runs

    work = Path(tempfile.mkdtemp(prefix="nodedb-bench-"))
    ceil = {
        "fsyncs/s": ceilings.fsyncs_per_second(work),
        "seq write MB/s (fsync)": ceilings.sequential_write_mb_s(work, 64 if args.quick else 256),
        "AES-256-GCM MB/s (1 core)": ceilings.aes_gcm_mb_s(),
        "CRC32C MB/s (1 core)": ceilings.crc32c_mb_s(),
    }
    pg = Postgres().start()
    backups = work / "backups"
    backups.mkdir()
    srv = ServerProcess(work / "nodedb", env={"NODEDB_BACKUP_ALLOWED_DIRS": str(backups)}).start()
    ours: dict[str, float] = {}
    theirs: dict[str, float] = {}
    extra: list[str] = []
    try:
        if only & {"W1", "W2"}:
            ours.update(
                asyncio.run(measure(dataclasses.replace(NODEDB, port=srv.port), seconds, runs))
            )
            theirs.update(
                asyncio.run(measure(dataclasses.replace(POSTGRES, port=pg.port), seconds, runs))
            )
        if only & {"W3", "W4"}:
            n = 100_000 if args.quick else 1_000_000
            data = engines.cpu_csv(n)
            ours["W3"] = asyncio.run(
                engines.w3_copy(srv.port, "nodedb", "nodedb", engines.NODEDB_CPU, data, n)
            )
            theirs["W3"] = asyncio.run(
                engines.w3_copy(pg.port, "postgres", "postgres", engines.PG_CPU, data, n)
            )
            ours["W4"] = asyncio.run(
                engines.w4_buckets(srv.port, "nodedb", "nodedb", engines.NODEDB_BUCKETS, 5)
            )
            theirs["W4"] = asyncio.run(
                engines.w4_buckets(pg.port, "postgres", "postgres", engines.PG_BUCKETS, 5)
            )
            extra.append(f"W3/W4 rows: {n:,}")
        if only & {"W8", "W8B"}:
            n = 10_000 if args.quick else 100_000
            fig = vectors.run(srv.port, "nodedb", "nodedb", n, seconds, runs)
            ours["W8"], ours["W8b"] = fig["W8"], fig["W8b"]
            theirs["W8"] = fig["W8_ref"]  # W8's reference is usearch in-process
            extra.append(
                f"W8: {n:,} x {vectors.DIM} float32 from {vectors.CLUSTERS:,} Gaussian clusters, "
                f"cosine, k = {vectors.K}, the server's default HNSW parameters (m, "
                f"ef_construction, ef_search = {', '.join(map(str, HNSW_DEFAULTS.values()))}) "
                "on both sides: recall@10 "
                f"{fig['W8_recall']:.3f} at {fig['W8']:,.0f} queries/s over "
                f"{vectors.CONNECTIONS} connections; usearch in-process, one query a call: "
                f"{fig['W8_ref']:,.0f} queries/s at recall {fig['W8_ref_recall']:.3f} "
                f"= {fig['W8'] / fig['W8_ref']:.2f}x of in-process (goal >= 0.5x at recall "
                f">= 0.95); W8b loaded them by executemany into the indexed collection at "
                f"{fig['W8b']:,.0f} vectors/s (goal >= 5,000/s)"
            )
        if "W7" in only:
            n = 100_000 if args.quick else 1_000_000
            fig = recovery.run(work, n, runs)
            ours["W7"], theirs["W7"] = fig["W7"], fig["W7_pg"]
            extra.append(
                f"W7: {n:,} single-row commits from 16 connections since the "
                f"last checkpoint, kill -9, exec to the first answered count(*): "
                f"{fig['W7']:.2f} s (every acknowledged row there) vs PostgreSQL "
                f"{fig['W7_pg']:.2f} s ({fig['W7_pg_found']:,.0f} of {fig['W7_pg_acked']:,.0f} "
                "rows there)"
            )
        if only & {"W5", "W6"}:
            mix = backup_bench.Mix.at(0.02 if args.quick else args.w5_scale)
            assert srv.proc is not None
            fig = backup_bench.run(srv.proc.pid, srv.dsn(), backups, pg, mix)
            ours["W5"], theirs["W5"] = fig["W5"], fig["W5_pg"]
            ours["W6"], theirs["W6"] = fig["W6"], fig["W6_pg"]
            secs = fig["seconds"]
            ceiling = min(ceil["seq write MB/s (fsync)"], ceil["AES-256-GCM MB/s (1 core)"])
            extra.append(
                f"W5/W6: {mix.describe()}; backup {fig['size_mb']:.0f} MB, "
                f"dump {fig['dump_mb']:.0f} MB; server RSS growth during BACKUP "
                f"{fig['W5_rss_mib']:.1f} MiB, during DRY RUN {fig['dry_run_rss_mib']:.1f} MiB "
                f"({fig['dry_run_mb_s']:.0f} MB/s), during RESTORE (replacing the tenant) {fig['W6_rss_mib']:.0f} MiB; "
                f"BACKUP at {fig['W5'] / ceiling:.2f} and RESTORE at {fig['W6'] / ceiling:.2f} of "
                f"min(disk, AES-GCM) = {ceiling:,.0f} MB/s. The same rows by time (each side's "
                f"file differs in size): BACKUP {secs['backup']:.1f} s vs pg_dump "
                f"{secs['pg_dump']:.1f} s = {secs['pg_dump'] / secs['backup']:.2f}x, RESTORE "
                f"{secs['restore']:.1f} s vs pg_restore {secs['pg_restore']:.1f} s = "
                f"{secs['pg_restore'] / secs['restore']:.2f}x"
            )
        if "ARCH" in only:
            extra += archive_bench.run(work, seconds, runs, with_s3=not args.quick)
        if "EVT" in only:
            extra += events_bench.run(work, seconds, runs)
        if "IDX" in only:
            n = 100_000 if args.quick else 1_000_000
            extra += [f"IDX: {line}" for line in engines.index_at_scale(srv.dsn(), n)]
        pg_version = pg.version()
    finally:
        srv.stop()
        pg.stop()

    goals = {
        "W1": ">= 1.0x",
        "W2": ">= 1.0x",
        "W3": ">= 1.0x",
        "W5": ">= 1.0x",
        "W6": ">= 1.0x",
        "W4": "<= 1.0x (ms)",
        "W7": "<= 1.0x (s)",
        "W8": ">= 0.5x in-process",
        "W8b": ">= 5,000/s",
    }
    names = {
        "W1": "single-row INSERT, 16 conns, prepared (rows/s)",
        "W2": "point SELECT by key, 16 conns, prepared (rows/s)",
        "W3": "COPY FROM STDIN csv into timeseries (rows/s)",
        "W4": "time_bucket 5 min + GROUP BY over W3 rows (ms, median)",
        "W5": "BACKUP TENANT vs pg_dump -Fc -Z0 (MB/s)",
        "W6": "RESTORE TENANT vs pg_restore (MB/s)",
        "W7": "restart after kill -9, 1M commits since checkpoint (s)",
        "W8": "vector SEARCH k=10, 16 conns vs usearch in-process (queries/s)",
        "W8b": "vector load, executemany INSERT (vectors/s)",
    }
    lines = [
        f"## {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC{' (quick)' if args.quick else ''}",
        "",
        f"Machine: {os.cpu_count()} cores, {_mem_gib():.0f} GiB, {platform.platform()}; "
        f"nodedb-server {__version__}, {pg_version}, Python {platform.python_version()}; "
        f"median of {runs} run(s) of {seconds:g} s.",
        "",
        "| id | workload | nodedb | reference | ratio | goal |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for w in ("W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "W8b"):
        if w not in ours:
            continue
        fmt = ",.2f" if w == "W7" else ",.0f"
        ref = f"{theirs[w]:{fmt}}" if w in theirs else "n/a"
        ratio = f"{ours[w] / theirs[w]:.2f}x" if w in theirs else "n/a"
        lines.append(f"| {w} | {names[w]} | {ours[w]:{fmt}} | {ref} | {ratio} | {goals[w]} |")
    lines += [""] + [f"- {e}" for e in extra] if extra else []
    lines += ["", "| ceiling | figure |", "| --- | ---: |"]
    lines += [f"| {k} | {v:,.0f} |" for k, v in ceil.items()]
    table = "\n".join(lines) + "\n"
    print(table)
    history = (
        RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\nNewest first.\n\n"
    )
    head, _, rest = history.partition("\n\n## ")
    RESULTS.write_text(f"{head}\n\n{table}\n" + (f"## {rest}" if rest else ""))


def _mem_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


if __name__ == "__main__":
    main()
