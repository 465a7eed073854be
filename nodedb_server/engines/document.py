"""The schemaless document engine: rows keyed by ``id``, any fields."""

from __future__ import annotations

from nodedb_server.engines.base import RowCollection


class DocumentCollection(RowCollection):
    engine = "document"
    key_field = "id"
