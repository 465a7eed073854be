"""Engines: in-memory state of one collection plus ``apply`` of committed operations.

Engines know nothing of the wire, SQL or files; the tenant feeds them the
operations of committed WAL records, live or during replay, in LSN order.
"""

from typing import Literal

# The engine of a collection, as the catalog stores it (CollectionMeta.engine).
EngineKind = Literal["document", "kv", "timeseries"]
