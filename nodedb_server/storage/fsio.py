"""The file layer under the WAL and checkpoints.

Every write, fsync, rename and directory sync that durability depends on
goes through one ``FileIO`` object, so tests can substitute a subclass that
fails an fsync or reports a full disk at a chosen moment. ``kill -9`` alone
cannot show a missing fsync (the page cache survives it); this layer can.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


def disk_full(e: OSError) -> bool:
    return e.errno in (errno.ENOSPC, errno.EDQUOT)


class FileIO:
    """Plain POSIX file operations. Methods run on worker threads, never the event loop."""

    def open_new(self, path: Path) -> int:
        """Create a file that must not exist yet; return its descriptor."""
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)

    def write(self, fd: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def close(self, fd: int) -> None:
        os.close(fd)

    def truncate(self, path: Path, length: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, length)
            self.fsync(fd)
        finally:
            os.close(fd)

    def fsync_dir(self, path: Path) -> None:
        """Make a create, rename or unlink in ``path`` durable."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self.fsync(fd)
        finally:
            os.close(fd)

    def write_file_atomic(self, path: Path, data: bytes) -> None:
        """Temporary name, write, fsync, rename, fsync of the directory."""
        tmp = path.with_name(path.name + ".tmp")
        if tmp.exists():
            tmp.unlink()
        fd = self.open_new(tmp)
        try:
            self.write(fd, data)
            self.fsync(fd)
        finally:
            self.close(fd)
        os.replace(tmp, path)
        self.fsync_dir(path.parent)

    def makedirs(self, path: Path) -> None:
        """Create ``path`` and its missing parents, syncing each parent that changed."""
        missing = []
        p = path
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            os.mkdir(d, 0o700)
            self.fsync_dir(d.parent)
