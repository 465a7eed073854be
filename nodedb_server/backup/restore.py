"""Reading a backup back: DRY RUN verifies and counts; RESTORE rebuilds the tenant.

A restore is all-or-nothing. The backup is decoded into a new tenant
directory (a fresh tenant id) holding one checkpoint, written and fsynced
beside the live tenant, which keeps serving reads meanwhile. Only then does
one system-catalog record point the tenant's name at the new directory: that
record is the commit. A crash before it leaves an orphan directory that the
next boot deletes (the old tenant is untouched); a crash after it boots the
restored tenant, and the old directory is the orphan. Any damage found while
decoding aborts before the commit, so nothing changes.

The restored checkpoint's LSN is above both the backup's watermark and the
tenant's last LSN, so LSNs keep increasing for the Event Plane and later
backups. Collections in the backup's tombstone set are never restored; nor
are collections the live tenant purged after the backup's watermark, unless
WITH (resurrect).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgpack
import pyarrow as pa
import pyarrow.parquet as pq
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nodedb_server.backup.envelope import EnvelopeError, EnvelopeReader, Header
from nodedb_server.backup.writer import COUNT_NAMES, Summary
from nodedb_server.engines.vector import as_vector
from nodedb_server.errors import InsufficientPrivilege
from nodedb_server.storage import checkpoint as ckpt
from nodedb_server.storage import codec
from nodedb_server.storage.fsio import FileIO
from nodedb_server.tenants import keys
from nodedb_server.tenants.catalog import clamp_events

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


def _batches(chunks: Iterator[bytes], visit: Callable[[Any], None]) -> Iterator[tuple[bytes, int]]:
    """A section's items a chunk's worth at a time, as (the exact bytes that encode
    them, how many); ``visit`` sees each item as it is decoded. Items straddle chunks;
    a restore writes these bytes to its checkpoint as they are instead of encoding the
    items again. The section's first item comes alone (a part's name, before its rows).
    Items are not kept: holding them would make the cyclic collector walk them."""
    unpacker = msgpack.Unpacker(
        ext_hook=codec._ext_hook, raw=False, strict_map_key=False, max_buffer_size=MAX_ITEM_BYTES
    )
    pending = bytearray()  # bytes fed and not yet handed out
    done = 0  # the stream offset where ``pending`` starts
    first = True
    for chunk in chunks:
        unpacker.feed(chunk)
        pending += chunk
        n, end = 0, done
        try:
            # tell() after each whole item: once part of the next item has been read,
            # tell() counts those bytes too.
            for item in unpacker:
                visit(item)
                n += 1
                end = unpacker.tell()
                if first:
                    first = False
                    yield bytes(pending[: end - done]), 1
                    del pending[: end - done]
                    done, n = end, 0
        except EnvelopeError:
            raise
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
            raise EnvelopeError(f"a backup section does not decode: {type(e).__name__}") from None
        if n:
            yield bytes(pending[: end - done]), n
            del pending[: end - done]
            done = end
    if pending:
        raise EnvelopeError("a backup section ends inside an item")


def open_backup(
    source: BinaryIO,
    master: bytes,
    master_key_id: str,
    target: str | None,
    rename: bool,
    may_read: Callable[[str], bool],
) -> EnvelopeReader:
    """Read a backup's header and check it can be restored here as ``target``: the user
    ``may_read`` backups of the tenant it names (else 42501, before anything is
    decrypted), this server holds its master key, and it is a backup of that tenant (or
    ``rename``). A restore does this before it takes the tenant away from its sessions."""
    unwrap = unwrapper(master, master_key_id)

    def checked(header: Header) -> bytes:
        if not may_read(header.tenant):
            raise InsufficientPrivilege(
                "permission denied to read this backup: it is not a backup of a tenant "
                "this user holds GRANT BACKUP on"
            )
        return unwrap(header)

    reader = EnvelopeReader(source, checked)
    tenant = reader.header.tenant
    if target is not None and tenant != target and not rename:
        raise EnvelopeError(
            f"this is a backup of tenant {tenant!r}, not {target!r}; "
            f"add WITH (rename) to restore it as {target!r}"
        )
    return reader


def read_backup(
    reader: EnvelopeReader, visit: Callable[[str, Any], None]
) -> Iterator[tuple[str, Any]]:
    """Decode a whole backup: yields ("header", Header), ("catalog", dict),
    ("tombstones", dict), then ("part", name) followed by ("batch", (encoded bytes,
    how many)) for each piece of that part; ``visit(part, item)`` sees every item of
    every part as it is decoded."""
    yield "header", reader.header
    for number, section in enumerate(reader.sections()):
        if number < 2:
            what = "catalog" if number == 0 else "tombstones"
            got: list[Any] = []
            for _ in _batches(section, got.append):
                pass
            if len(got) != 1 or not isinstance(got[0], dict):
                raise EnvelopeError(f"the {what} section is damaged")
            yield what, got[0]
            continue
        part: str | None = None

        def on_item(item: Any, number: int = number) -> None:
            nonlocal part
            if part is not None:
                visit(part, item)
            elif isinstance(item, dict) and isinstance(item.get("part"), str):
                part = item["part"]
            else:
                raise EnvelopeError(f"section {number} does not start with its part name")

        batches = _batches(section, on_item)
        next(batches, None)
        if part is None:
            raise EnvelopeError(f"section {number} does not start with its part name")
        yield "part", part
        for batch in batches:
            yield "batch", batch
    yield "end", reader.plain_bytes


def dry_run(
    source: BinaryIO,
    master: bytes,
    master_key_id: str,
    expected_tenant: str | None,
    rename: bool,
    may_read: Callable[[str], bool],
) -> Summary:
    """Verify every CRC and tag, decode every section, and count what a restore would bring."""
    reader = open_backup(source, master, master_key_id, expected_tenant, rename, may_read)
    return verify_backup(reader, source)


def verify_backup(reader: EnvelopeReader, source: BinaryIO) -> Summary:
    """``dry_run`` of a backup whose header ``open_backup`` has read and checked."""
    counts = dict.fromkeys(COUNT_NAMES, 0)
    header: Header | None = None
    kinds: dict[str, str] = {}
    vector_fields: dict[str, list[tuple[str, int]]] = {}

    def count(part: str, item: Any) -> None:
        count_item(counts, kinds, vector_fields, part, item)

    for kind, value in read_backup(reader, count):
        if kind == "header":
            header = value
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
        elif kind == "end":
            size = source.tell()
    assert header is not None
    return Summary(header.tenant, header.watermark_lsn, size, counts)


def count_item(
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


@dataclass
class Staged:
    """A restore decoded into its new directory, ready to be committed."""

    summary: Summary
    tenant_key: bytes
    tenant_id: int
    catalog: dict[str, Any]
    skipped: list[str]
    lsn: int  # of the staged checkpoint


def stage_restore(
    reader: EnvelopeReader,
    source: BinaryIO,
    master: bytes,
    target: str,
    new_id: int,
    root: Path,
    base_lsn: int,
    live_tombstones: dict[str, int],
    resurrect: bool,
    fs: FileIO,
) -> Staged:
    """Decode a backup, opened and checked by ``open_backup``, into ``root`` (the new
    tenant directory) as one checkpoint. Runs on a worker thread; raises EnvelopeError
    (and leaves ``root`` to be removed) on any damage."""

    def count(part: str, item: Any) -> None:  # called once the catalog below is read
        if part.partition(".")[0] in kept_ids:
            count_item(counts, kinds, vector_fields, part, item)

    stream = read_backup(reader, count)
    kind, header = next(stream)
    assert kind == "header"
    kind, catalog = next(stream)
    kind2, tombstones = next(stream)
    if kind != "catalog" or kind2 != "tombstones":
        raise EnvelopeError("the backup does not start with its catalog and tombstones")
    tenant_key = keys.unwrap(master, header.wrapped_key)
    meta = catalog.get("meta", {})
    dead = set(tombstones)
    if not resurrect:
        dead |= {name for name, lsn in live_tombstones.items() if lsn > header.watermark_lsn}
    keep = [c for c in meta.get("collections", []) if c["meta"]["name"] not in dead]
    skipped = sorted(
        {c["meta"]["name"] for c in meta.get("collections", [])} - {c["meta"]["name"] for c in keep}
    )
    kept_ids = {f"c{c['meta']['id']}" for c in keep}
    kept_names = {c["meta"]["name"] for c in keep}
    meta = {
        **meta,
        "collections": keep,
        "indexes": [i for i in meta.get("indexes", []) if i["collection"] in kept_names],
        "tombstones": {**live_tombstones, **tombstones},
    }
    lsn = max(base_lsn, header.watermark_lsn) + 1
    meta["last_lsn"] = lsn
    clamp_events(meta, lsn)
    counts = dict.fromkeys(COUNT_NAMES, 0)
    kinds = {f"c{c['meta']['id']}": c["meta"]["engine"] for c in keep}
    ids = {c["meta"]["name"]: f"c{c['meta']['id']}" for c in keep}
    vector_fields: dict[str, list[tuple[str, int]]] = {}
    for index in meta["indexes"]:
        if index.get("kind") == "vector" and index.get("field"):
            vector_fields.setdefault(ids[index["collection"]], []).append(
                (index["field"], index["dim"])
            )
    fs.makedirs(root / "wal")
    parts = _parts(stream, kept_ids)
    ckpt.write_checkpoint(fs, root / "checkpoints", AESGCM(tenant_key), new_id, lsn, meta, parts)
    counts["indexes"] = len(meta["indexes"])
    summary = Summary(target, header.watermark_lsn, source.tell(), counts)
    return Staged(summary, tenant_key, new_id, catalog, skipped, lsn)


def _parts(stream: Iterator[tuple[str, Any]], keep: set[str]) -> Iterator[tuple[str, codec.Packed]]:
    """The backup's parts one by one, each as its items' encoded bytes (each item was
    decoded and counted on the way); parts of collections not in ``keep`` are read (so
    every tag is still checked) and dropped."""
    look = next(stream)
    while look[0] == "part":
        after: list[tuple[str, Any]] = []

        def batches(after: list[tuple[str, Any]] = after) -> Iterator[tuple[bytes, int]]:
            for kind, value in stream:
                if kind != "batch":
                    after.append((kind, value))
                    return
                yield value

        it = batches()
        if look[1].partition(".")[0] in keep:
            yield look[1], codec.Packed(it)
        for _ in it:  # whatever the consumer left, or the whole part when it is dropped
            pass
        if not after:
            raise EnvelopeError("the backup ends inside a section")
        look = after[0]
    if look[0] != "end":
        raise EnvelopeError("the backup's sections are out of order")
