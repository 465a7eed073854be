"""Progress of a running backup or restore: its entry in ``_system.backups``
(tenants/operations.py) and NOTICEs to its client.

Long operations report to their client every ``[backup] progress_seconds``
(default 2): the worker thread that moves the bytes calls ``Progress``; the
NOTICE is sent on the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar

from nodedb_server.tenants.operations import Operation

T = TypeVar("T")


class Stopped(Exception):
    """The statement that started the operation was cancelled; the worker stops."""


class Progress:
    """Called from a worker thread with the bytes done so far. Once ``stop`` is called,
    the next call raises ``Stopped``, which ends the worker at a point where it can
    clean up after itself."""

    def __init__(self, op: Operation, notify: Callable[[str], None] | None, every_s: float):
        self.op = op
        self._notify = notify
        self._every_s = every_s
        self._loop = asyncio.get_running_loop()
        self._last = time.monotonic()
        self._stopped = False

    def stop(self) -> None:
        self._stopped = True

    def __call__(self, done: int) -> None:
        if self._stopped:
            raise Stopped(f"{self.op.kind} of tenant {self.op.tenant} was cancelled")
        self.op.bytes = done
        now = time.monotonic()
        if self._notify is None or now - self._last < self._every_s:
            return
        self._last = now
        pct = self.op.percent
        text = f"{self.op.kind} of tenant {self.op.tenant}: {done} bytes" + (
            f" ({int(pct)} %)" if pct is not None else ""  # floored: 100 % only once done
        )
        self._loop.call_soon_threadsafe(self._notify, text)


class ProgressReader:
    """A source that reports how far it has been read."""

    def __init__(self, source: BinaryIO, progress: Progress):
        self._source = source
        self._progress = progress

    def read(self, n: int) -> bytes:
        data = self._source.read(n)
        self._progress(self._source.tell())
        return data

    def tell(self) -> int:
        return self._source.tell()


async def in_worker(progress: Progress, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on a worker thread. If the awaiting statement is cancelled (a cancel
    request, statement_timeout, the client leaving), the worker is told to stop and is
    waited for before the cancellation goes on, so the statement's clean-up (removing a
    staging directory, a partial file) never races a thread still writing there."""
    fut = asyncio.get_running_loop().run_in_executor(None, fn, *args)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        progress.stop()
        await asyncio.wait([fut])
        if not fut.cancelled():
            fut.exception()  # the worker's own ending (Stopped) is not news: mark it seen
        raise
