"""Changes read back from a tenant's committed WAL: what change streams deliver.

The Event Plane is fed by WAL records only, never by the statement path: a
change is readable once its record is durable (``Wal.durable_lsn``), and what
a stream returns is exactly what a crash recovery would replay. A record is
one transaction; each of its row operations on a document or key-value
collection is one change:

    INSERT  a row that did not exist (the operation the storage logged)
    UPDATE  a row replaced (an UPSERT of an existing id is an UPDATE)
    DELETE  a row removed (new_value NULL)

``old_value`` is NULL: the WAL holds the new row only. Edges, CRDT updates
and timeseries appends are not changes of a row and are not delivered.

Reads scan the segment files from the one holding the first wanted LSN; a
segment being appended to is read up to its last whole record (a record cut
short at the end is the writer's, not damage). Runs on a worker thread.
``Positions`` remembers where frames start, so that a consumer reading a
segment batch by batch reads each part of it once, not the segment's whole
head again for every batch.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nodedb_server.storage import codec
from nodedb_server.storage.records import (
    RECORD_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    CorruptRecord,
    OpKind,
    Record,
    RecordKind,
    SegmentHeader,
    parse_record_header,
)
from nodedb_server.storage.wal import SegmentScan, list_segments

OP_NAMES = {
    int(OpKind.INSERT): "INSERT",
    int(OpKind.UPDATE): "UPDATE",
    int(OpKind.DELETE): "DELETE",
}


class WalGone(Exception):
    """The WAL no longer holds the first LSN asked for: ``oldest`` is the first it has."""

    def __init__(self, oldest: int):
        super().__init__(f"the WAL starts at LSN {oldest}")
        self.oldest = oldest


class Change(NamedTuple):  # a tuple: built once per change read, at a fifth of a dataclass's cost
    lsn: int
    op: str
    collection: str
    id: Any
    new_value: dict[str, Any] | None
    commit_us: int


@dataclass
class ChangeBatch:
    changes: list[Change]
    # The LSN read through: every record up to it was looked at, whether or not it
    # held a change to the stream's collection.
    read_to: int


class Positions:
    """Where frames start in a tenant's segment files, as (lsn, offset) per segment: the
    frame whose first record is ``lsn`` starts at ``offset``. Learnt by earlier reads:
    where each batch ended, and a frame about every 1,024 records passed.
    Shared by the reads of every stream and session of the tenant (worker threads)."""

    PER_SEGMENT = 4096

    def __init__(self) -> None:
        self._marks: dict[str, list[tuple[int, int]]] = {}
        self._lock = threading.Lock()

    def nearest(self, segment: str, lsn: int) -> tuple[int, int] | None:
        """The known frame start at or below ``lsn`` in ``segment`` nearest to it."""
        with self._lock:
            marks = self._marks.get(segment)
            if not marks:
                return None
            i = bisect.bisect_right(marks, (lsn, 1 << 62)) - 1
            return marks[i] if i >= 0 else None

    def learn(self, segment: str, lsn: int, offset: int) -> None:
        with self._lock:
            marks = self._marks.setdefault(segment, [])
            i = bisect.bisect_left(marks, (lsn, 0))
            if i < len(marks) and marks[i][0] == lsn:
                return
            marks.insert(i, (lsn, offset))
            if len(marks) > self.PER_SEGMENT:
                del marks[1::2]  # thinner, evenly

    def keep_only(self, segments: Iterable[str]) -> None:
        """Forget the segments no longer on disk."""
        names = set(segments)
        with self._lock:
            for gone in [n for n in self._marks if n not in names]:
                del self._marks[gone]


def record_changes(
    lsn: int, rtype: int, commit_us: int, body: bytes, collections: set[str]
) -> list[Change]:
    """The changes of one committed record to the ``collections`` named."""
    if rtype != RecordKind.DATA:
        return []
    out = []
    for op, coll, key, row, _expires in codec.unpack(body):
        name = OP_NAMES.get(op)
        if name is None or coll not in collections:
            continue
        new_value = row if name != "DELETE" and isinstance(row, dict) else None
        out.append(Change(lsn, name, coll, key, new_value, commit_us))
    return out


def _segments_from(wal_dir: Path, after_lsn: int, segs: list[Path] | None = None) -> list[Path]:
    """The segments that may hold LSNs above ``after_lsn``, oldest first."""
    segs = list_segments(wal_dir) if segs is None else segs
    start = 0
    for i, path in enumerate(segs):
        if int(path.stem) <= after_lsn + 1:
            start = i
    return segs[start:]


def read_changes(
    wal_dir: Path,
    aead: AESGCM,
    tenant_id: int,
    collections: set[str],
    after_lsn: int,
    upto_lsn: int,
    limit: int,
    since_us: int = 0,
    positions: Positions | None = None,
) -> ChangeBatch:
    """Changes to ``collections`` with ``after_lsn`` < lsn <= ``upto_lsn``, in LSN order.
    ``limit`` counts changes but never splits a record: a batch ends before the record
    that would take it past the limit (yet holds at least one record's changes); records
    committed before ``since_us`` are passed over. Raises WalGone if the WAL no longer
    reaches back to ``after_lsn + 1``."""
    if upto_lsn <= after_lsn:
        return ChangeBatch([], after_lsn)
    every = list_segments(wal_dir)
    if positions is not None:
        positions.keep_only(p.name for p in every)
    segs = _segments_from(wal_dir, after_lsn, every)
    if not segs or int(segs[0].stem) > after_lsn + 1:
        raise WalGone(int(segs[0].stem) if segs else upto_lsn + 1)
    try:
        records = _records(segs, aead, tenant_id, after_lsn, upto_lsn, positions)
        try:
            return collect(records, collections, after_lsn, limit, since_us)
        finally:
            records.close()  # learns where the batch ended
    except FileNotFoundError:
        # Removed after it was listed (a checkpoint covered it and nothing retained it).
        segs = list_segments(wal_dir)
        raise WalGone(int(segs[0].stem) if segs else upto_lsn + 1) from None


def collect(
    records: Iterable[Record],
    collections: set[str],
    after_lsn: int,
    limit: int,
    since_us: int = 0,
) -> ChangeBatch:
    """The changes of ``records`` (in LSN order, all above ``after_lsn``), up to ``limit``
    changes without splitting a record. ``read_to`` is the last record looked at: short
    of the end only if a segment stopped early, and the next read starts there again
    rather than step over anything."""
    batch = ChangeBatch([], after_lsn)
    for rec in records:
        if rec.commit_us < since_us:
            batch.read_to = rec.lsn
            continue
        changes = record_changes(rec.lsn, rec.rtype, rec.commit_us, rec.body, collections)
        if changes and batch.changes and len(batch.changes) + len(changes) > limit:
            return batch
        batch.changes += changes
        batch.read_to = rec.lsn
        if len(batch.changes) >= limit:
            return batch
    return batch


def _records(
    segs: list[Path],
    aead: AESGCM,
    tenant_id: int,
    after_lsn: int,
    upto_lsn: int,
    positions: Positions | None,
) -> Generator[Record, None, None]:
    """Every record in the range, in order, read from the segment files: the first
    from the nearest known frame start (``positions``) on, passing the records up to
    ``after_lsn`` by their headers alone."""
    for i, path in enumerate(segs):
        mark = None if positions is None else _marker(positions, path.name)
        try:
            reader = _open_scan(path, aead, tenant_id, after_lsn if i == 0 else 0, positions)
        except CorruptRecord:
            return  # a segment just started, its header not yet written whole
        reader.skip_through(after_lsn, mark)
        rec: Record | None = None
        try:
            for rec in reader:
                if rec.lsn > upto_lsn:
                    return
                yield rec
        finally:
            if mark is not None and rec is not None:  # where the next reads may start
                mark(reader.frame_lsn, reader.frame_offset)  # the frame holding rec
                if rec.lsn == reader.last_lsn:
                    mark(rec.lsn + 1, reader.offset)  # the next frame
        if reader.error is not None:
            return


def _marker(positions: Positions, segment: str) -> Callable[[int, int], None]:
    return lambda lsn, offset: positions.learn(segment, lsn, offset)


def _open_scan(
    path: Path, aead: AESGCM, tenant_id: int, after_lsn: int, positions: Positions | None
) -> SegmentScan:
    """A scan of ``path``: from the known frame start nearest after ``after_lsn``, its
    bytes before that left unread, or from its beginning."""
    known = positions.nearest(path.name, after_lsn + 1) if positions is not None else None
    if known is None:
        return SegmentScan(path.read_bytes(), aead, tenant_id)
    lsn, offset = known
    with path.open("rb") as f:
        header = SegmentHeader.decode(f.read(SEGMENT_HEADER_SIZE))
        f.seek(offset)
        rest = f.read()
    return SegmentScan(rest, aead, tenant_id, lsn - 1, header=header, base=offset)


def commit_time(wal_dir: Path, lsn: int) -> int | None:
    """The commit time (µs) of record ``lsn`` from the segment files' frame headers (no
    key needed): exact for the first and the last record of a frame, else the frame's
    first record's time, earlier by at most one group commit's wait. None if no segment holds it. Runs
    on a worker thread."""
    segs = _segments_from(wal_dir, lsn - 1)
    for path in segs[:1]:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        off = SEGMENT_HEADER_SIZE
        while off + RECORD_HEADER_SIZE <= len(data):
            try:
                head = parse_record_header(memoryview(data)[off : off + RECORD_HEADER_SIZE])
            except CorruptRecord:
                return None
            if lsn == head.last_lsn:
                return head.last_us
            if head.lsn <= lsn <= head.last_lsn:
                return head.commit_us  # of a frame's first record: at most a batch earlier
            off += RECORD_HEADER_SIZE + head.payload_len
    return None
