"""Physical ceilings on this machine, measured in the same run as the workloads (BENCH.md)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import google_crc32c
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def fsyncs_per_second(directory: Path, seconds: float = 2.0) -> float:
    """Small appends each followed by fsync, as a commit does."""
    fd, name = tempfile.mkstemp(dir=directory)
    try:
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            os.write(fd, b"x" * 128)
            os.fsync(fd)
            n += 1
        return n / (time.perf_counter() - start)
    finally:
        os.close(fd)
        os.unlink(name)


def sequential_write_mb_s(directory: Path, total_mb: int = 256) -> float:
    """1 MiB writes, fsync at the end: what a large backup or checkpoint can reach."""
    block = os.urandom(1 << 20)
    fd, name = tempfile.mkstemp(dir=directory)
    try:
        start = time.perf_counter()
        for _ in range(total_mb):
            os.write(fd, block)
        os.fsync(fd)
        return total_mb / (time.perf_counter() - start)
    finally:
        os.close(fd)
        os.unlink(name)


def aes_gcm_mb_s(total_mb: int = 256) -> float:
    aead = AESGCM(os.urandom(32))
    block = os.urandom(1 << 20)
    nonce = os.urandom(12)
    start = time.perf_counter()
    for _ in range(total_mb):
        aead.encrypt(nonce, block, None)
    return total_mb / (time.perf_counter() - start)


def crc32c_mb_s(total_mb: int = 512) -> float:
    block = os.urandom(1 << 20)
    start = time.perf_counter()
    crc = 0
    for _ in range(total_mb):
        crc = google_crc32c.extend(crc, block)
    return total_mb / (time.perf_counter() - start)
