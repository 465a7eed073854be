"""CRDT state: one Loro document per (collection, doc id), merged from peers' updates.

The ``loro`` binding raises a bare ``BaseException`` (a Rust panic surfaced
as PanicException) on bytes it cannot decode, not an ``Exception``; every
call into it here catches that and turns it into ``CrdtError``, so garbage
from a client is a clean error and never a dead connection or server.
"""

from __future__ import annotations

from typing import Any

import loro

from nodedb_server.storage.snapshot import ABSENT, SnapshotItems, Views


class CrdtError(Exception):
    """Bytes that are not a Loro update or snapshot."""


def check_update(data: bytes) -> None:
    """Raise CrdtError unless ``data`` decodes as a Loro update or snapshot."""
    try:
        loro.LoroDoc().import_(data)
    except BaseException as e:  # noqa: BLE001 - loro panics are BaseException
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        raise CrdtError("not a Loro update or snapshot") from None


class CrdtStore:
    def __init__(self) -> None:
        self.docs: dict[str, loro.LoroDoc] = {}
        self.views = Views()  # open snapshots (storage/snapshot.py)

    def __len__(self) -> int:
        return len(self.docs)

    def apply(self, doc_id: str, data: bytes) -> None:
        """Merge an update; importing what the document already has changes nothing."""
        if self.views.open:
            self.views.before_change(doc_id, lambda: self._export(doc_id))
        doc = self.docs.get(doc_id)
        if doc is None:
            doc = self.docs[doc_id] = loro.LoroDoc()
        _import(doc, data)

    def merged(self, doc_id: str, updates: list[bytes]) -> bytes:
        """A snapshot of the document with ``updates`` merged too (what a transaction
        that applied them sees); the stored document is left as it is."""
        doc = loro.LoroDoc()
        base = self.snapshot(doc_id)
        for data in [base, *updates] if base is not None else updates:
            _import(doc, data)
        return bytes(doc.export(loro.ExportMode.Snapshot()))

    def snapshot(self, doc_id: str) -> bytes | None:
        doc = self.docs.get(doc_id)
        if doc is None:
            return None
        return bytes(doc.export(loro.ExportMode.Snapshot()))

    def _export(self, doc_id: str) -> Any:
        doc = self.docs.get(doc_id)
        return ABSENT if doc is None else bytes(doc.export(loro.ExportMode.Snapshot()))

    def snapshot_items(self) -> SnapshotItems:
        """[doc id, Loro snapshot] items as of now; opened on the event loop, read (and
        exported) on a worker thread. A document is exported on the loop only when it
        changes while the view is open (its pre-image)."""
        view = self.views.new(list(self.docs))
        return SnapshotItems(view, view.read(self._export))


def _import(doc: loro.LoroDoc, data: bytes) -> None:
    try:
        doc.import_(data)
    except BaseException as e:  # noqa: BLE001 - see the module docstring
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        raise CrdtError("not a Loro update or snapshot") from None
