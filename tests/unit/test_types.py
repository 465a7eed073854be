"""The type table: OIDs, names, and the text and binary forms PostgreSQL 15 uses."""

from __future__ import annotations

import datetime as dt
import struct

import pytest

from nodedb_server import types as t
from nodedb_server.errors import DBError

# (oid, value, text form, binary form) as PostgreSQL sends them (typsend functions).
CASES = [
    (t.BOOL, True, "t", b"\x01"),
    (t.BOOL, False, "f", b"\x00"),
    (t.INT2, -2, "-2", struct.pack("!h", -2)),
    (t.INT4, 123456, "123456", struct.pack("!i", 123456)),
    (t.INT8, -(2**40), str(-(2**40)), struct.pack("!q", -(2**40))),
    (t.FLOAT8, 1.5, "1.5", struct.pack("!d", 1.5)),
    (t.TEXT, "héllo", "héllo", "héllo".encode()),
    (t.BYTEA, b"\x00\xff", "\\x00ff", b"\x00\xff"),
    (
        t.TIMESTAMPTZ,
        dt.datetime(2000, 1, 1, 0, 0, 1, tzinfo=dt.UTC),
        "2000-01-01 00:00:01+00",
        struct.pack("!q", 1_000_000),  # microseconds since 2000-01-01
    ),
    (t.JSONB, {"a": 1}, '{"a": 1}', b'\x01{"a": 1}'),  # jsonb binary: version 1, then text
]


@pytest.mark.parametrize(("oid", "value", "text", "binary"), CASES)
def test_encodings_match_postgresql(oid: int, value: object, text: str, binary: bytes) -> None:
    assert t.encode_text(oid, value) == text
    assert t.encode_binary(oid, value) == binary
    assert t.encoder(oid, 0)(value) == text.encode()
    assert t.encoder(oid, 1)(value) == binary


@pytest.mark.parametrize(("oid", "value", "text", "binary"), CASES)
def test_decoding_reads_back_what_encoding_wrote(
    oid: int, value: object, text: str, binary: bytes
) -> None:
    assert t.decode_text(oid, text) == value
    assert t.decode_binary(oid, binary) == value


def test_arrays_in_text_and_binary() -> None:
    assert t.encode_text(t.FLOAT4_ARRAY, [1.0, 2.5]) == "{1,2.5}"
    assert t.decode_text(t.INT8_ARRAY, "{1,NULL,3}") == [1, None, 3]
    raw = t.encode_binary(t.INT8_ARRAY, [1, 2])
    assert t.decode_binary(t.INT8_ARRAY, raw) == [1, 2]


def test_every_array_type_has_a_name_and_an_element() -> None:
    for array, element in t.ARRAY_ELEMENT.items():
        assert array in t.TYPE_NAMES and element in t.TYPE_NAMES
    assert t.TYPE_NAMES[t.INT8] == "int8" and t.TYPE_SIZES[t.INT8] == 8
    assert t.CAST_NAMES["bigint"] == t.INT8


@pytest.mark.parametrize(
    ("oid", "text"), [(t.INT8, "x"), (t.BOOL, "maybe"), (t.TIMESTAMPTZ, "yesterday-ish")]
)
def test_bad_text_is_22p02(oid: int, text: str) -> None:
    with pytest.raises(DBError) as err:
        t.decode_text(oid, text)
    assert err.value.sqlstate in ("22P02", "22007", "22008")
