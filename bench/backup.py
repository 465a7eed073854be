"""W5 and W6 of BENCH.md: BACKUP TENANT and RESTORE TENANT against pg_dump -Fc -Z0 and
pg_restore on the same rows, with the server's memory growth during the backup."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import loro
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


@dataclass(frozen=True)
class Mix:
    """How many of each thing the W5/W6 tenant holds: every engine, about 1 GB at scale 1."""

    docs: int
    kv: int
    edges: int
    crdt: int
    vectors: int
    ts_rows: int

    @classmethod
    def at(cls, scale: float) -> Mix:
        def n(x: int) -> int:
            return max(10, int(x * scale))

        return cls(
            docs=n(1_800_000),
            kv=n(400_000),
            edges=n(400_000),
            crdt=n(2_000),
            vectors=min(n(20_000), 20_000),
            ts_rows=n(8_000_000),
        )

    def describe(self) -> str:
        return (
            f"{self.docs:,} documents, {self.kv:,} KV rows, {self.edges:,} edges, "
            f"{self.crdt:,} CRDT documents, {self.vectors:,} 64-d vectors (indexed), "
            f"{self.ts_rows:,} timeseries rows"
        )


def _pad(j: int) -> str:
    """400 characters of text, different in every row (identical values would be one
    shared object in the server that loaded them by INSERT, but not once restored)."""
    return f"{j:010d}" + "p" * 390


VECTOR_DIM = 64


def _vector(i: int) -> list[float]:
    rng = random.Random(i)
    return [round(rng.uniform(-1, 1), 4) for _ in range(VECTOR_DIM)]


def _crdt_doc(i: int) -> bytes:
    doc = loro.LoroDoc()
    doc.get_text("body").insert(0, f"note {i} " * 100)
    return bytes(doc.export(loro.ExportMode.Snapshot()))


def load_nodedb(dsn: str, mix: Mix) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TENANT bench")
    bench_dsn = dsn.replace("dbname=nodedb", "dbname=bench")
    with psycopg.connect(bench_dsn, autocommit=True) as conn:
        conn.execute("CREATE COLLECTION docs")
        for i in range(0, mix.docs, 1000):
            body = ", ".join(
                f"{{ id: 'd{j}', n: {j}, pad: '{_pad(j)}' }}"
                for j in range(i, min(i + 1000, mix.docs))
            )
            conn.execute(f"INSERT INTO docs [ {body} ]")
        conn.execute(
            "CREATE COLLECTION sessions TYPE KEY_VALUE (key TEXT PRIMARY KEY, user_id TEXT, "
            "hits INT)"
        )
        for i in range(0, mix.kv, 1000):
            body = ", ".join(
                f"{{ key: 's{j}', user_id: 'user{j % 5000}', hits: {j}"
                + (", ttl: 86400 }" if j % 2 else " }")
                for j in range(i, min(i + 1000, mix.kv))
            )
            conn.execute(f"INSERT INTO sessions [ {body} ]")
        for i in range(0, mix.edges, 1000):
            stmts = "".join(
                f"GRAPH INSERT EDGE IN 'social' FROM 'u{j}' TO 'u{(j * 7919) % mix.edges}' "
                f"TYPE 'knows' PROPERTIES {{ w: {j % 10} }}; "
                for j in range(i, min(i + 1000, mix.edges))
            )
            conn.execute(f"BEGIN; {stmts}COMMIT;")
        conn.execute("CREATE COLLECTION notes")
        for i in range(mix.crdt):
            conn.execute("SELECT crdt_apply('notes', %s, %s)", (f"n{i}", _crdt_doc(i)))
        conn.execute("CREATE COLLECTION articles")
        conn.execute(
            f"CREATE VECTOR INDEX idx_emb ON articles FIELD embedding METRIC l2 DIM {VECTOR_DIM}"
        )
        for i in range(0, mix.vectors, 500):
            body = ", ".join(
                f"{{ id: 'a{j}', embedding: {_vector(j)} }}"
                for j in range(i, min(i + 500, mix.vectors))
            )
            conn.execute(f"INSERT INTO articles [ {body} ]")
        conn.execute(
            "CREATE COLLECTION cpu TYPE COLUMNAR (ts TIMESTAMP TIME_KEY, host VARCHAR, "
            "load FLOAT) WITH profile = 'timeseries', partition_by = '1h'"
        )
        data = cpu_csv(mix.ts_rows)
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


def load_postgres(pg: Postgres, mix: Mix) -> None:
    """The same rows as tables: what pg_dump and pg_restore move."""
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE bench")
    with psycopg.connect(pg.dsn("bench"), autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id text PRIMARY KEY, n int8, pad text)")
        with conn.cursor().copy("COPY docs FROM STDIN") as copy:
            for j in range(mix.docs):
                copy.write_row((f"d{j}", j, _pad(j)))
        conn.execute(
            "CREATE TABLE sessions (key text PRIMARY KEY, user_id text, hits int8, "
            "expires timestamptz)"
        )
        with conn.cursor().copy("COPY sessions FROM STDIN") as copy:
            for j in range(mix.kv):
                copy.write_row((f"s{j}", f"user{j % 5000}", j, "2030-01-01" if j % 2 else None))
        conn.execute(
            "CREATE TABLE edges (src text, dst text, label text, props jsonb, "
            "PRIMARY KEY (src, dst, label))"
        )
        conn.execute("CREATE INDEX ON edges (dst)")
        with conn.cursor().copy("COPY edges FROM STDIN") as copy:
            for j in range(mix.edges):
                copy.write_row(
                    (f"u{j}", f"u{(j * 7919) % mix.edges}", "knows", f'{{"w": {j % 10}}}')
                )
        conn.execute("CREATE TABLE notes (id text PRIMARY KEY, state bytea)")
        with conn.cursor().copy("COPY notes FROM STDIN") as copy:
            for i in range(mix.crdt):
                copy.write_row((f"n{i}", _crdt_doc(i)))
        conn.execute("CREATE TABLE articles (id text PRIMARY KEY, embedding float4[])")
        with conn.cursor().copy("COPY articles FROM STDIN") as copy:
            for j in range(mix.vectors):
                copy.write_row((f"a{j}", _vector(j)))
        conn.execute("CREATE TABLE cpu (ts timestamptz, host text, load float8)")
        with conn.cursor().copy("COPY cpu FROM STDIN WITH (FORMAT csv)") as copy:
            copy.write(cpu_csv(mix.ts_rows))


def run(srv_pid: int, dsn: str, backup_dir: Path, pg: Postgres, mix: Mix) -> dict[str, Any]:
    load_nodedb(dsn, mix)
    load_postgres(pg, mix)
    target = backup_dir / "bench.bak"
    with psycopg.connect(dsn, autocommit=True) as conn, PeakRss(srv_pid) as rss:
        start = time.perf_counter()
        conn.execute(f"BACKUP TENANT bench TO '{target}'")
        backup_s = time.perf_counter() - start
    size = target.stat().st_size
    with psycopg.connect(dsn, autocommit=True) as conn, PeakRss(srv_pid) as dry_rss:
        start = time.perf_counter()
        conn.execute(f"RESTORE TENANT bench FROM '{target}' DRY RUN")
        dry_s = time.perf_counter() - start
    with psycopg.connect(dsn, autocommit=True) as conn, PeakRss(srv_pid) as restore_rss:
        start = time.perf_counter()
        # Replaces the tenant in place, as an operator restoring it would.
        conn.execute(f"RESTORE TENANT bench FROM '{target}'")
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
        "dry_run_mb_s": size / dry_s / 1e6,
        "dry_run_rss_mib": (dry_rss.peak - dry_rss.base) / 2**20,
        # The old tenant's memory is let go before the restored one is loaded, so this
        # is the growth of replacing a tenant, not of holding two.
        "W6_rss_mib": (restore_rss.peak - restore_rss.base) / 2**20,
        "size_mb": size / 1e6,
        "seconds": {
            "backup": backup_s,
            "pg_dump": dump_s,
            "restore": restore_s,
            "pg_restore": pg_restore_s,
        },
        "dump_mb": dump_size / 1e6,
    }
