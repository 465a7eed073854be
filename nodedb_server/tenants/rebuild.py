"""``nodedb-server --recover-from-storage``: a lost data directory rebuilt from storage.

With the same configuration and master key, an empty (or missing) data
directory is filled from snapshot storage and the WAL archive, one store at a
time: first the system catalog (``system/KEY``, its newest snapshot, its
archived WAL after it), which names every tenant and holds their keys; then
each tenant the same way. The normal start that follows recovers every store
from what was fetched, so every write up to the end of the archive is back.

Each archived segment is checked against its note (LSNs, size, every
record's CRC32C) as it arrives; the AEAD tags are checked by that recovery.
Archived segments after a gap in the archive cannot be replayed and are named
in the log. A data directory holding anything but ``master.key`` is refused:
this never writes over data.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nodedb_server.config import STORAGE_SECTIONS, Config
from nodedb_server.errors import ConfigError
from nodedb_server.objectstore.base import ObjectStore, ObjectStoreError
from nodedb_server.storage.fsio import FileIO
from nodedb_server.storage.records import CorruptRecord
from nodedb_server.storage.recovery import Store, WalSettings
from nodedb_server.storage.uploads import (
    Storage,
    archive_key,
    archived_segments,
    contiguous,
    open_storage,
    snapshot_prefix,
)
from nodedb_server.storage.wal import record_times, segment_name
from nodedb_server.tenants import keys
from nodedb_server.tenants.manager import KEY_FILE_MAGIC, SYSTEM_ID, SystemState

log = logging.getLogger("nodedb.rebuild")


class RebuildRefused(Exception):
    """The data directory cannot be rebuilt; the message says why."""


def _check_target(cfg: Config) -> None:
    data = cfg.data_dir
    if data.exists():
        extra = sorted(p.name for p in data.iterdir() if p.name != keys.MASTER_KEY_NAME)
        if extra:
            raise RebuildRefused(
                f"--recover-from-storage needs an empty data directory; {data} holds "
                f"{', '.join(extra[:5])}: move it away first (nothing was changed)"
            )
    if not cfg["encryption.master_key_file"] and not (data / keys.MASTER_KEY_NAME).exists():
        raise RebuildRefused(
            "--recover-from-storage needs the master key the data was written with: set "
            f"encryption.master_key_file, or put it at {data / keys.MASTER_KEY_NAME}"
        )
    for section in ("snapshot_storage", "wal_archive"):
        if cfg[f"{section}.endpoint"]:
            continue
        root = Path(cfg[f"{section}.path"] or data / STORAGE_SECTIONS[section]).resolve()
        if root == data or data in root.parents:
            raise RebuildRefused(
                f"[{section}] is inside the data directory ({root}), which is gone; point "
                f"{section}.path (or an S3 endpoint) at where the copies are"
            )


async def recover_from_storage(cfg: Config) -> None:
    """Fill the empty data directory from storage (see the module docstring)."""
    _check_target(cfg)
    if not cfg["wal_archive.enabled"]:
        log.warning(
            "[wal_archive] is not enabled: rebuilding from snapshots alone, so only what "
            "the newest snapshot of each store holds comes back"
        )
    data = cfg.data_dir
    fs = FileIO()
    fs.makedirs(data)
    master, _ = keys.load_master_key(cfg["encryption.master_key_file"], data)
    try:
        storage = await open_storage(cfg)
    except ConfigError as e:
        raise RebuildRefused(str(e)) from None
    try:
        system_key = await _fetch_system_key(storage.snapshots, data, master)
        settings = WalSettings(
            cfg["wal.segment_bytes"],
            cfg["wal.fsync"],
            cfg["wal.batch_ms"],
            cfg["events.max_retained_bytes"],
        )
        await _fetch_store(storage, "system", data / "system")
        system = SystemState()
        store = Store(
            "system catalog",
            data / "system",
            SYSTEM_ID,
            AESGCM(system_key),
            fs,
            settings,
            system,
            owner="system",
        )
        await store.recover()
        for name, t in sorted(system.tenants.items(), key=lambda kv: kv[1]["id"]):
            log.info("rebuilding tenant %s (id %d)", name, t["id"])
            await _fetch_store(storage, f"tenants/{t['id']}", data / "tenants" / str(t["id"]))
    except ObjectStoreError as e:
        raise RebuildRefused(f"storage failed during the rebuild: {e}") from None
    finally:
        await storage.close()
    log.info("data directory %s rebuilt from storage; starting normally", data)


async def _fetch_system_key(store: ObjectStore, data: Path, master: bytes) -> bytes:
    path = data / "system" / "KEY"
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = await store.get_bytes("system/KEY")
    if len(blob) != 73 or blob[:5] != KEY_FILE_MAGIC + b"\x01":
        raise RebuildRefused(f"system/KEY in {store.url} is damaged")
    try:
        key = keys.unwrap(master, blob[13:])
    except keys.KeyUnwrapError:
        raise RebuildRefused(
            f"system/KEY in {store.url} was wrapped by master key id {blob[5:13].hex()}, "
            f"not by the configured one (id {keys.key_id(master)})"
        ) from None
    FileIO().write_file_atomic(path, blob)
    return key


async def _fetch_store(storage: Storage, rel: str, root: Path) -> None:
    """The newest snapshot of store ``rel`` and the archived WAL after it, into ``root``."""
    loop = asyncio.get_running_loop()
    snaps = storage.snapshots
    lsns = sorted(
        {
            int(o.key.split("/")[-2])
            for o in await snaps.list(f"{rel}/checkpoints/")
            if o.key.endswith("/MANIFEST") and o.key.split("/")[-2].isdigit()
        }
    )
    base = lsns[-1] if lsns else 0
    if base:
        prefix = snapshot_prefix(rel, base)
        tmp = root / "checkpoints" / f"{base:020d}.tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        for o in await snaps.list(prefix):
            await snaps.get_file(o.key, tmp / o.key.removeprefix(prefix))
        await loop.run_in_executor(None, os.rename, tmp, root / "checkpoints" / f"{base:020d}")
    fetched = 0
    last = base
    archive = storage.archive
    if archive is not None:
        segments = await archived_segments(archive, rel)
        run = contiguous(segments, base)
        wal = root / "wal"
        wal.mkdir(parents=True, exist_ok=True)
        for a in run:
            path = wal / segment_name(a.first_lsn)
            await archive.get_file(archive_key(rel, a.first_lsn), path)
            try:
                got = await loop.run_in_executor(None, record_times, path)
            except CorruptRecord as e:
                await loop.run_in_executor(None, shutil.rmtree, root, True)
                raise RebuildRefused(f"archived {rel}/wal/{path.name} is damaged: {e}") from None
            if got[:2] != (a.first_lsn, a.last_lsn):
                raise RebuildRefused(f"archived {rel}/wal/{path.name} does not match its note")
            fetched += 1
            last = a.last_lsn
        beyond = [s for s in segments if s.first_lsn > last + 1]
        if beyond:
            log.error(
                "%s: the archive has a gap after LSN %d; %d later segment(s) (from %s) "
                "cannot be replayed and are left in the archive",
                rel,
                last,
                len(beyond),
                segment_name(beyond[0].first_lsn),
            )
    log.info(
        "%s: snapshot at LSN %d, %d archived WAL segment(s), up to LSN %d",
        rel,
        base,
        fetched,
        last,
    )
