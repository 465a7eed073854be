"""CRDT state: one Loro document per (collection, doc id), merged from peers' updates.

The ``loro`` binding raises a bare ``BaseException`` (a Rust panic surfaced
as PanicException) on bytes it cannot decode, not an ``Exception``; every
call into it here catches that and turns it into ``CrdtError``, so garbage
from a client is a clean error and never a dead connection or server.
"""

from __future__ import annotations

import loro


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

    def __len__(self) -> int:
        return len(self.docs)

    def apply(self, doc_id: str, data: bytes) -> None:
        """Merge an update; importing what the document already has changes nothing."""
        doc = self.docs.get(doc_id)
        if doc is None:
            doc = self.docs[doc_id] = loro.LoroDoc()
        try:
            doc.import_(data)
        except BaseException as e:  # noqa: BLE001 - see the module docstring
            if isinstance(e, KeyboardInterrupt | SystemExit):
                raise
            raise CrdtError("not a Loro update or snapshot") from None

    def snapshot(self, doc_id: str) -> bytes | None:
        doc = self.docs.get(doc_id)
        if doc is None:
            return None
        return bytes(doc.export(loro.ExportMode.Snapshot()))

    def items(self) -> list[tuple[str, bytes]]:
        return [
            (doc_id, bytes(d.export(loro.ExportMode.Snapshot()))) for doc_id, d in self.docs.items()
        ]
