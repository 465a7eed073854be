"""Scalar helpers shared by expressions (``expr.py``) and the function table
(``functions.py``): reading text as a number, intervals, JSON paths into
documents, and timeseries buckets. Kept apart so neither imports the other to
reach them.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from nodedb_server.engines.timeseries import TimeseriesError, to_micros
from nodedb_server.errors import DataError, InvalidTextRepresentation


def number(v: Any) -> Any:
    """Read untyped text as a number when it compares with or adds to one."""
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            try:
                return float(v)
            except ValueError:
                raise InvalidTextRepresentation(
                    f'invalid input syntax for a number: "{v[:40]}"'
                ) from None
    return v


def parse_interval(s: str) -> dt.timedelta:
    units = {
        "microsecond": 1e-6,
        "millisecond": 1e-3,
        "second": 1,
        "sec": 1,
        "minute": 60,
        "min": 60,
        "hour": 3600,
        "day": 86400,
        "week": 604800,
    }
    total = 0.0
    found = False
    for num, unit in re.findall(r"(-?\d+(?:\.\d+)?)\s*([a-z]+)", s.lower()):
        u = unit[:-1] if unit.endswith("s") and unit[:-1] in units else unit
        if u not in units:
            raise InvalidTextRepresentation(f'invalid input syntax for type interval: "{s[:40]}"')
        total += float(num) * units[u]
        found = True
    if not found:
        raise InvalidTextRepresentation(f'invalid input syntax for type interval: "{s[:40]}"')
    return dt.timedelta(seconds=total)


def doc_get(value: Any, path: Any) -> Any:
    """``doc_get(field, '$.a.b[0]')``: walk a JSON path into a nested value."""
    if value is None or path is None:
        return None
    steps = re.findall(r"\.([^.\[\]]+)|\[(\d+)\]", str(path).removeprefix("$"))
    for key, index in steps:
        if key and isinstance(value, dict):
            value = value.get(key)
        elif index and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        else:
            return None
    return value


def time_bucket(spec: Any, ts: Any) -> dt.datetime | None:
    """The start of the interval-wide bucket holding ``ts``, buckets aligned to the epoch."""
    if spec is None or ts is None:
        return None
    delta = spec if isinstance(spec, dt.timedelta) else parse_interval(str(spec))
    width = int(delta.total_seconds() * 1_000_000)
    if width <= 0:
        raise DataError("time_bucket() needs a positive interval")
    try:
        us = to_micros(ts)
    except TimeseriesError as e:
        raise DataError(str(e)) from None
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us - us % width)
