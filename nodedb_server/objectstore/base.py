"""Object storage: the one interface snapshots, quarantine and the WAL archive use.

A store holds objects under string keys such as ``tenants/3/wal/00000000000000000001.wal``
(always ``/``-separated, never starting with ``/``), relative to its section's
``prefix``. Two implementations: ``local.LocalStore`` (a directory) and
``s3.S3Store`` (S3-compatible, aiobotocore). Every method is a coroutine on the
event loop; file reads, writes and checksums run on worker threads, so a slow
or dead store delays only the task that waits for it, never a commit.

Errors are ``ObjectStoreError``. ``refused`` tells the two kinds apart that
start-up treats differently: the store answered and said no (no such bucket,
bad credentials: a configuration mistake, start-up stops) or it could not be
reached (connection refused, timeout: the server starts, keeps its files
local, and retries). Messages never hold credentials.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path


class ObjectStoreError(Exception):
    """A store operation failed; the message names the section and the object."""

    def __init__(self, message: str, *, refused: bool = False):
        super().__init__(message)
        self.refused = refused


class ObjectNotFound(ObjectStoreError):
    """The object does not exist."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the store's prefix
    size: int
    crc32c: int | None  # of the whole object, where the store records it
    modified: float  # unix seconds


def check_key(key: str) -> str:
    """Refuse a key that could leave the store's prefix or directory."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"bad object key {key!r}")
    return key


class ObjectStore(abc.ABC):
    """One configured section's storage."""

    section: str  # the TOML section, for messages
    url: str  # where it is, for views and messages: "s3://bucket/prefix" or a path

    @abc.abstractmethod
    async def check(self) -> None:
        """At start-up: can this store be used? Raises ObjectStoreError (see above)."""

    @abc.abstractmethod
    async def put_file(self, key: str, path: Path) -> ObjectInfo:
        """Store the file's bytes as ``key`` (replacing it), streamed; once this returns
        the object is durable and whole. Returns what was stored, checksum included."""

    @abc.abstractmethod
    async def put_bytes(self, key: str, data: bytes) -> ObjectInfo: ...

    @abc.abstractmethod
    def stream(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes in pieces; ObjectNotFound if it does not exist. If the
        store recorded a checksum, a mismatch at the end raises ObjectStoreError."""

    async def get_bytes(self, key: str) -> bytes:
        return b"".join([piece async for piece in self.stream(key)])

    @abc.abstractmethod
    async def get_file(self, key: str, path: Path) -> ObjectInfo:
        """Download ``key`` into a new file ``path`` (written, fsynced, renamed into place)."""

    @abc.abstractmethod
    async def head(self, key: str) -> ObjectInfo | None:
        """The object's size and checksum, or None if it does not exist."""

    @abc.abstractmethod
    async def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove the object; no error if it is already gone."""

    def location(self, key: str) -> str:
        """Where one object is, for views and reason notes."""
        return f"{self.url.rstrip('/')}/{key}"

    async def close(self) -> None:  # noqa: B027 - most stores hold nothing to close
        """Release connections."""
