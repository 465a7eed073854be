"""Timeseries: declared and growing schemas, INSERT and COPY, partition pruning, time_bucket."""

from __future__ import annotations

import datetime as dt
import random
import subprocess
from collections import defaultdict

import psycopg
import pytest

from tests.serverproc import ServerProcess

T0 = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
CPU = (
    "CREATE COLLECTION cpu TYPE COLUMNAR (ts TIMESTAMP TIME_KEY, host VARCHAR, load FLOAT) "
    "WITH profile = 'timeseries', partition_by = '1h'"
)


def _rows(n: int, seed: int = 1) -> list[tuple[dt.datetime, str, float]]:
    rng = random.Random(seed)
    return [
        (
            T0 + dt.timedelta(seconds=rng.randrange(0, 6 * 3600)),
            f"h{rng.randrange(4)}",
            round(rng.random(), 4),
        )
        for _ in range(n)
    ]


def _csv(rows: list[tuple[dt.datetime, str, float]]) -> str:
    return "".join(f"{ts.strftime('%Y-%m-%dT%H:%M:%SZ')},{h},{v}\n" for ts, h, v in rows)


def test_copy_with_psql_and_psycopg_then_bucketed_aggregates(server: ServerProcess) -> None:
    rows = _rows(5000)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(CPU)
    out = subprocess.run(
        [
            *server.psql(),
            "-c",
            "COPY cpu FROM STDIN WITH (FORMAT csv)",
        ],
        input=_csv(rows[:3000]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and out.stdout.strip() == "COPY 3000", out.stderr
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        with conn.cursor().copy("COPY cpu FROM STDIN") as copy:
            for ts, h, v in rows[3000:]:
                copy.write_row((ts.isoformat(), h, v))
        assert conn.execute("SELECT COUNT(*) FROM cpu").fetchone() == (5000,)
        got = conn.execute(
            "SELECT time_bucket('15 minutes', ts) AS b, host, AVG(load), COUNT(*), MAX(load) "
            "FROM cpu WHERE ts >= %s AND ts < %s GROUP BY b, host ORDER BY b, host",
            (T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=3)),
        ).fetchall()
    expect: dict[tuple[dt.datetime, str], list[float]] = defaultdict(list)
    for ts, h, v in rows:
        if T0 + dt.timedelta(hours=1) <= ts < T0 + dt.timedelta(hours=3):
            b = ts - dt.timedelta(minutes=ts.minute % 15, seconds=ts.second)
            expect[(b, h)].append(v)
    assert [(b, h) for b, h, *_ in got] == sorted(expect)
    for b, h, avg, count, mx in got:
        vals = expect[(b, h)]
        assert count == len(vals) and mx == max(vals) and abs(avg - sum(vals) / len(vals)) < 1e-9


def test_time_range_skips_partitions_and_filters(server: ServerProcess) -> None:
    rows = _rows(2000, seed=2)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(CPU)
        with conn.cursor().copy("COPY cpu FROM STDIN WITH (FORMAT csv)") as copy:
            copy.write(_csv(rows))
        lo, hi = T0 + dt.timedelta(hours=2), T0 + dt.timedelta(hours=3)
        plan = [
            r[0]
            for r in conn.execute(
                "EXPLAIN ANALYZE SELECT * FROM cpu WHERE ts >= %s AND ts < %s AND host = 'h1'",
                (lo, hi),
            )
        ]
        assert plan[0] == "Partition scan on cpu: 1 partitions read, 5 skipped by the time range"
        got = conn.execute(
            "SELECT ts, load FROM cpu WHERE ts >= %s AND ts < %s AND host = 'h1' ORDER BY ts, load",
            (lo, hi),
        ).fetchall()
        assert got == sorted((ts, v) for ts, h, v in rows if lo <= ts < hi and h == "h1")
        like = conn.execute(
            "SELECT COUNT(*) FROM cpu WHERE host LIKE 'h_' AND load > 0.5"
        ).fetchone()
        assert like == (sum(1 for _, _, v in rows if v > 0.5),)


def test_create_timeseries_grows_nullable_columns(server: ServerProcess) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TIMESERIES metrics")
        conn.execute("INSERT INTO metrics { ts: '2026-04-01T00:00:00Z', cpu: 1 }")
        conn.execute(
            "INSERT INTO metrics (ts, cpu, mem) VALUES (%s, 2.5, 10), (1775001602000, 3, NULL)",
            (T0 + dt.timedelta(seconds=1),),
        )
        rows = conn.execute("SELECT * FROM metrics ORDER BY ts").fetchall()
        assert rows == [
            (T0, 1.0, None),
            (T0 + dt.timedelta(seconds=1), 2.5, 10),
            (T0 + dt.timedelta(seconds=2), 3.0, None),
        ]
        desc = conn.execute("DESCRIBE metrics").fetchall()
        assert [(f, ty) for f, ty, _ in desc] == [
            ("ts", "timestamptz (time key)"),
            ("cpu", "float8"),
            ("mem", "int8"),
        ]


def test_bad_data_is_refused_whole(server: ServerProcess) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(CPU)
        with (
            pytest.raises(psycopg.Error) as err,
            conn.cursor().copy("COPY cpu FROM STDIN WITH (FORMAT csv)") as copy,
        ):
            copy.write("2026-04-01T00:00:00Z,h1,0.5\n2026-04-01T00:01:00Z,h1,not-a-number\n")
        assert err.value.sqlstate == "22000"
        with pytest.raises(psycopg.Error) as err:
            conn.execute("INSERT INTO cpu (ts, nope) VALUES ('2026-04-01', 1)")
        assert err.value.sqlstate == "42703"
        with pytest.raises(psycopg.Error) as err:
            conn.execute("INSERT INTO cpu (host) VALUES ('h1')")
        assert err.value.sqlstate == "22000"
        assert conn.execute("SELECT COUNT(*) FROM cpu").fetchone() == (0,)


def test_timeseries_survive_kill9_and_checkpoint(server: ServerProcess) -> None:
    rows = _rows(3000, seed=3)
    query = (
        "SELECT time_bucket('1 hour', ts) AS b, COUNT(*), SUM(load) FROM cpu GROUP BY b ORDER BY b"
    )
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(CPU)
        with conn.cursor().copy("COPY cpu FROM STDIN WITH (FORMAT csv)") as copy:
            copy.write(_csv(rows[:2000]))
        before = conn.execute(query).fetchall()
    server.kill9()
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute(query).fetchall() == before
        conn.execute("CHECKPOINT")
        with conn.cursor().copy("COPY cpu FROM STDIN WITH (FORMAT csv)") as copy:
            copy.write(_csv(rows[2000:]))
        after = conn.execute(query).fetchall()
    server.kill9()
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute(query).fetchall() == after
        assert conn.execute("SELECT COUNT(*) FROM cpu").fetchone() == (3000,)


def test_rows_come_back_when_a_vector_index_lives_in_the_same_process(
    server: ServerProcess,
) -> None:
    """pyarrow's own time-zone conversion crashes once a usearch index exists; the server
    converts timestamps itself, so this must simply work."""
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION items")
        conn.execute("CREATE VECTOR INDEX iv ON items FIELD v METRIC l2 DIM 2")
        conn.execute("INSERT INTO items { id: 'a', v: [1.0, 0.0] }")
        conn.execute("SEARCH items USING VECTOR(v, ARRAY[1.0, 0.0], 1)")
        conn.execute(CPU)
        conn.execute("INSERT INTO cpu (ts, host, load) VALUES (%s, 'h1', 0.5)", (T0,))
        assert conn.execute("SELECT * FROM cpu").fetchall() == [(T0, "h1", 0.5)]
        assert conn.execute("SELECT MIN(ts), MAX(ts) FROM cpu").fetchone() == (T0, T0)
        assert conn.execute("SELECT host FROM cpu WHERE ts IN (%s)", (T0,)).fetchall() == [("h1",)]


def test_wide_rows_checkpoint_and_come_back_after_kill9(server: ServerProcess) -> None:
    """One hour of rows that are 80 MB between them: the checkpoint splits them into
    Parquet pieces its files can hold, and every row is back after a kill -9 (the WAL
    behind the checkpoint is gone by then, so the checkpoint has to be readable)."""
    rng = random.Random(7)
    n, width = 40_000, 2_000
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(
            "CREATE COLLECTION wide TYPE COLUMNAR (ts TIMESTAMP TIME_KEY, body VARCHAR) "
            "WITH profile = 'timeseries', partition_by = '1h'"
        )
        for part in range(4):
            with conn.cursor().copy("COPY wide FROM STDIN WITH (FORMAT csv)") as copy:
                for i in range(part * n // 4, (part + 1) * n // 4):
                    ts = (T0 + dt.timedelta(milliseconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                    copy.write(f"{ts},{rng.randbytes(width // 2).hex()}\n")
        conn.execute("CHECKPOINT")
        conn.execute("INSERT INTO wide (ts, body) VALUES ('2026-04-01T00:30:00Z', 'x')")
        conn.execute("CHECKPOINT")  # the WAL from before the first is removed now
        expect = conn.execute("SELECT count(*), sum(length(body)) FROM wide").fetchone()
    assert expect == (n + 1, n * width + 1)
    server.kill9()
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*), sum(length(body)) FROM wide").fetchone() == expect
        set_aside = conn.execute("SELECT file, reason FROM _system.quarantine").fetchall()
        assert set_aside == [], "no checkpoint was set aside"
