"""The restorable range of a source and the segments a replay to a target reads."""

from __future__ import annotations

import pytest

from nodedb_server.backup.pitr import Target, needed_segments, restore_range
from nodedb_server.errors import InvalidParameterValue
from nodedb_server.storage.uploads import ArchivedSegment


def seg(first: int, last: int) -> ArchivedSegment:
    # Record n was committed at n seconds (in microseconds).
    return ArchivedSegment(first, last, first * 1_000_000, last * 1_000_000, 100, 0)


def test_the_range_runs_from_the_watermark_to_the_first_gap() -> None:
    segments = [seg(1, 10), seg(11, 20), seg(21, 30), seg(41, 50)]
    r = restore_range("backup b", segments, 15, 15_500_000)
    assert (r.start_lsn, r.end_lsn, r.gap_at) == (15, 30, 31)
    assert r.run == (seg(11, 20), seg(21, 30))
    assert r.end_us == 30_000_000
    assert "gap at LSN 31" in r.describe(times=False)


def test_without_segments_after_it_a_source_restores_only_to_itself() -> None:
    r = restore_range("backup b", [seg(1, 10)], 10, 10_200_000)
    assert (r.end_lsn, r.end_us, r.gap_at, r.run) == (10, 10_200_000, None, ())
    assert needed_segments(r, Target(lsn=10), "t") == []


def test_an_lsn_target_reads_the_segments_up_to_it() -> None:
    r = restore_range("backup b", [seg(1, 10), seg(11, 20), seg(21, 30)], 5, 5_000_000)
    assert needed_segments(r, Target(lsn=12), "t") == [seg(1, 10), seg(11, 20)]
    assert needed_segments(r, Target(lsn=30), "t") == [seg(1, 10), seg(11, 20), seg(21, 30)]


def test_a_timestamp_target_reads_the_segments_begun_at_or_before_it() -> None:
    r = restore_range("backup b", [seg(1, 10), seg(11, 20), seg(21, 30)], 5, 5_000_000)
    assert needed_segments(r, Target(us=20_999_999), "t") == [seg(1, 10), seg(11, 20)]
    assert needed_segments(r, Target(us=21_000_000), "t") == [seg(1, 10), seg(11, 20), seg(21, 30)]


@pytest.mark.parametrize(
    "target",
    [Target(lsn=4), Target(lsn=31), Target(us=4_999_999), Target(us=30_000_001)],
)
def test_a_target_outside_the_range_is_22023_naming_the_range(target: Target) -> None:
    r = restore_range("backup b", [seg(1, 10), seg(11, 20), seg(21, 30), seg(35, 40)], 5, 5_000_000)
    with pytest.raises(InvalidParameterValue) as err:
        needed_segments(r, target, "acme")
    assert "LSN 5 to 30" in err.value.message and "gap at LSN 31" in err.value.message
    assert ("+00 to " in err.value.message) == (target.us is not None)
