"""Reading a backup back: DRY RUN verifies and counts everything without changing a byte.

(Restoring into a live tenant, all-or-nothing through a staging area, builds
on ``read_backup`` below.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

import msgpack
import pyarrow as pa
import pyarrow.parquet as pq

from nodedb_server.backup.envelope import EnvelopeError, EnvelopeReader, Header
from nodedb_server.backup.writer import COUNT_NAMES, Summary
from nodedb_server.engines.vector import as_vector
from nodedb_server.storage import codec
from nodedb_server.tenants import keys

# A single item (a row, an edge, a Parquet piece) is at most this big.
MAX_ITEM_BYTES = 256 << 20


def unwrapper(master: bytes, master_key_id: str):  # type: ignore[no-untyped-def]
    """The tenant key of a backup, if this server holds the master key it was wrapped with."""

    def unwrap(header: Header) -> bytes:
        if header.master_key_id != master_key_id:
            raise EnvelopeError(
                f"this backup needs master key id {header.master_key_id}; "
                f"this server's master key id is {master_key_id}"
            )
        try:
            return keys.unwrap(master, header.wrapped_key)
        except keys.KeyUnwrapError:
            raise EnvelopeError(
                "the backup's tenant key does not open under this server's master key"
            ) from None

    return unwrap


def _items(chunks: Iterator[bytes]) -> Iterator[Any]:
    unpacker = msgpack.Unpacker(
        ext_hook=codec._ext_hook, raw=False, strict_map_key=False, max_buffer_size=MAX_ITEM_BYTES
    )
    fed = 0
    for chunk in chunks:
        unpacker.feed(chunk)
        fed += len(chunk)
        try:
            yield from unpacker
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
            raise EnvelopeError(f"a backup section does not decode: {type(e).__name__}") from None
    if unpacker.tell() != fed:
        raise EnvelopeError("a backup section ends inside an item")


def read_backup(source: BinaryIO, master: bytes, master_key_id: str) -> Iterator[tuple[str, Any]]:
    """Decode a whole backup: yields ("header", Header), ("catalog", dict),
    ("tombstones", dict), then ("part", name) followed by ("item", item) for each item."""
    reader = EnvelopeReader(source, unwrapper(master, master_key_id))
    yield "header", reader.header
    for number, section in enumerate(reader.sections()):
        items = _items(section)
        if number == 0:
            catalog = _one(items, "catalog")
            yield "catalog", catalog
        elif number == 1:
            yield "tombstones", _one(items, "tombstone")
        else:
            first = next(items, None)
            if not isinstance(first, dict) or not isinstance(first.get("part"), str):
                raise EnvelopeError(f"section {number} does not start with its part name")
            yield "part", first["part"]
            for item in items:
                yield "item", item
    yield "end", reader.plain_bytes


def _one(items: Iterator[Any], what: str) -> Any:
    value = next(items, None)
    if not isinstance(value, dict) or next(items, None) is not None:
        raise EnvelopeError(f"the {what} section is damaged")
    return value


def dry_run(
    source: BinaryIO, master: bytes, master_key_id: str, expected_tenant: str | None, rename: bool
) -> Summary:
    """Verify every CRC and tag, decode every section, and count what a restore would bring."""
    counts = dict.fromkeys(COUNT_NAMES, 0)
    header: Header | None = None
    kinds: dict[str, str] = {}
    vector_fields: dict[str, list[tuple[str, int]]] = {}
    part = ""
    for kind, value in read_backup(source, master, master_key_id):
        if kind == "header":
            header = value
            if expected_tenant is not None and value.tenant != expected_tenant and not rename:
                raise EnvelopeError(
                    f"this is a backup of tenant {value.tenant!r}, not "
                    f"{expected_tenant!r}; add WITH (rename) to restore it as "
                    f"{expected_tenant!r}"
                )
        elif kind == "catalog":
            meta = value.get("meta", {})
            ids = {}
            for entry in meta.get("collections", []):
                kinds[f"c{entry['meta']['id']}"] = entry["meta"]["engine"]
                ids[entry["meta"]["name"]] = f"c{entry['meta']['id']}"
            counts["indexes"] = len(meta.get("indexes", []))
            for index in meta.get("indexes", []):
                if index.get("kind") == "vector" and index.get("field"):
                    vector_fields.setdefault(ids.get(index["collection"], ""), []).append(
                        (index["field"], index["dim"])
                    )
        elif kind == "part":
            part = value
        elif kind == "item":
            _count(counts, kinds, vector_fields, part, value)
        elif kind == "end":
            size = source.tell()
    assert header is not None
    return Summary(header.tenant, header.watermark_lsn, size, counts)


def _count(
    counts: dict[str, int],
    kinds: dict[str, str],
    vector_fields: dict[str, list[tuple[str, int]]],
    part: str,
    item: Any,
) -> None:
    base, _, suffix = part.partition(".")
    kind = kinds.get(base)
    if kind is None:
        raise EnvelopeError(f"section for {part} names no collection in the catalog")
    if suffix in ("edges", "crdt"):
        counts[suffix] += 1
    elif kind == "timeseries":
        try:
            counts["timeseries"] += pq.read_metadata(pa.BufferReader(item[1])).num_rows
        except (pa.ArrowInvalid, IndexError, TypeError):
            raise EnvelopeError(f"a timeseries partition of {part} does not decode") from None
    else:
        counts["kv" if kind == "kv" else "documents"] += 1
        row = item[1] if isinstance(item, list) and len(item) > 1 else None
        for field, dim in vector_fields.get(base, []):
            vec = as_vector(row.get(field)) if isinstance(row, dict) else None
            counts["vectors"] += vec is not None and len(vec) == dim
