"""What running a statement hands back to the wire layer.

A ``Result`` is rows and a command tag; a statement that streams (COPY .. TO
STDOUT, COPY .. FROM STDIN, the backup and restore forms of COPY) returns one
whose ``copy`` is a ``CopyOut`` or ``CopyIn``. The wire layer sends the
CopyOutResponse or CopyInResponse, then lets the copy object drive the data,
so the simple and the extended protocol stream through one path and neither
knows what is being copied.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Column = tuple[str, int]  # (name, type OID)


@dataclass
class Result:
    columns: list[Column] | None
    rows: list[tuple[Any, ...]]
    tag: str
    notices: list[str] = field(default_factory=list)
    parameter_status: dict[str, str] = field(default_factory=dict)
    copy: CopyOut | CopyIn | None = None


class CopyOut(ABC):
    """Data a statement sends as CopyData messages. ``binary`` is the overall format
    (1: psql writes the bytes out as they come); ``columns`` the column count."""

    binary: bool = True
    columns: int = 1

    @abstractmethod
    async def run(self, send: Callable[[bytes], Awaitable[None]]) -> Result:
        """Send every piece through ``send`` (which waits while the client is slow) and
        return the statement's own result (its tag and notices). If it is cancelled or
        ``send`` fails, it stops its work and cleans up before the error goes on."""


class CopyIn(ABC):
    """Data a statement receives as CopyData messages."""

    binary: bool = False
    columns: int = 1

    @abstractmethod
    async def run(self, chunks: AsyncIterator[bytes]) -> Result:
        """Consume ``chunks`` (the CopyData payloads until CopyDone; the iterator raises
        57014 on CopyFail) and return the statement's result. It may give up early by
        raising: the wire layer then drops the rest of the data, as PostgreSQL does."""
