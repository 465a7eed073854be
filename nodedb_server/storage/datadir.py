"""One server per data directory: an exclusive lock held for the process's life.

Two servers writing one directory each open their own WAL segments and
checkpoints over the other's, and a write one of them acknowledged can be
gone after a restart. ``<data_dir>/LOCK`` is held with ``flock`` (released
by the kernel when the process dies, even by ``kill -9``, so a stale file
never blocks a start) and holds the owner's pid for the message.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

log = logging.getLogger("nodedb.datadir")

LOCK_NAME = "LOCK"


class DataDirInUse(Exception):
    """Another process holds the data directory's lock."""


def lock_data_dir(data_dir: Path) -> int:
    """Take the lock on ``data_dir`` (which exists); return the descriptor that holds it."""
    path = data_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise DataDirInUse(
            f"data directory {data_dir} is in use by another nodedb-server (pid {holder}); "
            "stop it first, or give this one another server.data_dir"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as e:  # the lock is what matters; the pid is only for the message
        log.warning("could not write the pid into %s: %s", path, e.strerror)
    return fd


def _holder(fd: int) -> str:
    # The holder writes its pid just after taking the lock: give it a moment.
    for _ in range(10):
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if pid:
            return pid
        time.sleep(0.05)
    return "unknown"


def unlock_data_dir(fd: int) -> None:
    os.close(fd)
