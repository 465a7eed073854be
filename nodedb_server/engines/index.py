"""Secondary indexes: one field of one collection, for equality, IN and range lookups.

Each index keeps ``value -> set of primary keys`` for equality, and the
distinct values in a sorted list (by ``sort_key``) for ranges, so a lookup
costs O(log n + matches) instead of a scan. Only scalar values are indexed
(NULLs, arrays and objects are not: comparisons with them never match a
scalar bound). Ints and floats share one ordering, as SQL compares them.

Written here rather than taken from a library: the dependency list has no
sorted-container package, and bisect over a list of distinct values is
enough for the write rates a single event loop sustains.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Any

_RANK = {bool: 1, int: 2, float: 2, str: 3, dt.datetime: 4, bytes: 5}


def sort_key(value: Any) -> tuple[int, Any] | None:
    """The index ordering of a value, or None when the value is not indexed."""
    rank = _RANK.get(type(value))
    return None if rank is None else (rank, value)


class FieldIndex:
    def __init__(self, name: str, field: str):
        self.name = name
        self.field = field
        self.eq: dict[tuple[int, Any], set[Any]] = {}
        self.ordered: list[tuple[int, Any]] = []
        self.entries = 0  # (value, key) pairs held

    def __len__(self) -> int:
        return len(self.ordered)

    def add(self, value: Any, key: Any) -> None:
        sk = sort_key(value)
        if sk is None:
            return
        keys = self.eq.get(sk)
        if keys is None:
            self.eq[sk] = {key}
            bisect.insort(self.ordered, sk)
        elif key not in keys:
            keys.add(key)
        else:
            return
        self.entries += 1

    def remove(self, value: Any, key: Any) -> None:
        sk = sort_key(value)
        if sk is None:
            return
        keys = self.eq.get(sk)
        if keys is None or key not in keys:
            return
        keys.discard(key)
        self.entries -= 1
        if not keys:
            del self.eq[sk]
            i = bisect.bisect_left(self.ordered, sk)
            if i < len(self.ordered) and self.ordered[i] == sk:
                del self.ordered[i]

    def build(self, rows: Iterable[tuple[Any, dict[str, Any]]]) -> None:
        self.eq.clear()
        for key, row in rows:
            sk = sort_key(row.get(self.field))
            if sk is not None:
                self.eq.setdefault(sk, set()).add(key)
        self.ordered = sorted(self.eq)
        self.entries = sum(len(k) for k in self.eq.values())

    def count_equal(self, value: Any) -> int:
        sk = sort_key(value)
        return len(self.eq.get(sk, ())) if sk is not None else 0

    def estimate_range(
        self,
        low: Any = None,
        low_inclusive: bool = True,
        high: Any = None,
        high_inclusive: bool = True,
    ) -> float:
        """About how many keys ``range`` yields: its share of distinct values times the entries."""
        start, stop = self._bounds(low, low_inclusive, high, high_inclusive)
        if not self.ordered or stop <= start:
            return 0.0
        return (stop - start) / len(self.ordered) * self.entries

    def _bounds(
        self, low: Any, low_inclusive: bool, high: Any, high_inclusive: bool
    ) -> tuple[int, int]:
        lo_sk = sort_key(low) if low is not None else None
        hi_sk = sort_key(high) if high is not None else None
        if (low is not None and lo_sk is None) or (high is not None and hi_sk is None):
            return 0, 0
        if lo_sk is None:
            start = 0
        elif low_inclusive:
            start = bisect.bisect_left(self.ordered, lo_sk)
        else:
            start = bisect.bisect_right(self.ordered, lo_sk)
        if hi_sk is None:
            stop = len(self.ordered)
        elif high_inclusive:
            stop = bisect.bisect_right(self.ordered, hi_sk)
        else:
            stop = bisect.bisect_left(self.ordered, hi_sk)
        return start, stop

    def equal(self, value: Any) -> set[Any]:
        sk = sort_key(value)
        return set(self.eq.get(sk, ())) if sk is not None else set()

    def range(
        self,
        low: Any = None,
        low_inclusive: bool = True,
        high: Any = None,
        high_inclusive: bool = True,
    ) -> Iterator[Any]:
        """Keys whose value lies between the bounds (None: unbounded on that side)."""
        start, stop = self._bounds(low, low_inclusive, high, high_inclusive)
        # Values of another type rank elsewhere: a range over numbers stays in numbers.
        bound = sort_key(low) if low is not None else sort_key(high)
        rank = bound[0] if bound is not None else None
        for sk in self.ordered[start:stop]:
            if rank is None or sk[0] == rank:
                yield from self.eq[sk]
