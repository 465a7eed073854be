"""Value encoding for WAL payloads and L1 rows: msgpack with two extension types.

  ext 1  timestamp: int64 big-endian microseconds since 1970-01-01 UTC
  ext 2  numeric:   the decimal's canonical text, UTF-8

Everything else (None, bool, int, float, str, bytes, list, dict) is plain
msgpack. Maps keep insertion order, which the document engine relies on for
the order of fields in ``SELECT *``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

import msgpack

# How deep lists and objects may nest in a stored value. msgpack decodes at most 1024
# levels (a WAL record or checkpoint wraps a row in a few more), and a value must come
# back out through code that recurses once a level under Python's limit of 1000 frames
# (JSON output, expression evaluation); MySQL and MongoDB stop at 100.
MAX_VALUE_DEPTH = 256
_CONTAINERS = (dict, list, tuple)
# Types that hold no other value (their subclasses are looked at one by one).
_SCALARS = frozenset({type(None), bool, int, float, str, bytes, decimal.Decimal, dt.datetime})

EXT_TIMESTAMP = 1
EXT_NUMERIC = 2
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_Q = struct.Struct(">q")


def _default(obj: Any) -> Any:
    if isinstance(obj, dt.datetime):
        if obj.tzinfo is None:
            obj = obj.replace(tzinfo=dt.UTC)
        delta = obj - _EPOCH
        micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
        return msgpack.ExtType(EXT_TIMESTAMP, _Q.pack(micros))
    if isinstance(obj, decimal.Decimal):
        return msgpack.ExtType(EXT_NUMERIC, str(obj).encode())
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot store a value of type {type(obj).__name__}")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == EXT_TIMESTAMP and len(data) == 8:
        return _EPOCH + dt.timedelta(microseconds=_Q.unpack(data)[0])
    if code == EXT_NUMERIC:
        return decimal.Decimal(data.decode())
    raise ValueError(f"unknown msgpack extension type {code}")


def nests_deeper(value: dict[str, Any] | list[Any], limit: int) -> bool:
    """Whether lists and dicts nest more than ``limit`` levels in ``value`` (itself level
    one). Walked a level at a time, so a value of any depth is measured without recursion."""
    level: list[Any] = [value]
    for _ in range(limit):
        inner: list[Any] = []
        for c in level:
            items = c.values() if isinstance(c, dict) else c
            # One pass in C for a container of plain scalars (a vector's 128 floats
            # took 5 us through isinstance, one by one).
            if not _SCALARS.issuperset(map(type, items)):
                inner += [x for x in items if isinstance(x, _CONTAINERS)]
        level = inner
        if not level:
            return False
    return True


def pack_array(packed_items: list[bytes]) -> bytes:
    """A msgpack array whose items are already packed (each packed once, reused)."""
    return array_head(len(packed_items)) + b"".join(packed_items)


# One Packer per thread, reused: msgpack.packb makes a Packer per call, which is most of
# the cost of packing a small row (0.65 us against 0.19 us for a three-field row). A
# Packer empties itself after each value, and after a value that fails to pack.
_packers = threading.local()


def pack(value: Any) -> bytes:
    try:
        packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(default=_default, use_bin_type=True)
    return packer.pack(value)  # type: ignore[no-any-return]


def packed_batches(
    items: Iterable[Any], batch_bytes: int = 64 << 10
) -> Iterator[tuple[bytes, int]]:
    """(encodings back to back, how many) for consecutive batches of ``items``, each
    about ``batch_bytes``. A batch is taken as a list and packed in one call (as a
    msgpack array, whose header is then cut off), so no Python code runs per item;
    the number taken next follows the bytes the last batch came to. It starts at one
    and at most doubles: items may be large and made as they are asked for (a
    timeseries part's items are Parquet files of megabytes), and taking many at once
    would hold them all."""
    it = iter(items)
    pack = msgpack.Packer(default=_default, use_bin_type=True).pack
    take = 1
    while batch := list(islice(it, take)):
        data = pack(batch)
        n = len(batch)
        yield data[len(array_head(n)) :], n
        take = max(1, min(2 * take, 8192, take * batch_bytes // len(data)))


class Packed:
    """Items already encoded, as (encodings back to back, how many) batches: what a
    restore writes to its checkpoint straight from the backup's bytes."""

    __slots__ = ("batches",)

    def __init__(self, batches: Iterator[tuple[bytes, int]]):
        self.batches = batches


def array_head(n: int) -> bytes:
    """The header of a msgpack array of ``n`` items."""
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False, use_list=True)


def unpack_array(data: bytes, every: int, pause: Callable[[], None]) -> list[Any]:
    """A packed array's items, calling ``pause`` after each ``every`` of them: one call
    of ``unpack`` on a large record (a COPY of 600,000 rows is one) holds the GIL for
    hundreds of milliseconds, and ``pause`` lets other threads run in between."""
    reader = msgpack.Unpacker(
        ext_hook=_ext_hook,
        raw=False,
        strict_map_key=False,
        use_list=True,
        max_buffer_size=max(len(data), 1),
    )
    reader.feed(data)
    items: list[Any] = []
    for i in range(reader.read_array_header()):
        items.append(reader.unpack())
        if i % every == every - 1:
            pause()
    return items
