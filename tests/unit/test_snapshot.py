"""Copy-on-write snapshots (storage/snapshot.py): what a checkpoint or a backup reads is
the state at the moment it opened, whatever is written meanwhile, and nothing is left
behind once it is read or given up."""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Iterator

import loro
import pytest

from nodedb_server.engines.base import RowCollection
from nodedb_server.engines.kv import KvCollection
from nodedb_server.storage import snapshot
from nodedb_server.storage.records import OpKind


def _crdt_update(text: str) -> bytes:
    doc = loro.LoroDoc()
    doc.get_text("t").insert(0, text)
    return bytes(doc.export(loro.ExportMode.Snapshot()))


def _crdt_text(data: bytes) -> str:
    doc = loro.LoroDoc()
    doc.import_(data)
    return str(doc.get_text("t"))


def _state(c: RowCollection) -> dict[str, object]:
    """Everything a checkpoint stores of ``c``, read directly (the expected answer)."""
    rows = {
        k: (r, c.expires_at(k)) if isinstance(c, KvCollection) else r for k, r in c.rows.items()
    }
    edges = sorted(
        (s, d, lab, tuple(sorted(p.items())))
        for s, o in c.edges.out.items()
        for (d, lab), p in o.items()
    )
    crdt = {k: _crdt_text(c.crdt.snapshot(k) or b"") for k in c.crdt.docs}
    return {"rows": rows, "edges": edges, "crdt": crdt}


def _read(c: RowCollection, parts: list[tuple[str, object]]) -> dict[str, object]:
    got: dict[str, object] = {"rows": {}, "edges": [], "crdt": {}}
    for name, items in parts:
        for item in items:  # type: ignore[attr-defined]
            if name.endswith(".edges"):
                s, d, lab, p = item
                got["edges"].append((s, d, lab, tuple(sorted(p.items()))))  # type: ignore[union-attr]
            elif name.endswith(".crdt"):
                got["crdt"][item[0]] = _crdt_text(item[1])  # type: ignore[index]
            elif isinstance(c, KvCollection):
                got["rows"][item[0]] = (item[1], item[2])  # type: ignore[index]
            else:
                got["rows"][item[0]] = item[1]  # type: ignore[index]
    got["edges"] = sorted(got["edges"])  # type: ignore[type-var]
    return got


def _read_on_thread(
    c: RowCollection,
    parts: list[tuple[str, object]],
    result: list[dict[str, object]],
    done: threading.Event,
) -> None:
    try:
        result.append(_read(c, parts))
    finally:
        done.set()


def _random_write(c: RowCollection, rng: random.Random, n: int) -> None:
    key = f"k{rng.randrange(n)}"
    roll = rng.random()
    if roll < 0.45:
        c.apply(
            OpKind.INSERT, key, {"id": key, "v": rng.randrange(1000)}, rng.choice([None, 10**13])
        )
    elif roll < 0.6:
        c.apply(OpKind.DELETE, key, None, None)
    elif roll < 0.75:
        src, dst = f"n{rng.randrange(20)}", f"n{rng.randrange(20)}"
        c.apply(OpKind.EDGE_PUT, [src, dst, "l"], {"w": rng.randrange(9)}, None)
    elif roll < 0.85:
        src, dst = f"n{rng.randrange(20)}", f"n{rng.randrange(20)}"
        c.apply(OpKind.EDGE_DELETE, [src, dst, "l"], None, None)
    else:
        c.apply(
            OpKind.CRDT_APPLY, f"d{rng.randrange(5)}", _crdt_update(str(rng.randrange(99))), None
        )


def _populated(kind: type[RowCollection], rng: random.Random, n: int) -> RowCollection:
    c = kind("c")
    for _ in range(n * 3):
        _random_write(c, rng, n)
    return c


def _open_views(c: RowCollection) -> int:
    return sum(
        1 for views in (c.views, c.edges.views, c.crdt.views) for v in views.open if not v.closed
    )


def test_a_snapshot_reads_the_state_it_was_opened_at_despite_interleaved_writes() -> None:
    rng = random.Random(7)
    for kind in (RowCollection, KvCollection):
        for trial in range(20):
            c = _populated(kind, rng, 60)
            expected = _state(c)
            parts = c.checkpoint_parts("c1")
            # Write before reading, and between the reads of each item.
            for _ in range(rng.randrange(50)):
                _random_write(c, rng, 60)
            iters = [(name, iter(items)) for name, items in parts]  # type: ignore[call-overload]
            got_items: list[tuple[str, list[object]]] = []
            for name, it in iters:
                read = []
                for item in it:
                    read.append(item)
                    if rng.random() < 0.3:
                        _random_write(c, rng, 60)
                got_items.append((name, read))
            assert _read(c, got_items) == expected, (kind.__name__, trial)
            assert _open_views(c) == 0  # a view read to the end is closed


def test_a_snapshot_read_on_another_thread_while_the_owner_writes() -> None:
    rng = random.Random(11)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so reads and writes interleave
    try:
        _read_while_writing(rng)
    finally:
        sys.setswitchinterval(interval)


def _read_while_writing(rng: random.Random) -> None:
    writes = 0
    for kind in (RowCollection, KvCollection):
        c = _populated(kind, rng, 3000)
        for _ in range(5):
            expected = _state(c)
            parts = c.checkpoint_parts("c1")
            result: list[dict[str, object]] = []
            done = threading.Event()
            t = threading.Thread(target=_read_on_thread, args=(c, parts, result, done))
            t.start()
            while not done.is_set():  # the event loop's side: keep writing
                _random_write(c, rng, 3000)
                writes += 1
            t.join()
            assert result and result[0] == expected
    assert writes > 100  # the reads really overlapped the writes


def test_a_snapshot_given_up_is_released_and_costs_writers_nothing_more() -> None:
    rng = random.Random(3)
    c = _populated(KvCollection, rng, 100)
    parts = c.checkpoint_parts("c1")
    assert _open_views(c) == 3
    snapshot.release(parts)
    assert _open_views(c) == 0
    _random_write(c, rng, 100)
    assert not any(v.pre for v in c.views.open)
    _random_write(c, rng, 100)
    # Writers drop closed views from the list.
    assert all(not v.closed for v in c.views.open)


def test_pre_images_follow_the_writes_not_the_collection() -> None:
    c = RowCollection("c")
    for i in range(10_000):
        c.apply(OpKind.INSERT, f"k{i}", {"id": f"k{i}", "v": i}, None)
    parts = c.checkpoint_parts("c1")
    view = c.views.open[0]
    for i in range(10):
        c.apply(OpKind.INSERT, f"k{i}", {"id": f"k{i}", "v": -i}, None)
        # A second change of the same key: no copy.
        c.apply(OpKind.INSERT, f"k{i}", {"id": f"k{i}", "v": -2 * i}, None)
    c.apply(OpKind.INSERT, "new", {"id": "new"}, None)
    assert len(view.pre) == 11
    rows = dict(next(iter(p for n, p in parts if n == "c1")))  # type: ignore[call-overload]
    assert len(rows) == 10_000 and "new" not in rows
    assert all(rows[f"k{i}"]["v"] == i for i in range(10))


def test_prefetch_keeps_order_bounds_lookahead_and_stops_on_close() -> None:
    import time

    from nodedb_server.storage.snapshot import Prefetch, prepare, release

    def counted(n: int, made: list[int]) -> Iterator[int]:
        for i in range(n):
            made.append(i)
            yield i

    assert list(Prefetch(lambda: counted(50, []))) == list(range(50))

    made_a: list[int] = []
    made_b: list[int] = []
    slow = Prefetch(lambda: counted(1000, made_a), depth=2)
    later = Prefetch(lambda: counted(1000, made_b), depth=2)
    parts = [("a", slow), ("b", later)]
    prepare(parts)
    time.sleep(0.2)
    assert len(made_a) <= 3, "no more than depth + 1 made ahead of a reader that reads nothing"
    assert made_b == [], "the next part starts only when this one is read"
    assert next(iter(slow)) == 0
    time.sleep(0.2)
    assert 0 < len(made_b) <= 3
    release(parts)
    counts = (len(made_a), len(made_b))
    time.sleep(0.1)
    assert (len(made_a), len(made_b)) == counts, "closing stops the helpers"
    assert not any(t.name == "prefetch" for t in threading.enumerate())


def test_prefetch_raises_the_makers_error_in_the_reader() -> None:
    from nodedb_server.storage.snapshot import Prefetch

    def broken() -> Iterator[int]:
        yield 1
        raise ValueError("piece 2 does not encode")

    got = []
    with pytest.raises(ValueError, match="piece 2"):
        for i in Prefetch(broken):
            got.append(i)
    assert got == [1]
