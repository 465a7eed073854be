"""The store each object-storage section of the configuration names.

No endpoint: a ``LocalStore`` at the section's ``path``, or by default
``<data_dir>/<name>`` (``snapshots``, ``quarantine``, ``wal_archive``). The
section's ``prefix`` is a directory inside it, as it is a key prefix on S3.
"""

from __future__ import annotations

from pathlib import Path

from nodedb_server.config import STORAGE_SECTIONS, Config
from nodedb_server.objectstore.base import ObjectStore
from nodedb_server.objectstore.local import LocalStore


def open_store(cfg: Config, section: str) -> ObjectStore:
    """The store of ``section`` (not yet checked: call ``check()`` at start-up)."""
    if cfg[f"{section}.endpoint"]:
        from nodedb_server.objectstore.s3 import S3Store

        return S3Store.from_config(cfg, section)
    root = Path(cfg[f"{section}.path"] or cfg.data_dir / STORAGE_SECTIONS[section])
    prefix = cfg[f"{section}.prefix"]
    return LocalStore(section, root / prefix if prefix else root)
