"""Quarantine: damaged files are moved aside, never deleted, each with a note of why.

A store sets a damaged file (a WAL segment) or directory (a checkpoint) aside
in its own ``quarantine/`` directory first, with a plain rename, since that
happens during recovery where nothing may wait for the network:

    quarantine/<ms>/<name>        the file or directory exactly as it was found
    quarantine/<ms>/<name>.json   {tenant, file, reason, at, server_version}

``<ms>`` is the unix time in milliseconds it was set aside. The store's
uploader (storage/uploads.py) then moves each entry to quarantine storage
under ``<store>/quarantine/<ms>/<name>`` and ``<name>.json`` beside it: copied,
verified, then deleted here. ``_system.quarantine`` lists both kinds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from nodedb_server import SERVER_VERSION

NOTE_SUFFIX = ".json"


@dataclass(frozen=True)
class Entry:
    name: str  # the file's (or directory's) own name
    path: Path  # where it is now, in the local quarantine directory
    reason: str
    at_ms: int

    @property
    def stamp(self) -> str:
        return self.path.parent.name


def note(owner: str, name: str, reason: str, at_ms: int) -> bytes:
    """The JSON reason note kept beside a quarantined file."""
    at = dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC).isoformat()
    body = {
        "tenant": owner,
        "file": name,
        "reason": reason,
        "at": at,
        "server_version": SERVER_VERSION,
    }
    return json.dumps(body, indent=1).encode() + b"\n"


def move_aside(path: Path, quarantine: Path, reason: str, owner: str, name: str = "") -> Path:
    """Move ``path`` into ``quarantine`` (as ``name``, by default its own) and record
    ``reason`` beside it; ``owner`` is the tenant (or "system") it belonged to."""
    at_ms = int(time.time() * 1000)
    stamp = quarantine / str(at_ms)
    while (stamp / (name or path.name)).exists():  # two in one millisecond
        at_ms += 1
        stamp = quarantine / str(at_ms)
    stamp.mkdir(parents=True, exist_ok=True)
    target = stamp / (name or path.name)
    os.replace(path, target)
    # The note is for the operator; losing it in a crash loses only the explanation.
    with contextlib.suppress(OSError):
        note_path = target.with_name(target.name + NOTE_SUFFIX)
        note_path.write_bytes(note(owner, target.name, reason.replace("\n", " "), at_ms))
    return target


def read_note(data: bytes) -> str:
    try:
        reason = json.loads(data).get("reason")
    except (ValueError, AttributeError):
        return "not recorded"
    return reason if isinstance(reason, str) else "not recorded"


def entries(quarantine: Path) -> list[Entry]:
    """What the local ``quarantine`` directory holds, oldest first."""
    if not quarantine.is_dir():
        return []
    out = []
    for stamp in sorted(quarantine.iterdir()):
        if not (stamp.is_dir() and stamp.name.isdigit()):
            continue
        try:
            paths = sorted(stamp.iterdir())
        except FileNotFoundError:  # moved to quarantine storage meanwhile
            continue
        for path in paths:
            if path.name.endswith(NOTE_SUFFIX):
                continue
            try:
                reason = read_note(path.with_name(path.name + NOTE_SUFFIX).read_bytes())
            except OSError:
                reason = "not recorded"
            out.append(Entry(path.name, path, reason, int(stamp.name)))
    return out
