"""Object storage on the local filesystem: one directory, keys as relative paths.

A put copies into ``<key>.<random>.part`` beside the target, fsyncs it, renames it
into place and fsyncs the directory, so an object is either absent or whole,
even across ``kill -9`` or a power loss. Stray ``.part`` files (an interrupted
put) are not listed. The store keeps no checksums of its own: ``head`` reads the
file to compute its CRC32C, so a caller that verifies a copy verifies the bytes
on disk.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

import google_crc32c

from nodedb_server.objectstore.base import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    check_key,
)

PIECE = 1 << 20
PART_SUFFIX = ".part"
T = TypeVar("T")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs(path: Path) -> None:
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue
        _fsync_dir(d.parent)


def _write_from(target: Path, pieces: Callable[[], bytes]) -> tuple[int, int]:
    """Write what ``pieces()`` returns (until b"") into ``target`` atomically: (size, crc)."""
    _makedirs(target.parent)
    tmp = target.with_name(f"{target.name}.{secrets.token_hex(4)}{PART_SUFFIX}")
    size = crc = 0
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            while piece := pieces():
                view = memoryview(piece)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                size += len(piece)
                crc = google_crc32c.extend(crc, piece)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return size, crc


def _file_crc(path: Path) -> tuple[int, int]:
    size = crc = 0
    with open(path, "rb") as f:
        while piece := f.read(PIECE):
            size += len(piece)
            crc = google_crc32c.extend(crc, piece)
    return size, crc


class LocalStore(ObjectStore):
    def __init__(self, section: str, root: Path):
        self.section = section
        self.root = root
        self.url = str(root)

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def _run(self, key: str, fn: Callable[..., T], *args: object) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        except FileNotFoundError:
            raise ObjectNotFound(f"[{self.section}] {key}: no such object") from None
        except OSError as e:
            raise ObjectStoreError(f"[{self.section}] {key}: {e.strerror or e}") from None

    async def check(self) -> None:
        def probe() -> None:
            _makedirs(self.root)
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise PermissionError(13, "not writable")

        try:
            await asyncio.get_running_loop().run_in_executor(None, probe)
        except OSError as e:
            raise ObjectStoreError(
                f"[{self.section}] {self.root}: {e.strerror or e}", refused=True
            ) from None

    async def put_file(self, key: str, path: Path) -> ObjectInfo:
        target = self.path(key)

        def copy() -> tuple[int, int]:
            with open(path, "rb") as f:
                return _write_from(target, lambda: f.read(PIECE))

        size, crc = await self._run(key, copy)
        return ObjectInfo(key, size, crc, time.time())

    async def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        target = self.path(key)
        pieces = iter([data, b""])
        size, crc = await self._run(key, _write_from, target, lambda: next(pieces))
        return ObjectInfo(key, size, crc, time.time())

    async def stream(self, key: str) -> AsyncIterator[bytes]:  # type: ignore[override]
        path = self.path(key)

        def open_it() -> BinaryIO:
            return open(path, "rb")

        f = await self._run(key, open_it)
        try:
            while piece := await self._run(key, f.read, PIECE):
                yield piece
        finally:
            f.close()

    async def get_file(self, key: str, path: Path) -> ObjectInfo:
        source = self.path(key)

        def copy() -> tuple[int, int]:
            with open(source, "rb") as f:
                return _write_from(path, lambda: f.read(PIECE))

        size, crc = await self._run(key, copy)
        return ObjectInfo(key, size, crc, time.time())

    async def head(self, key: str) -> ObjectInfo | None:
        path = self.path(key)

        def info() -> ObjectInfo:
            st = path.stat()
            size, crc = _file_crc(path)
            return ObjectInfo(key, size, crc, st.st_mtime)

        try:
            return await self._run(key, info)
        except ObjectNotFound:
            return None

    async def list(self, prefix: str) -> list[ObjectInfo]:
        def walk() -> list[ObjectInfo]:
            out: list[ObjectInfo] = []
            if not self.root.is_dir():
                return out
            for dirpath, _dirs, files in os.walk(self.root):
                for name in files:
                    if name.endswith(PART_SUFFIX):
                        continue
                    full = Path(dirpath) / name
                    key = full.relative_to(self.root).as_posix()
                    if key.startswith(prefix):
                        try:
                            st = full.stat()
                        except FileNotFoundError:
                            continue
                        out.append(ObjectInfo(key, st.st_size, None, st.st_mtime))
            return sorted(out, key=lambda o: o.key)

        return await self._run(prefix or "/", walk)

    async def delete(self, key: str) -> None:
        path = self.path(key)

        def remove() -> None:
            try:
                path.unlink()
            except FileNotFoundError:
                return
            _fsync_dir(path.parent)

        await self._run(key, remove)
