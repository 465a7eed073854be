"""Items are packed in batches, and a batch never takes many large items at once: a
backup or checkpoint asks for items as it writes them (a timeseries part makes each
Parquet piece on demand), so reading far ahead would hold them all in memory."""

from __future__ import annotations

from collections.abc import Iterator

from nodedb_server.storage import codec


def test_large_items_are_taken_one_batch_of_bytes_at_a_time() -> None:
    made = 0

    def pieces() -> Iterator[list[object]]:
        nonlocal made
        for i in range(40):
            made += 1
            yield [i, b"x" * (1 << 20)]  # 1 MiB each

    consumed = 0
    for data, n in codec.packed_batches(pieces(), batch_bytes=64 << 10):
        consumed += n
        assert made == consumed, "no item is made before the batch that holds it"
        assert n == 1 and len(data) > 1 << 20


def test_small_items_come_back_exactly_in_growing_batches() -> None:
    items = [[f"k{i}", {"n": i, "s": "v" * (i % 50)}] for i in range(20_000)]
    batches = list(codec.packed_batches(iter(items), batch_bytes=16 << 10))
    assert b"".join(d for d, _ in batches) == b"".join(codec.pack(i) for i in items)
    assert sum(n for _, n in batches) == len(items)
    assert max(n for _, n in batches) > 100  # not one call per item
    assert all(len(d) < 4 * (16 << 10) for d, _ in batches)  # about the size asked
