"""W5 and W6 of BENCH.md: BACKUP TENANT and RESTORE TENANT against pg_dump -Fc -Z0 and
pg_restore on the same rows, with the server's memory growth during the backup."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg

from bench.engines import cpu_csv
from bench.pg import Postgres


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class PeakRss:
    """Samples a process's resident memory every 20 ms while it runs."""

    def __init__(self, pid: int):
        self.pid = pid
        self.base = _rss(pid)
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss(self.pid))
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def load_nodedb(dsn: str, docs: int, ts_rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TENANT bench")
    bench_dsn = dsn.replace("dbname=nodedb", "dbname=bench")
    with psycopg.connect(bench_dsn, autocommit=True) as conn:
        conn.execute("CREATE COLLECTION docs")
        pad = "p" * 400
        for i in range(0, docs, 1000):
            body = ", ".join(
                f"{{ id: 'd{j}', n: {j}, pad: '{pad}' }}" for j in range(i, min(i + 1000, docs))
            )
            conn.execute(f"INSERT INTO docs [ {body} ]")
        conn.execute(
            "CREATE COLLECTION cpu TYPE COLUMNAR (ts TIMESTAMP TIME_KEY, host VARCHAR, "
            "load FLOAT) WITH profile = 'timeseries', partition_by = '1h'"
        )
        data = cpu_csv(ts_rows)
        for piece in _pieces(data, 64 << 20):  # one COPY is one WAL record: keep each modest
            with conn.cursor().copy("COPY cpu FROM STDIN WITH (FORMAT csv)") as copy:
                copy.write(piece)


def _pieces(data: bytes, size: int) -> list[bytes]:
    """``data`` cut at line ends into pieces of about ``size`` bytes."""
    out, start = [], 0
    while start < len(data):
        end = data.find(b"\n", min(start + size, len(data) - 1)) + 1 or len(data)
        out.append(data[start:end])
        start = end
    return out


def load_postgres(pg: Postgres, docs: int, ts_rows: int) -> None:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE bench")
    with psycopg.connect(pg.dsn("bench"), autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id text PRIMARY KEY, n int8, pad text)")
        with conn.cursor().copy("COPY docs FROM STDIN") as copy:
            pad = "p" * 400
            for j in range(docs):
                copy.write_row((f"d{j}", j, pad))
        conn.execute("CREATE TABLE cpu (ts timestamptz, host text, load float8)")
        with conn.cursor().copy("COPY cpu FROM STDIN WITH (FORMAT csv)") as copy:
            copy.write(cpu_csv(ts_rows))


def run(
    srv_pid: int, dsn: str, backup_dir: Path, pg: Postgres, docs: int, ts_rows: int
) -> dict[str, float]:
    load_nodedb(dsn, docs, ts_rows)
    load_postgres(pg, docs, ts_rows)
    target = backup_dir / "bench.bak"
    with psycopg.connect(dsn, autocommit=True) as conn, PeakRss(srv_pid) as rss:
        start = time.perf_counter()
        conn.execute(f"BACKUP TENANT bench TO '{target}'")
        backup_s = time.perf_counter() - start
    size = target.stat().st_size
    with psycopg.connect(dsn, autocommit=True) as conn:
        start = time.perf_counter()
        conn.execute(f"RESTORE TENANT bench2 FROM '{target}' WITH (rename)")
        restore_s = time.perf_counter() - start
    dump = pg.dir / "bench.dump"
    start = time.perf_counter()
    pg.tool(
        "pg_dump",
        "-Fc",
        "-Z0",
        "-f",
        str(dump),
        "bench",
    )
    dump_s = time.perf_counter() - start
    dump_size = dump.stat().st_size
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE bench2")
    start = time.perf_counter()
    pg.tool(
        "pg_restore",
        "-d",
        "bench2",
        str(dump),
    )
    pg_restore_s = time.perf_counter() - start
    return {
        "W5": size / backup_s / 1e6,
        "W5_pg": dump_size / dump_s / 1e6,
        "W6": size / restore_s / 1e6,
        "W6_pg": dump_size / pg_restore_s / 1e6,
        "W5_rss_mib": (rss.peak - rss.base) / 2**20,
        "size_mb": size / 1e6,
        "dump_mb": dump_size / 1e6,
    }
