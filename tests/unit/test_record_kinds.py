"""Record and operation kinds: their on-disk values, the engine families, the docs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nodedb_server.storage import codec
from nodedb_server.storage.records import (
    CRDT_OPS,
    EDGE_OPS,
    ROW_OPS,
    TIMESERIES_OPS,
    OpKind,
    Record,
    RecordKind,
    seal_record,
)

ROOT = Path(__file__).resolve().parents[2]
# What WAL files written by every earlier version hold: never renumber.
ON_DISK_RECORD_KINDS = {"DATA": 1, "CATALOG": 2}
ON_DISK_OP_KINDS = {
    "INSERT": 1,
    "UPDATE": 2,
    "DELETE": 3,
    "EDGE_PUT": 4,
    "EDGE_DELETE": 5,
    "CRDT_APPLY": 6,
    "TS_APPEND": 7,
}


def test_kinds_keep_their_on_disk_values() -> None:
    assert {k.name: k.value for k in RecordKind} == ON_DISK_RECORD_KINDS
    assert {k.name: k.value for k in OpKind} == ON_DISK_OP_KINDS


def test_every_op_kind_belongs_to_exactly_one_family() -> None:
    families = [ROW_OPS, EDGE_OPS, CRDT_OPS, TIMESERIES_OPS]
    for kind in OpKind:
        assert sum(kind in f for f in families) == 1, kind
        # A replayed op is the plain int msgpack decoded: it must match as well.
        assert sum(int(kind) in f for f in families) == 1, kind


def test_members_encode_as_the_plain_ints() -> None:
    op = [OpKind.DELETE, "c", "k", {"a": 1}, None]
    assert codec.pack(op) == codec.pack([3, "c", "k", {"a": 1}, None])
    aead = AESGCM(b"k" * 32)
    body = codec.pack([op])
    assert seal_record(aead, 5, 1, Record(9, RecordKind.DATA, 0, body)) == seal_record(
        aead, 5, 1, Record(9, 1, 0, body)
    )


def _first_block(text: str, heading: str, starts: str) -> list[str]:
    """The first run of lines beginning with ``starts`` after ``heading``."""
    lines = text[text.index(heading) :].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(starts))
    end = next((i for i in range(first, len(lines)) if not lines[i].startswith(starts)), None)
    return lines[first:end]


def _kinds(lines: list[str], pattern: str) -> dict[str, int]:
    return {name: int(value) for value, name in (re.findall(pattern, ln)[0] for ln in lines)}


def _doc_table(heading: str) -> dict[str, int]:
    rows = _first_block((ROOT / "docs" / "FORMATS.md").read_text(), heading, "| ")
    return _kinds([r for r in rows if r[2].isdigit()], r"^\| (\d+) \| ([A-Z_]+) \|")


def _header_list(heading: str) -> dict[str, int]:
    # The module's header as written: compiled (nodedb_server/_hot.py), it has no __doc__.
    header = ast.get_docstring(ast.parse((ROOT / "nodedb_server/storage/records.py").read_text()))
    return _kinds(_first_block(header or "", heading, "    "), r"^ +(\d+) ([A-Z_]+) ")


def test_formats_md_and_the_module_header_list_the_kinds() -> None:
    assert _doc_table("Record kinds and bodies") == ON_DISK_RECORD_KINDS
    assert _doc_table("Operation kinds") == ON_DISK_OP_KINDS
    assert _header_list("Record kinds and bodies") == ON_DISK_RECORD_KINDS
    assert _header_list("Operation kinds") == ON_DISK_OP_KINDS
