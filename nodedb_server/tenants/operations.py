"""Running and recent backups and restores of tenants, which ``_system.backups`` lists.

The manager holds the one registry; backup/ starts and finishes its entries and
reports progress into them (backup/progress.py), sessions read them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

RECENT = 100  # _system.backups lists the operations started last, this many

OperationStatus = Literal["running", "done", "failed"]


@dataclass
class Operation:
    id: int
    kind: str  # "backup" | "restore" | "dry run", as the SQL layer names it
    tenant: str
    target: str
    total: int | None  # bytes expected, when known
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    finished_at: dt.datetime | None = None
    bytes: int = 0
    status: OperationStatus = "running"
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
