"""The in-memory tail of committed records change-stream reads use near the head."""

from __future__ import annotations

from nodedb_server.events.recent import RecentRecords
from nodedb_server.storage.records import Record, RecordKind


def recs(first: int, n: int, size: int = 10) -> list[Record]:
    return [Record(lsn, RecordKind.DATA, lsn, b"x" * size) for lsn in range(first, first + n)]


def lsns(found: list[Record] | None) -> list[int] | None:
    return None if found is None else [r.lsn for r in found]


def test_it_answers_only_what_it_reaches_back_to() -> None:
    r = RecentRecords(limit_bytes=1000)
    assert r.after(0, 10) is None  # empty: read the segments
    r.add(recs(5, 3))
    r.add(recs(8, 3))
    assert lsns(r.after(4, 10)) == [5, 6, 7, 8, 9, 10]
    assert lsns(r.after(6, 9)) == [7, 8, 9]
    assert lsns(r.after(10, 10)) == []
    assert r.after(3, 10) is None  # LSN 4 is not held


def test_the_oldest_go_past_the_byte_limit() -> None:
    r = RecentRecords(limit_bytes=50)
    for first in range(1, 3000, 10):
        r.add(recs(first, 10))
    assert lsns(r.after(2995, 3000)) == [2996, 2997, 2998, 2999, 3000]
    assert r.after(2994, 3000) is None  # five bodies of 10 bytes fit, no more


def test_a_batch_that_does_not_follow_starts_it_over() -> None:
    r = RecentRecords()
    r.add(recs(1, 5))
    r.add(recs(20, 2))  # a restore or a reload: the memory is no longer contiguous
    assert r.after(0, 30) is None
    assert lsns(r.after(19, 30)) == [20, 21]
