"""When a vector index hands the vectors it holds to usearch: a put on the event loop
leaves the add to the next turn of the loop, yet every search sees every vector put."""

from __future__ import annotations

import asyncio

import numpy as np

from nodedb_server.engines import vector as v


def _vectors(n: int, seed: int = 3) -> list[list[float]]:
    return np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32).tolist()


def _in_usearch(index: v.VectorIndex) -> int:
    return len(index._index)


def test_put_on_the_loop_adds_at_the_next_turn_and_searches_see_all() -> None:
    vecs = _vectors(v.ADD_BATCH * 3)

    async def run() -> None:
        index = v.VectorIndex("i", "emb", "l2", 8)
        for i, vec in enumerate(vecs):
            index.put(f"k{i}", vec)
        assert _in_usearch(index) == 0  # held: the statement answers first
        # A search asked in the same turn sees every vector, each nearest to itself.
        found = await asyncio.gather(*(index.search_soon(vec, 1) for vec in vecs[:20]))
        assert [f[0][0] for f in found] == [f"k{i}" for i in range(20)]
        assert _in_usearch(index) == len(vecs)

        index.put("late", vecs[0])
        index.remove("k0")
        for i in range(v.ADD_BATCH):
            index.put(f"m{i}", vecs[i + 1])
        await asyncio.sleep(0)  # the turn the add was asked for
        assert _in_usearch(index) >= len(vecs) + v.ADD_BATCH
        got = await index.search_soon(vecs[0], 1)
        assert got[0][0] == "late"  # k0 removed, its vector now under "late"
        assert len(index) == len(vecs) + v.ADD_BATCH

    asyncio.run(run())


def test_hold_max_adds_at_once_on_the_loop() -> None:
    vecs = _vectors(v.HOLD_MAX)

    async def run() -> None:
        index = v.VectorIndex("i", "emb", "cosine", 8)
        for i, vec in enumerate(vecs):
            index.put(i, vec)
        assert _in_usearch(index) == v.HOLD_MAX  # not left for later

    asyncio.run(run())


def test_put_off_the_loop_adds_in_batches_at_once() -> None:
    index = v.VectorIndex("i", "emb", "l2", 8)
    for i, vec in enumerate(_vectors(v.ADD_BATCH + 1)):
        index.put(i, vec)
    assert _in_usearch(index) == v.ADD_BATCH  # no loop to ask: added as the batch filled
    assert index.search(_vectors(1, seed=9)[0], 3)
