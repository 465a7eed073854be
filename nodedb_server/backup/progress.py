"""Running and recent backups and restores (``_system.backups``), and progress NOTICEs.

Long operations report to their client every ``[backup] progress_seconds``
(default 2): the worker thread that moves the bytes calls ``Progress``; the
NOTICE is sent on the event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypeVar

T = TypeVar("T")

RECENT = 100


@dataclass
class Operation:
    id: int
    kind: str  # "backup" | "restore" | "dry run"
    tenant: str
    target: str
    total: int | None  # bytes expected, when known
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    finished_at: dt.datetime | None = None
    bytes: int = 0
    status: str = "running"
    error: str | None = None

    @property
    def percent(self) -> float | None:
        if self.status == "done":
            return 100.0
        if not self.total:
            return None
        return min(99.9, 100.0 * self.bytes / self.total)


class Operations:
    def __init__(self) -> None:
        self._next = 1
        self.recent: deque[Operation] = deque(maxlen=RECENT)

    def start(self, kind: str, tenant: str, target: str, total: int | None) -> Operation:
        op = Operation(self._next, kind, tenant, target, total)
        self._next += 1
        self.recent.append(op)
        return op

    @staticmethod
    def finish(op: Operation, error: BaseException | None = None) -> None:
        op.finished_at = dt.datetime.now(dt.UTC)
        op.status = "failed" if error is not None else "done"
        if isinstance(error, asyncio.CancelledError):
            op.error = "cancelled"
        else:
            op.error = str(error)[:200] if error is not None else None


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
