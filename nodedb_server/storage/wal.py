"""The per-tenant write-ahead log: append with group commit, segment rotation, scan.

Sessions call ``Wal.append`` on the event loop; it assigns the next LSN and
queues the record. One writer thread per WAL takes everything queued, seals it
(AES-256-GCM) and writes it in one batch, fsyncs once, then hands the batch
back to the event loop, which resolves every waiting statement together: that
is group commit. With ``fsync = "always"`` nothing resolves before its fsync
returned. The thread goes straight on to the next batch: the fsyncs follow
one another while the loop answers and runs statements, rather than each
waiting for the loop to be free to start it.

A failed write or fsync is never retried on the same file: after the 2018
PostgreSQL fsync discussion, a failed fsync means the page cache may have
dropped the dirty pages, so a later fsync "succeeding" proves nothing. The
WAL turns broken, every pending and later append fails, and the owner
recovers from what is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nodedb_server.storage.fsio import FileIO
from nodedb_server.storage.quarantine import move_aside
from nodedb_server.storage.records import (
    MAX_BODY,
    RECORD_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    CorruptRecord,
    Record,
    SegmentHeader,
    crc32c,
    frame_groups,
    open_records,
    parse_record_header,
    seal_frame,
)

log = logging.getLogger("nodedb.wal")

# [wal] fsync: when a record is acknowledged (docs/OPERATIONS.md): "always" after its
# fsync, "batch" once written (fsync at least every batch_ms), "off" never fsyncs.
FsyncMode = Literal["always", "batch", "off"]
SINK_RECORDS = 4096  # records a scan hands its sink at a time


def segment_name(first_lsn: int) -> str:
    return f"{first_lsn:020d}.wal"


def list_segments(wal_dir: Path) -> list[Path]:
    """Segment files in LSN order (their names are the zero-padded first LSN)."""
    if not wal_dir.exists():
        return []
    return sorted(p for p in wal_dir.iterdir() if p.suffix == ".wal" and p.stem.isdigit())


class WalBroken(Exception):
    """The WAL failed a write or fsync; the cause is the OSError."""

    def __init__(self, cause: OSError):
        super().__init__(str(cause))
        self.cause = cause

    @property
    def disk_full(self) -> bool:
        return self.cause.errno in (errno.ENOSPC, errno.EDQUOT)


class RecordTooLarge(ValueError):
    """A record bigger than a scan accepts (records.MAX_PAYLOAD): refused before it is
    logged, because replay would take it for damage and cut the WAL there."""

    def __init__(self, size: int):
        super().__init__(f"a record of {size} bytes is over the {MAX_BODY} a WAL record holds")
        self.size = size


@dataclass
class SegmentInfo:
    path: Path
    first_lsn: int
    last_lsn: int
    bytes: int


@dataclass
class _Pending:
    record: Record
    future: asyncio.Future[int]
    seal: bool = False  # close the open segment once this batch is written


@dataclass
class ScanResult:
    records: list[Record] = field(default_factory=list)
    segments: list[SegmentInfo] = field(default_factory=list)
    torn: str | None = None  # why the scan stopped early, if it did
    torn_path: Path | None = None
    torn_offset: int = 0
    discarded_bytes: int = 0
    later_segments: list[Path] = field(default_factory=list)


class SegmentScan:
    """The records of one segment's bytes, in order, each checked: the segment header
    (checksum, tenant), then per frame (or old single record) its CRC32C, GCM tag,
    tenant and LSNs following on. Iterating stops at the first damaged frame and leaves
    ``error`` (why) and ``offset`` (where) set; the constructor raises CorruptRecord if
    the segment header itself is damaged or names another tenant. ``after`` is the LSN
    the previous segment ended at: a record at or below it is damage. Records up to
    ``leave_out`` are checked but not yielded. ``check_crc=False`` skips the CRC32C,
    for bytes the caller already matched to a whole-file CRC32C taken when each
    frame's had been checked (an archived segment and its note)."""

    def __init__(
        self,
        data: bytes,
        aead: AESGCM,
        tenant_id: int,
        after: int = 0,
        check_crc: bool = True,
        *,
        header: SegmentHeader | None = None,
        base: int = 0,
        leave_out: int = 0,
    ):
        # ``data`` is the whole segment, or (with ``header``, read apart) its bytes from
        # offset ``base`` on, where a frame starts; ``offset`` is always the file's.
        header = header if header is not None else SegmentHeader.decode(data)
        if header.tenant_id != tenant_id:
            raise CorruptRecord(f"segment belongs to tenant {header.tenant_id}")
        self.header = header
        self.last_lsn = header.first_lsn - 1  # of the records read so far
        self.count = 0
        self.error: str | None = None
        self.offset = base if base else SEGMENT_HEADER_SIZE
        self._data, self._aead, self._tenant_id, self._after = data, aead, tenant_id, after
        self._check_crc, self._base = check_crc, base
        self._skip_to = leave_out  # records up to it are checked but not yielded
        # The LSN the next frame must start at, once known: after a frame read or
        # passed, and at a frame start learnt earlier (``base``). A frame whose header
        # says otherwise is damage, not a gap to step over.
        self._next: int | None = after + 1 if base else None
        self.frame_lsn, self.frame_offset = 0, self.offset

    def skip_through(self, lsn: int, mark: Callable[[int, int], None] | None = None) -> None:
        """Pass over the records up to LSN ``lsn`` by their headers alone, neither
        decrypted nor checked: for a reader after a later record, whose checks come
        when it reads. A frame holding ``lsn`` and later records is read, and its records
        up to ``lsn`` left out. ``mark(lsn, offset)`` is told where a frame starts (its
        first LSN) about every 1,024 records."""
        data, base, size = self._data, self._base, len(self._data)
        off = self.offset - base
        n = 0
        while off + RECORD_HEADER_SIZE <= size:
            try:
                head = parse_record_header(memoryview(data)[off : off + RECORD_HEADER_SIZE])
            except CorruptRecord:
                return  # iterating reports it
            if head.lsn > lsn:
                break
            if head.last_lsn > lsn:
                self._skip_to = lsn
                break
            if self._next is not None and head.lsn != self._next:
                return  # iterating reports it
            if mark is not None and (n + head.record_count) // 1024 > n // 1024:
                mark(head.lsn, base + off)
            n += head.record_count
            off += RECORD_HEADER_SIZE + head.payload_len
            self.last_lsn = self._after = head.last_lsn
            self._next = head.last_lsn + 1
        self.offset = base + off

    def __iter__(self) -> Iterator[Record]:
        """The records, in order. While one is handled, ``frame_lsn`` and ``frame_offset``
        say where the frame holding it starts, ``offset`` where it ends and ``last_lsn``
        its last record's LSN."""
        data, aead, tenant_id, epoch = self._data, self._aead, self._tenant_id, self.header.epoch
        check_crc, base = self._check_crc, self._base
        view = memoryview(data)
        off, size, last = self.offset - base, len(data), self._after
        while off < size:
            try:
                head = parse_record_header(view[off : off + RECORD_HEADER_SIZE])
                end = off + RECORD_HEADER_SIZE + head.payload_len
                if end > size:
                    raise CorruptRecord(f"record at LSN {head.lsn} is cut short")
                if head.tenant_id != tenant_id:
                    raise CorruptRecord(f"record at LSN {head.lsn} names another tenant")
                if head.lsn <= last or (self._next is not None and head.lsn != self._next):
                    raise CorruptRecord(f"record LSN {head.lsn} does not follow {last}")
                payload = data[off + RECORD_HEADER_SIZE : end]
                recs = open_records(aead, epoch, head, payload, check_crc)
            except CorruptRecord as e:
                self.error, self.offset = str(e), base + off
                return
            self.frame_lsn, self.frame_offset = head.lsn, base + off
            last = self.last_lsn = head.last_lsn
            self._next = last + 1
            off = end
            self.offset = base + end
            self.count += len(recs)
            skip = self._skip_to
            for rec in recs:
                if rec.lsn > skip:
                    yield rec


def scan(
    wal_dir: Path,
    aead: AESGCM,
    tenant_id: int,
    after_lsn: int = 0,
    sink: Callable[[SegmentInfo, list[Record]], None] | None = None,
) -> ScanResult:
    """Read every valid record in LSN order; stop at the first damaged one.

    Records at or below ``after_lsn`` are checked but not returned. With ``sink``, the
    records are handed to it as they are read, a few thousand at a time with the
    segment they are in, rather than returned: a replay applies them while they are
    fresh in the cache, and never holds a whole WAL of them. Nothing is changed on
    disk: ``repair_tail`` acts on the result.
    """
    out = ScanResult()
    last_lsn = 0
    segs = list_segments(wal_dir)
    for i, path in enumerate(segs):
        data = path.read_bytes()
        try:
            reader = SegmentScan(data, aead, tenant_id, last_lsn, leave_out=after_lsn)
        except CorruptRecord as e:
            out.torn, out.torn_path, out.torn_offset = str(e), path, 0
            out.discarded_bytes = len(data)
            out.later_segments = segs[i + 1 :]
            return out
        seg = SegmentInfo(path, reader.header.first_lsn, reader.header.first_lsn - 1, len(data))
        wanted = iter(reader)
        if sink is None:
            out.records.extend(wanted)
        else:
            while chunk := list(itertools.islice(wanted, SINK_RECORDS)):
                sink(seg, chunk)
        if reader.count:
            seg.last_lsn = last_lsn = reader.last_lsn
        if reader.error is not None:
            seg.bytes = reader.offset
            out.segments.append(seg)
            out.torn, out.torn_path, out.torn_offset = reader.error, path, reader.offset
            out.discarded_bytes = len(data) - reader.offset
            out.later_segments = segs[i + 1 :]
            return out
        out.segments.append(seg)
    return out


def record_times(path: Path) -> tuple[int, int, int, int]:
    """(first LSN, last LSN, first commit_us, last commit_us) of a sealed segment, read
    from the record headers alone (no key needed; each record's CRC32C is checked).
    Raises CorruptRecord if the segment does not read to its end."""
    data = path.read_bytes()
    sh = SegmentHeader.decode(data)
    off = SEGMENT_HEADER_SIZE
    first = last = first_us = last_us = 0
    while off < len(data):
        head = parse_record_header(memoryview(data)[off : off + RECORD_HEADER_SIZE])
        end = off + RECORD_HEADER_SIZE + head.payload_len
        if end > len(data):
            raise CorruptRecord(f"{path.name}: record at LSN {head.lsn} is cut short")
        if crc32c(head.raw, data[off + RECORD_HEADER_SIZE : end]) != head.crc:
            raise CorruptRecord(f"{path.name}: record at LSN {head.lsn} fails its CRC32C")
        if not first:
            first, first_us = head.lsn, head.commit_us
        last, last_us = head.last_lsn, head.last_us
        off = end
    if not first:
        return sh.first_lsn, sh.first_lsn - 1, 0, 0
    return first, last, first_us, last_us


def repair_tail(
    fs: FileIO, wal_dir: Path, result: ScanResult, quarantine: Path, owner: str
) -> None:
    """Truncate the torn tail found by ``scan``; move any later segments to quarantine."""
    if result.torn_path is None:
        return
    torn = result.torn_path
    if result.torn_offset == 0:
        _quarantine(torn, quarantine, f"damaged before its first record: {result.torn}", owner)
    else:
        fs.truncate(torn, result.torn_offset)
    for p in result.later_segments:
        _quarantine(p, quarantine, f"follows damage in {torn.name} ({result.torn})", owner)
    fs.fsync_dir(wal_dir)


def _quarantine(path: Path, quarantine: Path, reason: str, owner: str) -> None:
    target = move_aside(path, quarantine, reason, owner)
    log.warning("moved damaged WAL file %s to %s", path.name, target)


class Wal:
    """The append side of one tenant's WAL: construct it, then ``await start()``."""

    def __init__(
        self,
        wal_dir: Path,
        tenant_id: int,
        aead: AESGCM,
        fs: FileIO,
        *,
        next_lsn: int,
        segment_bytes: int,
        fsync: FsyncMode,
        batch_ms: int,
        segments: list[SegmentInfo],
    ):
        self.dir = wal_dir
        self.tenant_id = tenant_id
        self._aead = aead
        self._fs = fs
        self._segment_bytes = segment_bytes
        self._fsync_mode = fsync
        self._batch_s = batch_ms / 1000.0
        self.next_lsn = next_lsn
        self.durable_lsn = next_lsn - 1
        # Called on the event loop with each batch once it is durable, in LSN order:
        # how the Event Plane is fed from the WAL, never from the statement path.
        self.on_durable: Callable[[list[Record]], None] | None = None
        self.segments = list(segments)  # closed segments, oldest first, then the active one
        self.broken: WalBroken | None = None
        self.bytes_since_checkpoint = 0
        self._fd = -1
        self._epoch = 0
        # Appended on the loop, taken by the writer thread, both under _cond.
        self._queue: list[_Pending] = []
        self._cond = threading.Condition(threading.Lock())
        self._idle = False  # the writer waits for work: an append must wake it
        self._closing = False
        # The writer thread. Not "_thread": mypyc's C field for it, __thread, is a keyword.
        self._writer: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._synced_at = time.monotonic()
        self._unsynced = False
        self._segments_lock = threading.Lock()
        # Set (on the loop) whenever a segment is sealed: the archiver waits on it.
        self.sealed = asyncio.Event()

    async def start(self) -> None:
        """Open a fresh segment (fresh nonce epoch) and start the writer task."""
        loop = self._loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._start_segment)
        self._writer = threading.Thread(
            target=self._write_loop, name=f"wal-writer-{self.tenant_id}", daemon=True
        )
        self._writer.start()

    @property
    def last_lsn(self) -> int:
        """The last LSN handed out (durable or on its way)."""
        return self.next_lsn - 1

    def append(
        self, rtype: int, body: bytes, commit_us: int | None = None
    ) -> tuple[int, asyncio.Future[int]]:
        """Queue a record of kind ``rtype`` (a RecordKind, or its int); the future
        resolves with its LSN once it is durable."""
        if self.broken is not None:
            raise self.broken
        if len(body) > MAX_BODY:
            raise RecordTooLarge(len(body))
        lsn = self.next_lsn
        self.next_lsn += 1
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        us = commit_us if commit_us is not None else time.time_ns() // 1000
        self._enqueue(_Pending(Record(lsn, rtype, us, body), fut))
        return lsn, fut

    def _enqueue(self, pending: _Pending) -> None:
        with self._cond:
            # The writer has stopped, or stops once the queue is empty: never a hang.
            if self.broken is not None:
                raise self.broken
            if self._closing:
                raise WalBroken(OSError(errno.ESHUTDOWN, "the WAL is closed"))
            self._queue.append(pending)
            if self._idle:
                self._cond.notify()

    async def wait_durable(self, lsn: int) -> None:
        """Wait until every record up to ``lsn`` is durable (or the WAL broke)."""
        while self.durable_lsn < lsn:
            if self.broken is not None:
                raise self.broken
            _, fut = self.append_barrier()
            await fut

    def append_barrier(self) -> tuple[int, asyncio.Future[int]]:
        """A future that resolves when everything queued so far is durable."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._enqueue(_Pending(Record(0, 0, 0, b""), fut))
        return 0, fut

    async def seal(self) -> None:
        """Close the open segment now if it holds records (the next record starts a new
        one), after everything queued so far is written: the WAL archive's max delay."""
        if self.broken is not None:
            raise self.broken
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._enqueue(_Pending(Record(0, 0, 0, b""), fut, seal=True))
        await fut

    @property
    def open_segment_has_records(self) -> bool:
        seg = self.segments[-1] if self.segments else None
        return seg is not None and seg.last_lsn >= seg.first_lsn

    async def close(self) -> None:
        """Flush what is queued, fsync, and stop the writer."""
        loop = asyncio.get_running_loop()
        if self._writer is not None:
            if self.broken is None and self._queue:
                _, fut = self.append_barrier()
                with contextlib.suppress(WalBroken):
                    await fut
            with self._cond:
                self._closing = True
                self._cond.notify()
            await loop.run_in_executor(None, self._writer.join)
            self._writer = None
        await loop.run_in_executor(None, self._close_fd)

    def _close_fd(self) -> None:
        if self._fd >= 0:
            try:
                if self._unsynced and self.broken is None and self._fsync_mode != "off":
                    self._fs.fsync(self._fd)
            finally:
                self._fs.close(self._fd)
                self._fd = -1

    # ---- the writer thread ---------------------------------------------------

    def _write_loop(self) -> None:
        """Write and fsync batch after batch; each goes back to the loop once durable."""
        loop = self._loop
        assert loop is not None
        while True:
            with self._cond:
                if not self._queue and not self._closing:
                    # In "batch" mode an unsynced write is fsynced within batch_ms.
                    self._idle = True
                    self._cond.wait(self._batch_s if self._unsynced else None)
                    self._idle = False
                if self._closing and not self._queue:
                    return
                batch, self._queue = self._queue, []
            records = [p.record for p in batch if p.record.lsn]
            seal = any(p.seal for p in batch)
            try:
                try:
                    rotated = self._write_batch(records, seal)
                except Exception as e:
                    cause = e if isinstance(e, OSError) else OSError(errno.EIO, repr(e))
                    if not isinstance(e, OSError):
                        log.exception("tenant %d: the WAL writer failed", self.tenant_id)
                    loop.call_soon_threadsafe(self._fail, WalBroken(cause), batch)
                    return
                if batch:
                    loop.call_soon_threadsafe(self._done, batch, records, seal or rotated)
            except RuntimeError:  # the event loop is closed: no one is left to answer
                return

    def _done(self, batch: list[_Pending], records: list[Record], sealed: bool) -> None:
        """On the loop: a batch is durable; answer its statements, then its readers."""
        if records:
            self.durable_lsn = records[-1].lsn
        if sealed:
            self.sealed.set()
        for p in batch:
            if not p.future.done():
                p.future.set_result(p.record.lsn)
        if records and self.on_durable is not None:
            try:  # after the writers are answered: readers never delay an ack
                self.on_durable(records)
            except Exception:  # nor can a reader's bug stop the WAL
                log.exception("tenant %d: a WAL reader failed", self.tenant_id)

    def _fail(self, err: WalBroken, batch: list[_Pending]) -> None:
        self.broken = err
        log.error(
            "tenant %d: WAL write failed (%s); no further writes are accepted "
            "until it recovers from disk",
            self.tenant_id,
            err.cause,
        )
        with self._cond:  # the writer thread has stopped: what is queued is failed too
            waiting, self._queue = self._queue, []
        for p in batch + waiting:
            if not p.future.done():
                p.future.set_exception(err)

    def _write_batch(self, records: list[Record], seal: bool = False) -> bool:
        """Write (and fsync, as the mode says) one batch; True if a segment was sealed."""
        rotated = False
        if records:
            if self.segments[-1].bytes >= self._segment_bytes:
                self._rotate(records[0].lsn)
                rotated = True
            data = b"".join(
                seal_frame(self._aead, self._epoch, self.tenant_id, group)
                for group in frame_groups(records)
            )
            seg = self.segments[-1]
            try:
                self._fs.write(self._fd, data)
                self._sync_if_due(wrote=True)
            except Exception:
                # Take the unacknowledged batch back out so that recovery cannot
                # replay a write whose statement was told it failed.
                self._undo_tail(seg.bytes)
                raise
            seg.bytes += len(data)
            seg.last_lsn = records[-1].lsn
            self.bytes_since_checkpoint += len(data)
        else:
            self._sync_if_due(wrote=False)
        if seal and self.open_segment_has_records:
            self._rotate(self.segments[-1].last_lsn + 1)
            rotated = True
        return rotated

    def _sync_if_due(self, wrote: bool) -> None:
        if self._fsync_mode == "off":
            return
        self._unsynced = self._unsynced or wrote
        if not self._unsynced:
            return
        now = time.monotonic()
        if self._fsync_mode == "always" or now - self._synced_at >= self._batch_s:
            self._fs.fsync(self._fd)
            self._synced_at = now
            self._unsynced = False

    def _undo_tail(self, length: int) -> None:
        try:
            self._fs.ftruncate(self._fd, length)
        except OSError as e:
            log.error(
                "tenant %d: could not cut the failed batch from the WAL: %s", self.tenant_id, e
            )

    def _rotate(self, first_lsn: int) -> None:
        if self._fsync_mode != "off":
            self._fs.fsync(self._fd)
        self._fs.close(self._fd)
        self._fd = -1
        self._start_segment(first_lsn)

    def _start_segment(self, first_lsn: int | None = None) -> None:
        first = self.next_lsn if first_lsn is None else first_lsn
        path = self.dir / segment_name(first)
        if path.exists():
            # An empty segment left by a boot that wrote nothing: replace it, and forget
            # it, or a checkpoint would later delete it by name, and with it this one.
            if path.stat().st_size > SEGMENT_HEADER_SIZE:
                raise OSError(errno.EEXIST, f"WAL segment {path.name} already exists")
            path.unlink()
            with self._segments_lock:
                self.segments = [s for s in self.segments if s.path != path]
        self._epoch = secrets.randbits(32)
        header = SegmentHeader(self.tenant_id, self._epoch, first).encode()
        fd = self._fs.open_new(path)
        try:
            self._fs.write(fd, header)
            if self._fsync_mode != "off":
                self._fs.fsync(fd)
                self._fs.fsync_dir(self.dir)
        except OSError:
            self._fs.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._fd = fd
        with self._segments_lock:
            self.segments.append(SegmentInfo(path, first, first - 1, len(header)))

    def remove_segments_through(
        self, lsn: int, may_remove: Callable[[SegmentInfo], bool] = lambda _s: True
    ) -> list[Path]:
        """Delete closed segments whose every record is at or below ``lsn`` and that
        ``may_remove`` allows (with archiving on: those already archived)."""
        # The writer may open a segment meanwhile (on its own thread): the list is
        # replaced under the lock, so the new segment is never dropped from it.
        with self._segments_lock:
            active = self.segments[-1].path
            gone = [
                s
                for s in self.segments[:-1]
                if s.last_lsn <= lsn and s.path != active and may_remove(s)
            ]
            self.segments = [s for s in self.segments if all(s is not g for g in gone)]
        removed = []
        for seg in gone:
            seg.path.unlink(missing_ok=True)
            removed.append(seg.path)
        if removed:
            self._fs.fsync_dir(self.dir)
        return removed
