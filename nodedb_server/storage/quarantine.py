"""Quarantine: damaged files are moved aside, never deleted, each with a note of why.

In a store's ``quarantine/`` directory, ``<ms>-<name>`` is the file (a WAL
segment) or directory (a checkpoint) as it was found, moved there at unix
time ``<ms>`` milliseconds, and ``<ms>-<name>.reason`` holds one line of text
saying what was wrong with it. ``_system.quarantine`` lists them; an operator
may inspect and delete them.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

REASON_SUFFIX = ".reason"


@dataclass(frozen=True)
class Entry:
    name: str
    path: Path
    reason: str
    at_ms: int


def move_aside(path: Path, quarantine: Path, reason: str, label: str = "") -> Path:
    """Move ``path`` into ``quarantine`` and record ``reason`` beside it."""
    quarantine.mkdir(parents=True, exist_ok=True)
    target = quarantine / f"{int(time.time() * 1000)}-{label}{path.name}"
    os.replace(path, target)
    # The note is for the operator; losing it in a crash loses only the explanation.
    with contextlib.suppress(OSError):
        target.with_name(target.name + REASON_SUFFIX).write_text(reason.replace("\n", " ") + "\n")
    return target


def entries(quarantine: Path) -> list[Entry]:
    """What ``quarantine`` holds, oldest first."""
    if not quarantine.is_dir():
        return []
    out = []
    for path in sorted(quarantine.iterdir()):
        if path.name.endswith(REASON_SUFFIX):
            continue
        stamp, _, _ = path.name.partition("-")
        note = path.with_name(path.name + REASON_SUFFIX)
        try:
            reason = note.read_text(errors="replace").strip()
        except OSError:
            reason = "not recorded"
        out.append(Entry(path.name, path, reason, int(stamp) if stamp.isdigit() else 0))
    return out
