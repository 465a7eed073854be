"""Vector indexes: binding, literals and array parameters, HNSW checked against exact search."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pg8000.native
import psycopg
import pytest

from tests.serverproc import ServerProcess

DIM = 16
N = 1500


def _exact(vectors: dict[str, np.ndarray], query: np.ndarray, k: int) -> list[str]:
    def cos(v: np.ndarray) -> float:
        return float(1 - np.dot(v, query) / (np.linalg.norm(v) * np.linalg.norm(query)))

    return [key for key, _ in sorted(vectors.items(), key=lambda kv: cos(kv[1]))[:k]]


@pytest.fixture
def loaded(server: ServerProcess) -> tuple[ServerProcess, dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    vectors = {f"v{i:05d}": rng.standard_normal(DIM).astype(np.float32) for i in range(N)}
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION items")
        conn.execute(f"CREATE VECTOR INDEX idx_items ON items METRIC cosine DIM {DIM}")
        keys = list(vectors)
        for i in range(0, N, 250):
            body = ", ".join(
                f"{{ id: '{k}', emb: [{', '.join(f'{x:.6f}' for x in vectors[k])}] }}"
                for k in keys[i : i + 250]
            )
            conn.execute(f"INSERT INTO items [ {body} ]")
    rounded = {
        k: np.array([float(f"{x:.6f}") for x in v], dtype=np.float32) for k, v in vectors.items()
    }
    return server, rounded


def test_search_recall_against_exact_and_distance_agreement(loaded) -> None:
    server, vectors = loaded
    rng = np.random.default_rng(9)
    hits = total = 0
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        desc = {f: ty for f, ty, _ in conn.execute("DESCRIBE items").fetchall()}
        assert desc["emb"] == f"vector({DIM}) cosine, index idx_items"
        for _ in range(20):
            q = rng.standard_normal(DIM).astype(np.float32)
            rows = conn.execute("SEARCH items USING VECTOR(emb, %s, 10)", (q.tolist(),)).fetchall()
            got = [r[0] for r in rows]
            assert [r[1] for r in rows] == sorted(r[1] for r in rows), "distances must ascend"
            hits += len(set(got) & set(_exact(vectors, q, 10)))
            total += 10
            top = conn.execute(
                "SELECT id, vector_distance(emb, %s) AS d FROM items ORDER BY d LIMIT 1",
                (q.tolist(),),
            ).fetchone()
            assert top[0] == _exact(vectors, q, 1)[0]
            assert abs(top[1] - rows[0][1]) < 1e-4 or top[0] != got[0]
    assert hits / total >= 0.95, f"recall@10 {hits / total:.3f}"


def test_deletes_updates_and_dimension_errors(loaded) -> None:
    server, vectors = loaded
    probe = vectors["v00042"]
    lit = "ARRAY[" + ", ".join(f"{x:.6f}" for x in probe) + "]"
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        first = conn.execute(f"SEARCH items USING VECTOR(emb, {lit}, 1)").fetchone()
        assert first[0] == "v00042" and first[1] < 1e-5
        conn.execute("DELETE FROM items WHERE id = 'v00042'")
        assert conn.execute(f"SEARCH items USING VECTOR(emb, {lit}, 1)").fetchone()[0] != "v00042"
        conn.execute(f"UPDATE items SET emb = {lit} WHERE id = 'v00007'")
        assert conn.execute(f"SEARCH items USING VECTOR(emb, {lit}, 1)").fetchone()[0] == "v00007"
        for bad in (
            "INSERT INTO items { id: 'x', emb: [1.0, 2.0] }",
            "UPDATE items SET emb = ARRAY[1.0] WHERE id = 'v00001'",
            "SEARCH items USING VECTOR(emb, ARRAY[1.0, 2.0], 3)",
        ):
            with pytest.raises(psycopg.errors.DataException) as err:
                conn.execute(bad)
            assert err.value.sqlstate == "22000"
        assert conn.execute("SELECT COUNT(*) FROM items").fetchone() == (N - 1,)


def test_vector_index_survives_kill9_and_checkpoint(loaded) -> None:
    server, vectors = loaded
    q = vectors["v00100"]
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        before = conn.execute("SEARCH items USING VECTOR(emb, %s, 10)", (q.tolist(),)).fetchall()
    server.kill9()
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        after = conn.execute("SEARCH items USING VECTOR(emb, %s, 10)", (q.tolist(),)).fetchall()
        conn.execute("CHECKPOINT")
    assert [r[0] for r in after] == [r[0] for r in before]
    server.kill9()
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        again = conn.execute("SEARCH items USING VECTOR(emb, %s, 10)", (q.tolist(),)).fetchall()
    assert [r[0] for r in again] == [r[0] for r in before]


async def test_searches_asked_together_each_get_their_own_answer(loaded) -> None:
    """Searches arriving together are answered in one batch: each still gets exactly
    its own nearest k, whatever the k of the others, and a transaction still sees its
    own uncommitted vector."""
    import asyncpg

    server, vectors = loaded
    rng = np.random.default_rng(11)
    conns = [
        await asyncpg.connect(host="127.0.0.1", port=server.port, user="nodedb") for _ in range(12)
    ]
    try:
        stmts = [await c.prepare("SEARCH items USING VECTOR(emb, $1::float4[], $2)") for c in conns]
        own = conns[0].transaction()
        await own.start()
        mine = rng.standard_normal(DIM).astype(np.float32)
        await conns[0].execute("INSERT INTO items (id, emb) VALUES ('mine', $1)", mine.tolist())
        for _ in range(5):
            queries = [rng.standard_normal(DIM).astype(np.float32) for _ in conns]
            queries[0] = mine
            ks = [1 + i for i in range(len(conns))]
            got = await asyncio.gather(
                *(s.fetch(q.tolist(), k) for s, q, k in zip(stmts, queries, ks, strict=True))
            )
            assert [r[0] for r in got[0]][:1] == ["mine"]
            assert [r[0] for r in got[0]][1:] == _exact(vectors, mine, ks[0])[: ks[0] - 1]
            for rows, q, k in zip(got[1:], queries[1:], ks[1:], strict=True):
                assert [r[0] for r in rows] == _exact(vectors, q, k)
                assert [r[1] for r in rows] == sorted(r[1] for r in rows)
        await own.rollback()
        alone = await stmts[1].fetch(mine.tolist(), 3)
        assert [r[0] for r in alone] == _exact(vectors, mine, 3)
    finally:
        for c in conns:
            await c.close()


def test_binding_to_the_first_vector_field_and_metrics(server: ServerProcess) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION pts")
        conn.execute("CREATE VECTOR INDEX idx_pts ON pts METRIC l2 DIM 2")
        conn.execute("INSERT INTO pts { id: 'a', name: 'x', tags: ['t'], pos: [0.0, 0.0] }")
        conn.execute("INSERT INTO pts { id: 'b', pos: [3.0, 4.0] }")
        desc = {f: ty for f, ty, _ in conn.execute("DESCRIBE pts").fetchall()}
        assert desc["pos"] == "vector(2) l2, index idx_pts"
        rows = conn.execute("SEARCH pts USING VECTOR(pos, ARRAY[0.0, 0.0], 5)").fetchall()
        assert rows == [("a", 0.0), ("b", 5.0)]
        assert conn.execute(
            "SELECT vector_distance(pos, ARRAY[0.0, 0.0]) FROM pts WHERE id = 'b'"
        ).fetchone() == (5.0,)
    pg = pg8000.native.Connection("nodedb", host="127.0.0.1", port=server.port, database="nodedb")
    try:
        pg.run("INSERT INTO pts (id, pos) VALUES ('c', :v)", v=[1.0, 1.0])
        assert pg.run("SEARCH pts USING VECTOR(pos, :q, 1)", q=[1.0, 1.1])[0][0] == "c"
    finally:
        pg.close()


async def test_asyncpg_array_parameters_through_type_introspection(server: ServerProcess) -> None:
    """asyncpg looks float4[] up in pg_catalog before it sends one; the server answers."""
    import asyncpg

    conn = await asyncpg.connect(host="127.0.0.1", port=server.port, user="nodedb")
    try:
        await conn.execute("CREATE COLLECTION pts")
        await conn.execute("CREATE VECTOR INDEX idx ON pts FIELD pos METRIC l2 DIM 3")
        insert = await conn.prepare("INSERT INTO pts (id, pos) VALUES ($1, $2)")
        for i in range(5):
            await insert.fetch(f"p{i}", [float(i), 0.0, 0.0])
        rows = await conn.fetch("SEARCH pts USING VECTOR(pos, $1, $2)", [2.1, 0.0, 0.0], 2)
        assert [r["id"] for r in rows] == ["p2", "p3"]
        assert abs(rows[0]["distance"] - 0.1) < 1e-5
        assert await conn.fetchval("SELECT $1::float8[]", [0.5, 1.5]) == [0.5, 1.5]
        assert await conn.fetchval("SELECT $1::text[]", ["a", "b c"]) == ["a", "b c"]
    finally:
        await conn.close()


def test_hnsw_options_are_accepted_and_checked(server: ServerProcess) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION tuned")
        conn.execute(
            "CREATE VECTOR INDEX idx_t ON tuned FIELD v METRIC ip DIM 2 "
            "WITH (m = 32, ef_construction = 200, ef_search = 128)"
        )
        conn.execute("INSERT INTO tuned { id: 'a', v: [1.0, 0.0] }")
        assert conn.execute("SEARCH tuned USING VECTOR(v, ARRAY[1.0, 0.0], 1)").fetchone() == (
            "a",
            0.0,
        )
        with pytest.raises(psycopg.errors.SyntaxError):
            conn.execute("CREATE VECTOR INDEX idx_u ON tuned FIELD w METRIC l2 DIM 2 WITH (m = 0)")
    server.kill9()
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute("SEARCH tuned USING VECTOR(v, ARRAY[1.0, 0.0], 1)").fetchone() == (
            "a",
            0.0,
        )


def _lit(v: np.ndarray) -> str:
    return "[" + ", ".join(f"{x:.6f}" for x in v) + "]"


def test_create_vector_index_builds_off_the_loop_and_keeps_concurrent_writes(
    server: ServerProcess,
) -> None:
    """While CREATE VECTOR INDEX builds over many rows, other clients are answered, and
    the rows they insert, update and delete meanwhile are in the index as it is then,
    also after a restart (checkpoints: test_vector_index_survives_kill9_and_checkpoint)."""
    n, dim = 4000, 16
    rng = np.random.default_rng(11)
    vecs = {f"r{i:05d}": rng.standard_normal(dim) for i in range(n)}
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION big")
        keys = list(vecs)
        for i in range(0, n, 500):
            batch = keys[i : i + 500]
            values = ", ".join(["(%s, %s)"] * len(batch))
            params = [x for k in batch for x in (k, vecs[k].tolist())]
            conn.execute(f"INSERT INTO big (id, emb) VALUES {values}", params)
    done = threading.Event()
    failure: list[BaseException] = []

    def create() -> None:
        try:
            with psycopg.connect(server.dsn(), autocommit=True) as c:
                c.execute(
                    f"CREATE VECTOR INDEX idx_big ON big FIELD emb METRIC cosine DIM {dim} "
                    "WITH (m = 32, ef_construction = 1000)"
                )
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            failure.append(e)
        finally:
            done.set()

    builder = threading.Thread(target=create)
    builder.start()
    deadline = time.monotonic() + 30
    while "building vector index idx_big" not in server.log():  # the build has begun
        assert time.monotonic() < deadline and not done.is_set(), server.log()[-2000:]
        time.sleep(0.01)
    inserted: dict[str, np.ndarray] = {}
    updated: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    deleted: dict[str, np.ndarray] = {}
    answered_during_build = 0
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for j in range(300):
            if done.is_set():
                break
            key, v = f"r{j * 7:05d}", rng.standard_normal(dim)
            if j % 3 == 0:
                conn.execute(f"INSERT INTO big {{ id: 'new{j}', emb: {_lit(v)} }}")
                inserted[f"new{j}"] = v
            elif j % 3 == 1:
                conn.execute(f"UPDATE big SET emb = ARRAY{_lit(v)} WHERE id = '{key}'")
                updated[key] = (vecs[key], v)
            else:
                conn.execute(f"DELETE FROM big WHERE id = '{key}'")
                deleted[key] = vecs[key]
            assert conn.execute("SELECT 1").fetchone() == (1,)
            answered_during_build += not done.is_set()
    builder.join()
    assert not failure, failure
    assert answered_during_build >= 3, "other clients waited for the index build"

    def check() -> None:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:

            def nearest(v: np.ndarray) -> list[str]:
                q = "SEARCH big USING VECTOR(emb, %s, 1)"
                return [r[0] for r in conn.execute(q, (v.tolist(),)).fetchall()]

            for key, v in inserted.items():
                assert nearest(v) == [key]
            for key, (old, new) in updated.items():
                assert nearest(new) == [key]
                assert nearest(old) not in ([key], [])
            for key, v in deleted.items():
                assert nearest(v) not in ([key], [])

    check()
    server.kill9()  # the WAL holds the writes made during the build before the index
    server.start()
    check()


async def test_writes_and_searches_during_a_bulk_load(loaded) -> None:
    """While a bulk load (16,500 vectors in all) adds to the index in batches, a search
    from another session finds the vector its session inserted just before, and no
    longer finds one it deleted or moved; afterwards every search (exact below 20,000
    vectors) gives exactly the nearest of the rows as they are."""
    import asyncpg

    server, vectors = loaded
    rng = np.random.default_rng(13)
    bulk = {f"b{i:05d}": rng.standard_normal(DIM).astype(np.float32) for i in range(15000)}
    loader = await asyncpg.connect(host="127.0.0.1", port=server.port, user="nodedb")
    prober = await asyncpg.connect(host="127.0.0.1", port=server.port, user="nodedb")
    insert = "INSERT INTO items (id, emb) VALUES ($1, $2::float4[])"
    search = "SEARCH items USING VECTOR(emb, $1::float4[], $2)"
    loading = True

    async def load() -> None:
        nonlocal loading
        keys = list(bulk)
        try:
            for i in range(0, len(keys), 500):
                await loader.executemany(insert, [(k, bulk[k].tolist()) for k in keys[i : i + 500]])
        finally:
            loading = False

    async def probe() -> int:
        during = 0
        j = 0
        while loading or j < 20:
            v = rng.standard_normal(DIM).astype(np.float32)
            await prober.execute(insert, f"p{j}", v.tolist())
            vectors[f"p{j}"] = v
            top = await prober.fetch(search, v.tolist(), 1)
            assert [r[0] for r in top] == [f"p{j}"], j
            old = f"v{j * 7:05d}"
            was = vectors[old]
            if j % 2:
                await prober.execute("DELETE FROM items WHERE id = $1", old)
                del vectors[old]
            else:
                w = rng.standard_normal(DIM).astype(np.float32)
                await prober.execute(
                    "UPDATE items SET emb = $1::float4[] WHERE id = $2", w.tolist(), old
                )
                vectors[old] = w
                assert [r[0] for r in await prober.fetch(search, w.tolist(), 1)] == [old]
            # Its old vector is out of the index: the nearest is some other row.
            top = await prober.fetch(search, was.tolist(), 1)
            assert len(top) == 1 and top[0][0] != old, (j, top)
            during += loading
            j += 1
        return during

    try:
        _, during = await asyncio.gather(load(), probe())
        assert during >= 5, "the probes did not run while the load did"
        vectors.update(bulk)
        assert await prober.fetchval("SELECT COUNT(*) FROM items") == len(vectors)
        for _ in range(30):
            q = rng.standard_normal(DIM).astype(np.float32)
            rows = await prober.fetch(search, q.tolist(), 10)
            assert [r[0] for r in rows] == _exact(vectors, q, 10)
    finally:
        await loader.close()
        await prober.close()
