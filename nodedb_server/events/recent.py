"""The newest committed records of a tenant, kept in memory for change-stream reads.

The tenant's WAL hands every durable batch here (``Wal.on_durable``), so a
consumer near the head reads from memory instead of reading and decrypting
segment files; a read further back, or one right after a start (the memory is
empty then), goes to the segments. Bounded by bytes of record bodies: the
oldest go first.
"""

from __future__ import annotations

import bisect

from nodedb_server.storage.records import Record

# How many bytes of record bodies a tenant keeps in memory for readers.
RECENT_BYTES = 8 << 20


class RecentRecords:
    def __init__(self, limit_bytes: int = RECENT_BYTES):
        self._limit = limit_bytes
        self._records: list[Record] = []
        self._lsns: list[int] = []
        self._start = 0  # records before it were let go (compacted away now and then)
        self._bytes = 0

    def add(self, records: list[Record]) -> None:
        """Records that just became durable, in LSN order, after every one held."""
        if self._lsns and records and records[0].lsn != self._lsns[-1] + 1:
            self.clear()  # not contiguous (a reload, a restore): start over
        for rec in records:
            self._records.append(rec)
            self._lsns.append(rec.lsn)
            self._bytes += len(rec.body)
        while self._bytes > self._limit and self._start < len(self._records):
            self._bytes -= len(self._records[self._start].body)
            self._start += 1
        if self._start > 1024 and self._start * 2 > len(self._records):
            del self._records[: self._start]
            del self._lsns[: self._start]
            self._start = 0

    def clear(self) -> None:
        self._records, self._lsns, self._start, self._bytes = [], [], 0, 0

    def after(self, lsn: int, upto: int) -> list[Record] | None:
        """The records with ``lsn`` < LSN <= ``upto``, or None if memory does not reach
        back to ``lsn + 1``."""
        if self._start >= len(self._lsns) or self._lsns[self._start] > lsn + 1:
            return None
        lo = bisect.bisect_right(self._lsns, lsn, self._start)
        hi = bisect.bisect_right(self._lsns, upto, lo)
        return self._records[lo:hi]
