"""A replay of large records gives the same state, and lets other threads run while
it goes: recovery replays on a worker thread while the event loop serves the other
tenants, and compiled code (nodedb_server/_hot.py) never offers the GIL by itself."""

from __future__ import annotations

import datetime as dt
import decimal
import threading
import time

from nodedb_server.storage import codec
from nodedb_server.storage.records import OpKind, Record, RecordKind
from nodedb_server.tenants import catalog
from nodedb_server.tenants.catalog import TenantState

PUT = int(OpKind.INSERT)
DATA, CATALOG = int(RecordKind.DATA), int(RecordKind.CATALOG)


def _ops(n: int, start: int = 0) -> list[list[object]]:
    return [[PUT, "docs", f"k{i}", {"id": f"k{i}", "n": i}, None] for i in range(start, start + n)]


def _create() -> Record:
    return Record(
        1, CATALOG, 0, codec.pack(["create_collection", {"name": "docs", "engine": "document"}])
    )


def test_a_large_array_decodes_in_pieces_to_the_same_items() -> None:
    items = [
        [i, f"s{i}", {"t": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)}, decimal.Decimal("1.5"), None]
        for i in range(10_000)
    ]
    pauses = 0

    def pause() -> None:
        nonlocal pauses
        pauses += 1

    assert codec.unpack_array(codec.pack(items), 1000, pause) == items
    assert pauses == 10
    assert codec.unpack_array(codec.pack([]), 1000, pause) == []


def test_a_record_above_the_large_body_size_replays_like_small_ones() -> None:
    big = codec.pack(_ops(60_000))
    assert len(big) > catalog.LARGE_BODY
    one = TenantState()
    one.replay([_create(), Record(2, DATA, 0, big)])
    many = TenantState()
    many.replay(
        [_create()] + [Record(2 + j, DATA, 0, codec.pack(_ops(1000, j * 1000))) for j in range(60)]
    )
    assert one.engines["docs"].rows == many.engines["docs"].rows
    assert one.engines["docs"].size_bytes == many.engines["docs"].size_bytes
    assert len(one.engines["docs"]) == 60_000


def test_another_thread_runs_while_a_long_replay_holds_the_interpreter() -> None:
    records = [_create(), Record(2, DATA, 0, codec.pack(_ops(300_000)))]
    records += [Record(3 + j, DATA, 0, codec.pack(_ops(1, 300_000 + j))) for j in range(200_000)]
    ticks = 0
    stop = threading.Event()

    def other() -> None:  # what the event loop is to a replay: a thread wanting the GIL
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    thread = threading.Thread(target=other)
    thread.start()
    try:
        time.sleep(0.05)
        before = ticks
        TenantState().replay(records)
        during = ticks - before
    finally:
        stop.set()
        thread.join()
    # The replay takes about a second; the other thread wants the GIL every
    # millisecond and is handed it after the interpreter's 5 ms switch interval.
    assert during >= 20, during
