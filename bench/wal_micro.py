"""WAL replay in-process, without a server: the two halves of W7's restart.

    python -m bench.wal_micro [--records N] [--frame B ...]

- scan: us a record for ``storage.wal.scan`` over one segment of W7-like single-row
  commits (a three-field document each), sealed in frames of B records (what a
  group-commit batch of B writes) and, for comparison, one record a header (the
  version 2 layout, still read).
- apply: us a record for ``TenantState.replay`` of the same records into an empty
  tenant, the way recovery hands them over (4,096 at a time).

The garbage collector is off, as it is during a replay (storage/gcpause.py). Each
figure is the best of three.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nodedb_server.storage import codec, wal
from nodedb_server.storage.records import (
    Record,
    RecordKind,
    SegmentHeader,
    seal_frame,
    seal_record,
)
from nodedb_server.tenants.catalog import TenantState

EPOCH, TENANT = 7, 1


def records(n: int) -> list[Record]:
    """A CREATE COLLECTION, then ``n`` single-row inserts into it."""
    out = [
        Record(
            1,
            RecordKind.CATALOG,
            1,
            codec.pack(["create_collection", {"name": "w7", "engine": "document"}]),
        )
    ]
    for i in range(2, n + 2):
        row = {"id": f"k{i}", "name": f"name-{i}", "age": i}
        out.append(Record(i, RecordKind.DATA, i, codec.pack([[1, "w7", f"k{i}", row, None]])))
    return out


def segment(recs: list[Record], frame: int, aead: AESGCM) -> bytes:
    parts = [SegmentHeader(TENANT, EPOCH, recs[0].lsn).encode()]
    for i in range(0, len(recs), frame):
        group = recs[i : i + frame]
        if frame == 1:
            parts.append(seal_record(aead, EPOCH, TENANT, group[0]))
        else:
            parts.append(seal_frame(aead, EPOCH, TENANT, group))
    return b"".join(parts)


def best_of_three(fn: Callable[[], object], n: int) -> float:
    """us a record, the best of three runs of ``fn``."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--frame", type=int, nargs="*", default=[1, 8, 16])
    args = ap.parse_args()
    n = args.records
    aead = AESGCM(os.urandom(32))
    recs = records(n)
    gc.disable()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for frame in args.frame:
            path = root / wal.segment_name(1)
            path.write_bytes(segment(recs, frame, aead))
            us = best_of_three(lambda: wal.scan(root, aead, TENANT), n)
            layout = "one record a header" if frame == 1 else f"frames of {frame}"
            print(f"scan, {layout}: {us:.2f} us a record")

    def apply() -> None:
        state = TenantState()
        for i in range(0, len(recs), 4096):
            state.replay(recs[i : i + 4096])

    print(f"apply (TenantState.replay): {best_of_three(apply, n):.2f} us a record")


if __name__ == "__main__":
    main()
