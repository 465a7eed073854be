"""Backups streamed over a connection: the COPY forms of BACKUP and RESTORE.

``stream_backup`` seals a snapshot on a worker thread and hands the envelope
over in pieces through a bounded queue; ``stream_restore`` feeds pieces that
arrive to a restore reading on a worker thread, through a bounded queue too.
Memory stays flat whatever the tenant's size. What carries the pieces (COPY
data on the wire) is the caller's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import BinaryIO, TypeVar

from nodedb_server.backup.progress import Progress
from nodedb_server.backup.writer import Summary, take_snapshot, write_envelope
from nodedb_server.tenants.manager import TenantManager
from nodedb_server.tenants.tenant import Tenant

T = TypeVar("T")
# Pieces waiting between the sealing thread and the connection.
QUEUED_PIECES = 8


async def stream_backup(
    manager: TenantManager,
    tenant: Tenant,
    progress: Progress,
    send: Callable[[bytes], Awaitable[None]],
) -> Summary:
    """Snapshot ``tenant`` and send its envelope piece by piece. If ``send`` fails or the
    caller is cancelled, the sealing thread is stopped and waited for."""
    snapshot = await take_snapshot(manager, tenant)
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=QUEUED_PIECES)
    stop = threading.Event()

    class Sink:
        def write(self, data: bytes) -> None:
            if stop.is_set():
                raise ConnectionError("the client stopped reading the backup")
            asyncio.run_coroutine_threadsafe(pieces.put(bytes(data)), loop).result()

    def produce() -> Summary:
        try:
            return write_envelope(snapshot, Sink(), progress)  # type: ignore[arg-type]
        finally:
            if not stop.is_set():
                asyncio.run_coroutine_threadsafe(pieces.put(None), loop).result()

    work = loop.run_in_executor(None, produce)
    try:
        while (piece := await pieces.get()) is not None:
            await send(piece)
        return await work
    finally:
        if not work.done():
            stop.set()
            while not work.done():  # unblock a producer waiting on a full queue
                with contextlib.suppress(asyncio.QueueEmpty):
                    pieces.get_nowait()
                await asyncio.sleep(0.01)


class StreamSource:
    """A file-like ``read`` over arriving pieces, fed by the event loop and read by a
    worker thread. The queue is bounded, so a large backup never sits in memory whole."""

    def __init__(self) -> None:
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self._buf = bytearray()
        self._pos = 0
        self._eof = False

    def offer(self, data: bytes) -> bool:
        try:
            self._queue.put_nowait(data)
            return True
        except queue.Full:
            return False

    def close(self) -> None:
        while True:
            try:
                self._queue.put(None, timeout=0.5)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()

    def read(self, n: int) -> bytes:
        while len(self._buf) < n and not self._eof:
            item = self._queue.get()
            if item is None:
                self._eof = True
            else:
                self._buf += item
        out = bytes(self._buf[:n])
        del self._buf[:n]
        self._pos += len(out)
        return out

    def tell(self) -> int:
        return self._pos


async def stream_restore(
    chunks: AsyncIterator[bytes], restore: Callable[[BinaryIO], Awaitable[T]]
) -> tuple[T, int]:
    """Run ``restore`` over the pieces of ``chunks`` as they arrive; returns its result
    and the bytes it read. Once the restore has given up (damage found), the rest of
    the pieces are read and dropped. If the caller is cancelled or the pieces stop
    (the client left), the restore is cancelled and has cleaned up before this ends."""
    source = StreamSource()
    work = asyncio.ensure_future(restore(source))  # type: ignore[arg-type]
    try:
        failure: BaseException | None = None
        try:
            async for data in chunks:
                while not source.offer(data):
                    if work.done():
                        break  # the reader gave up: discard the rest
                    await asyncio.sleep(0.002)
        except Exception as e:  # CopyFail, or the client gone
            failure = e
        finally:
            source.close()
        if failure is not None:
            with contextlib.suppress(Exception):  # the cut stream fails the reader
                await work
            raise failure
        return await work, source.tell()
    finally:
        if not work.done():
            work.cancel()
            await asyncio.wait([work])
