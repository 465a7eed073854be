"""Type OIDs and the text/binary encodings of the types the server speaks (SQL.md).

Decoders turn a parameter's bytes into a Python value; encoders turn a value
into a column's bytes. Binary layouts follow PostgreSQL's send/recv functions
(int8send, float8send, timestamptz_send, numeric_send, array_send, jsonb_send).
"""

from __future__ import annotations

import contextvars
import datetime as dt
import decimal
import functools
import json
import math
import re
import struct
import zoneinfo
from collections.abc import Callable
from typing import Any

import numpy as np

from nodedb_server.errors import InvalidTextRepresentation

# The OIDs of the types spoken (pg_type.oid), one a line: assigned as tuples, mypy
# compiling for mypyc (tools/compile.py) could not always type them where modules in
# an import cycle with this one use them ("Cannot determine type").
BOOL = 16
BYTEA = 17
CHAR = 18
NAME = 19
INT8 = 20
INT2 = 21
INT4 = 23
TEXT = 25
OID = 26
JSON = 114
FLOAT4 = 700
FLOAT8 = 701
UNKNOWN = 705
VARCHAR = 1043
BPCHAR = 1042
TIMESTAMP = 1114
TIMESTAMPTZ = 1184
NUMERIC = 1700
JSONB = 3802
VOID = 2278
REGTYPE = 2206
REGCLASS = 2205  # a relation: its name in text, its oid in binary
BOOL_ARRAY = 1000
INT2_ARRAY = 1005
INT4_ARRAY = 1007
TEXT_ARRAY = 1009
INT8_ARRAY = 1016
FLOAT4_ARRAY = 1021
FLOAT8_ARRAY = 1022
VARCHAR_ARRAY = 1015
OID_ARRAY = 1028
NAME_ARRAY = 1003
RECORD = 2249  # a row value (the catalog's _pg_expandarray), sent in text form "(1,1)"
# The catalog's vector types (pg_index.indkey): text "1 2", binary as a one-dimension array.
INT2VECTOR = 22
OIDVECTOR = 30
VECTOR_ARRAYS: dict[int, int] = {INT2VECTOR: INT2_ARRAY, OIDVECTOR: OID_ARRAY}

ARRAY_ELEMENT: dict[int, int] = {
    BOOL_ARRAY: BOOL,
    INT2_ARRAY: INT2,
    INT4_ARRAY: INT4,
    TEXT_ARRAY: TEXT,
    INT8_ARRAY: INT8,
    FLOAT4_ARRAY: FLOAT4,
    FLOAT8_ARRAY: FLOAT8,
    VARCHAR_ARRAY: VARCHAR,
    OID_ARRAY: OID,
    NAME_ARRAY: NAME,
}
TYPE_NAMES: dict[int, str] = {
    BOOL: "bool",
    BYTEA: "bytea",
    CHAR: "char",
    NAME: "name",
    INT8: "int8",
    INT2: "int2",
    INT2VECTOR: "int2vector",
    OIDVECTOR: "oidvector",
    INT4: "int4",
    TEXT: "text",
    OID: "oid",
    JSON: "json",
    FLOAT4: "float4",
    FLOAT8: "float8",
    UNKNOWN: "unknown",
    VARCHAR: "varchar",
    BPCHAR: "bpchar",
    TIMESTAMP: "timestamp",
    TIMESTAMPTZ: "timestamptz",
    NUMERIC: "numeric",
    JSONB: "jsonb",
    VOID: "void",
    REGTYPE: "regtype",
    REGCLASS: "regclass",
    RECORD: "record",
    BOOL_ARRAY: "_bool",
    INT2_ARRAY: "_int2",
    INT4_ARRAY: "_int4",
    TEXT_ARRAY: "_text",
    INT8_ARRAY: "_int8",
    FLOAT4_ARRAY: "_float4",
    FLOAT8_ARRAY: "_float8",
    VARCHAR_ARRAY: "_varchar",
    OID_ARRAY: "_oid",
    NAME_ARRAY: "_name",
}
TYPE_SIZES: dict[int, int] = {
    BOOL: 1,
    INT2: 2,
    INT4: 4,
    INT8: 8,
    FLOAT4: 4,
    FLOAT8: 8,
    TIMESTAMP: 8,
    TIMESTAMPTZ: 8,
    OID: 4,
    CHAR: 1,
    NAME: 64,
}
# Names accepted in casts (``$1::int8``, ``CAST(x AS text)``), as sqlglot and users spell them.
CAST_NAMES: dict[str, int] = {
    "bigint": INT8,
    "int8": INT8,
    "int": INT4,
    "integer": INT4,
    "int4": INT4,
    "smallint": INT2,
    "int2": INT2,
    "text": TEXT,
    "varchar": VARCHAR,
    "char": TEXT,
    "string": TEXT,
    "bool": BOOL,
    "boolean": BOOL,
    "double": FLOAT8,
    "double precision": FLOAT8,
    "float8": FLOAT8,
    "float": FLOAT8,
    "real": FLOAT4,
    "float4": FLOAT4,
    "numeric": NUMERIC,
    "decimal": NUMERIC,
    "bytea": BYTEA,
    "varbinary": BYTEA,
    "binary": BYTEA,
    "json": JSON,
    "jsonb": JSONB,
    "timestamp": TIMESTAMP,
    "timestamptz": TIMESTAMPTZ,
    "timestamp with time zone": TIMESTAMPTZ,
    "date": TIMESTAMPTZ,
    "regtype": REGTYPE,
    "oid": OID,
    "name": NAME,
}
TEXTLIKE: frozenset[int] = frozenset({TEXT, VARCHAR, UNKNOWN, BPCHAR, NAME, CHAR, 0})

PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_q = struct.Struct("!q")
_i = struct.Struct("!i")
_h = struct.Struct("!h")
_d = struct.Struct("!d")
_f = struct.Struct("!f")


def _bad(oid: int, raw: Any) -> InvalidTextRepresentation:
    shown = raw if isinstance(raw, str) and len(raw) <= 40 else "(value)"
    return InvalidTextRepresentation(
        f'invalid input syntax for type {TYPE_NAMES.get(oid, oid)}: "{shown}"'
    )


# ---- text input ------------------------------------------------------------------------

_TRUE = frozenset({"t", "true", "y", "yes", "on", "1"})
_FALSE = frozenset({"f", "false", "n", "no", "off", "0"})


def parse_bool(s: str) -> bool:
    v = s.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise _bad(BOOL, s)


# The session's TimeZone, set by its connection (Session.sync_zone): a timestamptz is
# printed in it, and a timestamptz written without an offset is read in it.
SESSION_ZONE: contextvars.ContextVar[dt.tzinfo] = contextvars.ContextVar(
    "session_zone", default=dt.UTC
)
_UTC_NAMES = frozenset({"utc", "etc/utc", "gmt", "etc/gmt", "z", "zulu", "universal"})


@functools.lru_cache(maxsize=256)
def zone_named(name: str) -> dt.tzinfo:
    """A TimeZone setting's zone: an IANA name (any case), UTC, or hours east of UTC
    (``SET TIME ZONE -7``); ValueError if it names none."""
    text = name.strip().strip("'")
    if text.lower() in _UTC_NAMES:
        return dt.UTC
    shown = re.fullmatch(r"<([+-]\d\d)(?::(\d\d))?>[+-]\d\d(?::\d\d)?", text)
    if shown:  # as zone_setting shows hours: <-07>+07
        minutes = int(shown.group(2) or 0) * (-1 if shown.group(1)[0] == "-" else 1)
        return dt.timezone(dt.timedelta(hours=int(shown.group(1)), minutes=minutes))
    if re.fullmatch(r"[+-]?\d{1,2}(\.\d+)?", text):
        hours = float(text)
        if abs(hours) > 15:
            raise ValueError(name)
        return dt.timezone(dt.timedelta(hours=hours))
    try:
        return zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        pass
    folded = _zone_names().get(text.lower())
    if folded is None:
        raise ValueError(name)
    return zoneinfo.ZoneInfo(folded)


# statement_timeout's units, as PostgreSQL reads them (case matters); a bare number is ms.
_TIMEOUT_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "min": 60_000.0, "h": 3_600_000.0}
_TIMEOUT_UNITS_MS["d"] = 86_400_000.0
_TIMEOUT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|ms|s|min|h|d)?\s*")


def timeout_setting_ms(text: str) -> int:
    """A statement_timeout setting in milliseconds: a number, in ms unless one of the
    units us, ms, s, min, h or d follows ('30s' is 30,000); ValueError otherwise."""
    m = _TIMEOUT.fullmatch(text)
    if m is None:
        raise ValueError(f"not a time: {text!r}")
    return round(float(m.group(1)) * _TIMEOUT_UNITS_MS[m.group(2) or "ms"])


def zone_setting(name: str) -> str:
    """A TimeZone setting as PostgreSQL shows it: the zone's own spelling (Europe/Berlin
    for europe/berlin), UTC, or <-07>+07 for hours."""
    zone = zone_named(name)
    if isinstance(zone, zoneinfo.ZoneInfo):
        return zone.key
    if zone is dt.UTC:
        return "UTC" if name.strip().strip("'").lower() in ("utc", "z", "zulu") else name
    offset = _offset_text(zone.utcoffset(None) or dt.timedelta(0))
    inverse = ("-" if offset[0] == "+" else "+") + offset[1:]
    return f"<{offset}>{inverse}"


@functools.lru_cache(maxsize=1)
def _zone_names() -> dict[str, str]:
    return {n.lower(): n for n in zoneinfo.available_timezones()}


def parse_timestamp(s: str, local: bool = False, wall: bool = False) -> dt.datetime:
    """ISO 8601 or PostgreSQL's ``YYYY-MM-DD HH:MM:SS[.f][+TZ]``; naive means UTC, or
    with ``local`` (a timestamptz) the session's zone; with ``wall`` (a timestamp
    without time zone) an offset is ignored, as PostgreSQL ignores it."""
    text = s.strip()
    if text.lower() in ("now", "today"):
        now = dt.datetime.now(dt.UTC)
        return (
            now if text.lower() == "now" else now.replace(hour=0, minute=0, second=0, microsecond=0)
        )
    t = text.replace("Z", "+00:00").replace("z", "+00:00")
    t = re.sub(r"([+-]\d\d)$", r"\1:00", t)
    try:
        value = dt.datetime.fromisoformat(t)
    except ValueError:
        raise _bad(TIMESTAMPTZ, s) from None
    if wall:
        return value.replace(tzinfo=dt.UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=SESSION_ZONE.get() if local else dt.UTC)
    return value.astimezone(dt.UTC)


def parse_bytea(s: str) -> bytes:
    if s.startswith("\\x"):
        try:
            return bytes.fromhex(s[2:])
        except ValueError:
            raise _bad(BYTEA, s) from None
    out = bytearray()
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            if s[i + 1 : i + 2] == "\\":
                out.append(0x5C)
                i += 2
                continue
            octal = s[i + 1 : i + 4]
            if len(octal) == 3 and all(ch in "01234567" for ch in octal):
                out.append(int(octal, 8))
                i += 4
                continue
            raise _bad(BYTEA, s)
        out += c.encode("utf-8")
        i += 1
    return bytes(out)


def parse_text_array(s: str, elem: int) -> list[Any]:
    text = s.strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise _bad(elem, s)
    items: list[Any] = []
    body = text[1:-1]
    i = 0
    while i < len(body):
        if body[i] == '"':
            j, buf = i + 1, []
            while j < len(body) and body[j] != '"':
                if body[j] == "\\":
                    j += 1
                buf.append(body[j])
                j += 1
            items.append(decode_text(elem, "".join(buf)))
            i = j + 2
        else:
            j = body.find(",", i)
            j = len(body) if j < 0 else j
            token = body[i:j].strip()
            items.append(None if token.upper() == "NULL" else decode_text(elem, token))
            i = j + 1
    return items


def decode_text(oid: int, s: str) -> Any:
    try:
        if oid in TEXTLIKE:
            return s
        if oid in (INT2, INT4, INT8, OID):
            return int(s.strip())
        if oid in (FLOAT4, FLOAT8):
            return float(s)
        if oid == NUMERIC:
            return numeric_value(decimal.Decimal(s.strip()))
        if oid == BOOL:
            return parse_bool(s)
        if oid == BYTEA:
            return parse_bytea(s)
        if oid in (JSON, JSONB):
            return json.loads(s)
        if oid in (TIMESTAMP, TIMESTAMPTZ):
            return parse_timestamp(s, local=oid == TIMESTAMPTZ)
        if oid in ARRAY_ELEMENT:
            return parse_text_array(s, ARRAY_ELEMENT[oid])
    except (ValueError, decimal.InvalidOperation, json.JSONDecodeError):
        raise _bad(oid, s) from None
    return s


def numeric_value(d: decimal.Decimal) -> int | float:
    """Numbers are stored as int when integral, else as float (documented in FORMATS.md)."""
    if d == d.to_integral_value() and abs(d) < 2**63:
        return int(d)
    return float(d)


# ---- binary input ----------------------------------------------------------------------


def _binary_numeric(b: bytes) -> int | float:
    ndigits, weight, sign, dscale = struct.unpack_from("!hhHh", b)
    digits = struct.unpack_from(f"!{ndigits}h", b, 8)
    if sign == 0xC000:
        return float("nan")
    value = decimal.Decimal(0)
    for i, dgt in enumerate(digits):
        value += decimal.Decimal(dgt).scaleb(4 * (weight - i))
    if sign == 0x4000:
        value = -value
    return numeric_value(value)


# Element types of fixed width whose arrays decode in one numpy call: each element is
# its 4-byte length (always the width, -1 for NULL) then the big-endian value.
_FIXED_ELEMENTS = {FLOAT4: ">f4", FLOAT8: ">f8", INT2: ">i2", INT4: ">i4", INT8: ">i8"}
# Each one's cell as a numpy record type, its width, and the type of the Python values:
# made once, as building the record type costs a third of decoding a 128-float array.
_CELLS = {
    elem: (
        np.dtype([("len", ">i4"), ("v", code)]),
        int(code[2:]),
        np.float64 if code[1] == "f" else np.int64,
    )
    for elem, code in _FIXED_ELEMENTS.items()
}


def _binary_array(b: bytes) -> list[Any]:
    ndim, _flags, elem = struct.unpack_from("!iiI", b)
    if ndim == 0:
        return []
    if ndim != 1:
        raise InvalidTextRepresentation("only one-dimensional arrays are supported")
    (n, _lower) = struct.unpack_from("!ii", b, 12)
    fixed = _CELLS.get(elem)
    if fixed is not None and n >= 0:
        cell, width, kind = fixed
        if len(b) == 20 + n * (4 + width):
            # A vector parameter: no per-element Python work. A NULL element (length
            # -1) makes the lengths disagree, and the loop below handles it.
            cells = np.frombuffer(b, dtype=cell, count=n, offset=20)
            if bool((cells["len"] == width).all()):
                return cells["v"].astype(kind).tolist()  # type: ignore[no-any-return]
    pos, out = 20, list[Any]()
    for _ in range(n):
        (size,) = _i.unpack_from(b, pos)
        pos += 4
        if size < 0:
            out.append(None)
            continue
        out.append(decode_binary(elem, b[pos : pos + size]))
        pos += size
    return out


def decode_binary(oid: int, b: bytes) -> Any:
    try:
        if oid in TEXTLIKE:
            return b.decode("utf-8")
        if oid == INT8:
            return _q.unpack(b)[0]
        if oid in (INT4, OID):
            return _i.unpack(b)[0]
        if oid == REGCLASS:
            return struct.unpack("!I", b)[0]
        if oid == INT2:
            return _h.unpack(b)[0]
        if oid == FLOAT8:
            return _d.unpack(b)[0]
        if oid == FLOAT4:
            return float(_f.unpack(b)[0])
        if oid == BOOL:
            return b != b"\x00"
        if oid == BYTEA:
            return bytes(b)
        if oid == JSON:
            return json.loads(b)
        if oid == JSONB:
            if b[:1] != b"\x01":
                raise ValueError("unknown jsonb version")
            return json.loads(b[1:])
        if oid in (TIMESTAMP, TIMESTAMPTZ):
            return PG_EPOCH + dt.timedelta(microseconds=_q.unpack(b)[0])
        if oid == NUMERIC:
            return _binary_numeric(b)
        if oid in ARRAY_ELEMENT:
            return _binary_array(b)
        return b.decode("utf-8")
    except (struct.error, ValueError, UnicodeDecodeError):
        raise InvalidTextRepresentation(
            f"incorrect binary data format for type {TYPE_NAMES.get(oid, oid)}"
        ) from None


# ---- output ----------------------------------------------------------------------------


def json_default(v: Any) -> Any:
    if isinstance(v, bytes):
        return "\\x" + v.hex()
    if isinstance(v, dt.datetime):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return float(v)
    raise TypeError(type(v).__name__)


# One encoder for every value: json.dumps with options builds a new one per call,
# measured at a third of the cost of encoding a small document.
_JSON_ENCODER = json.JSONEncoder(default=json_default, ensure_ascii=False)


def to_json(v: Any) -> str:
    return _JSON_ENCODER.encode(v)


def format_float(f: float) -> str:
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "Infinity" if f > 0 else "-Infinity"
    if f.is_integer() and abs(f) < 1e15:
        return str(int(f))
    return repr(f)


def format_timestamp(v: dt.datetime, with_tz: bool = True) -> str:
    """As PostgreSQL prints it: a timestamptz in the session's zone with its offset
    (+00, +05:30), a timestamp as its wall clock."""
    zone = SESSION_ZONE.get() if with_tz else dt.UTC
    if v.tzinfo is not None:
        if v.tzinfo is not zone:
            v = v.astimezone(zone)
        s = v.replace(tzinfo=None).isoformat(" ")
    else:
        s = v.isoformat(" ")
    # isoformat (C, a fifth of strftime's time) pads the year to four digits as
    # PostgreSQL prints it; PostgreSQL drops the fraction's trailing zeros.
    if v.microsecond:
        s = s.rstrip("0")
    if not with_tz:
        return s
    if zone is dt.UTC:
        return s + "+00"
    offset = v.utcoffset() if v.tzinfo is not None else None
    return s + _offset_text(offset or dt.timedelta(0))


def _offset_text(offset: dt.timedelta) -> str:
    seconds = int(offset.total_seconds())
    sign = "-" if seconds < 0 else "+"
    h, rest = divmod(abs(seconds), 3600)
    m, sec = divmod(rest, 60)
    text = f"{sign}{h:02d}"
    if m or sec:
        text += f":{m:02d}"
    if sec:
        text += f":{sec:02d}"
    return text


def _array_text(values: list[Any], elem: int) -> str:
    parts = []
    for x in values:
        if x is None:
            parts.append("NULL")
        elif elem in TEXTLIKE:
            s = str(x)
            if s == "" or any(c in s for c in ',{}" \\') or s.upper() == "NULL":
                s = '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
            parts.append(s)
        else:
            parts.append(encode_text(elem, x))
    return "{" + ",".join(parts) + "}"


def encode_text(oid: int, v: Any) -> str:
    if oid == RECORD:
        return str(v)
    if oid in VECTOR_ARRAYS and isinstance(v, list):
        return " ".join(str(int(x)) for x in v)
    if oid == BOOL:
        return "t" if v else "f"
    if oid in (FLOAT8, FLOAT4):
        return format_float(float(v))
    if oid in (INT8, INT4, INT2, OID):
        return str(int(v))
    if oid == BYTEA:
        return "\\x" + (v.hex() if isinstance(v, bytes) else str(v).encode().hex())
    if oid in (JSON, JSONB):
        return to_json(v)
    if oid == TIMESTAMPTZ and isinstance(v, dt.datetime):
        return format_timestamp(v)
    if oid == TIMESTAMP and isinstance(v, dt.datetime):
        return format_timestamp(v, with_tz=False)
    if oid in ARRAY_ELEMENT and isinstance(v, list):
        return _array_text(v, ARRAY_ELEMENT[oid])
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return format_float(v)
    if isinstance(v, decimal.Decimal):
        return format(v, "f")  # 0.00000, never 0E-5
    if isinstance(v, bytes):
        return "\\x" + v.hex()
    if isinstance(v, dt.datetime):
        return format_timestamp(v)
    if isinstance(v, dict | list):
        return to_json(v)
    return str(v)


def _numeric_binary(v: Any) -> bytes:
    d = decimal.Decimal(str(v))
    sign = 0x4000 if d < 0 else 0
    d = abs(d)
    t = d.as_tuple()
    dscale = max(0, -int(t.exponent)) if isinstance(t.exponent, int) else 0
    int_part, _, frac_part = f"{d:f}".partition(".")
    int_part = int_part.lstrip("0")
    int_part = "0" * (-len(int_part) % 4) + int_part
    frac_part = frac_part + "0" * (-len(frac_part) % 4)
    groups = [int(int_part[i : i + 4]) for i in range(0, len(int_part), 4)]
    weight = len(groups) - 1
    groups += [int(frac_part[i : i + 4]) for i in range(0, len(frac_part), 4)]
    while groups and groups[-1] == 0:
        groups.pop()
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    if not groups:
        weight = 0
    return struct.pack(f"!hhHh{len(groups)}h", len(groups), weight, sign, dscale, *groups)


def encode_binary(oid: int, v: Any) -> bytes:
    if oid in VECTOR_ARRAYS:
        oid = VECTOR_ARRAYS[oid]
    if oid == INT8:
        return _q.pack(int(v))
    if oid == INT4:
        return _i.pack(int(v))
    if oid in (OID, REGCLASS):
        return struct.pack("!I", int(v))
    if oid == INT2:
        return _h.pack(int(v))
    if oid == FLOAT8:
        return _d.pack(float(v))
    if oid == FLOAT4:
        return _f.pack(float(v))
    if oid == BOOL:
        return b"\x01" if v else b"\x00"
    if oid == BYTEA:
        return v if isinstance(v, bytes) else str(v).encode()
    if oid == JSONB:
        return b"\x01" + to_json(v).encode()
    if oid in (TIMESTAMP, TIMESTAMPTZ):
        delta = v - PG_EPOCH if v.tzinfo else v - PG_EPOCH.replace(tzinfo=None)
        return _q.pack((delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds)
    if oid == NUMERIC:
        return _numeric_binary(v)
    if oid in ARRAY_ELEMENT:
        elem = ARRAY_ELEMENT[oid]
        parts = [struct.pack("!iiIii", 1, int(any(x is None for x in v)), elem, len(v), 1)]
        for x in v:
            if x is None:
                parts.append(_i.pack(-1))
            else:
                b = encode_binary(elem, x)
                parts.append(_i.pack(len(b)) + b)
        return b"".join(parts)
    return encode_text(oid, v).encode("utf-8")


def _text_binary(v: Any) -> bytes:
    return v.encode("utf-8") if type(v) is str else encode_text(TEXT, v).encode("utf-8")


def _int8_binary(v: Any) -> bytes:
    return _q.pack(v) if type(v) is int else _q.pack(int(v))


def _float8_binary(v: Any) -> bytes:
    return _d.pack(v) if type(v) is float else _d.pack(float(v))


# The common column types, without encode_binary's chain of type tests.
_BINARY_FAST: dict[int, Callable[[Any], bytes]] = {
    TEXT: _text_binary,
    VARCHAR: _text_binary,
    NAME: _text_binary,
    INT8: _int8_binary,
    FLOAT8: _float8_binary,
}


@functools.lru_cache(maxsize=256)
def encoder(oid: int, fmt: int) -> Callable[[Any], bytes]:
    """A function turning a non-NULL value into the column's bytes in ``fmt``."""
    if fmt == 1:
        fast = _BINARY_FAST.get(oid)
        return fast if fast is not None else lambda v: encode_binary(oid, v)
    if oid in (TEXT, VARCHAR):
        return lambda v: (v if isinstance(v, str) else encode_text(oid, v)).encode("utf-8")
    if oid in (INT8, INT4):
        return lambda v: str(v).encode() if type(v) is int else encode_text(oid, v).encode()
    if oid in (JSON, JSONB):
        return lambda v: _JSON_ENCODER.encode(v).encode("utf-8")
    if oid == TIMESTAMPTZ:
        return lambda v: (
            format_timestamp(v) if type(v) is dt.datetime else encode_text(oid, v)
        ).encode()
    return lambda v: encode_text(oid, v).encode("utf-8")
