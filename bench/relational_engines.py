"""DuckDB against DataFusion on the relational work the server hands over (sql/relational.py).

The same in-memory Arrow tables in both, each engine set up per statement as the
server does it: a 1M-row orders table JOINed to 100k customers with GROUP BY,
the same JOIN returning its 500k rows, and a 3-row JOIN (what every small query
pays). Median of 5 runs (50 for the small one). Run: ``python -m bench.relational_engines``
(DuckDB is not a server dependency: ``pip install duckdb`` first).
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import datafusion
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

N, CUSTOMERS = 1_000_000, 100_000
JOIN_GROUP = (
    "SELECT u.region, COUNT(*), SUM(o.total) FROM orders o JOIN customers u"
    " ON u.id = o.customer GROUP BY u.region ORDER BY 1"
)
JOIN_ROWS = (
    "SELECT o.id, u.region FROM orders o JOIN customers u ON u.id = o.customer WHERE o.total > 250"
)
SMALL = "SELECT o.id FROM orders o JOIN customers u ON u.id = o.customer"


def tables() -> tuple[pa.Table, pa.Table]:
    rng = np.random.default_rng(7)
    orders = pa.table(
        {
            "id": [f"o{i}" for i in range(N)],
            "customer": [f"c{i}" for i in rng.integers(0, CUSTOMERS, N)],
            "total": rng.random(N) * 500,
        }
    )
    customers = pa.table(
        {
            "id": [f"c{i}" for i in range(CUSTOMERS)],
            "region": [f"r{i % 50}" for i in range(CUSTOMERS)],
        }
    )
    return orders, customers


def median_ms(run: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def datafusion_run(sql: str, orders: pa.Table, customers: pa.Table) -> Callable[[], Any]:
    def run() -> Any:
        ctx = datafusion.SessionContext()
        ctx.register_record_batches("orders", [orders.to_batches()])
        ctx.register_record_batches("customers", [customers.to_batches()])
        return ctx.sql(sql).to_arrow_table()

    return run


def duckdb_run(sql: str, orders: pa.Table, customers: pa.Table) -> Callable[[], Any]:
    import duckdb

    con = duckdb.connect()

    def run() -> Any:
        cur = con.cursor()
        cur.register("orders", orders)
        cur.register("customers", customers)
        out = cur.sql(sql).to_arrow_table()
        cur.close()
        return out

    return run


def main() -> None:
    warnings.filterwarnings("ignore")
    try:
        import duckdb
    except ImportError:
        raise SystemExit("pip install duckdb to compare it") from None
    orders, customers = tables()
    small_o = orders.slice(0, 3)
    small_c = customers.filter(pc.is_in(customers["id"], small_o["customer"]))
    print(f"datafusion {datafusion.__version__}, duckdb {duckdb.__version__}")
    for label, sql, o, c, runs in (
        ("1M x 100k JOIN + GROUP BY", JOIN_GROUP, orders, customers, 5),
        ("1M x 100k JOIN, 500k rows out", JOIN_ROWS, orders, customers, 5),
        ("3-row JOIN", SMALL, small_o, small_c, 50),
    ):
        df = median_ms(datafusion_run(sql, o, c), runs)
        dd = median_ms(duckdb_run(sql, o, c), runs)
        print(f"{label:32} datafusion {df:8.1f} ms   duckdb {dd:8.1f} ms")


if __name__ == "__main__":
    main()
