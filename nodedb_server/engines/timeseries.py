"""Timeseries collections: columnar rows in time partitions, held as Arrow record batches.

Writes arrive as Arrow IPC batches (one WAL operation per INSERT or COPY),
are split by partition (``partition_by``, e.g. 1h) and appended; reads pick
only the partitions that overlap the query's time range and work on whole
columns with pyarrow compute. A checkpoint stores each partition as Parquet
inside a sealed L1 file.

Columns have a kind: timestamp, text, float, int or bool. A collection made
by ``CREATE TIMESERIES`` grows a nullable column for each new field and
widens an int column to float when a float arrives; a ``TYPE COLUMNAR``
collection keeps the columns it declared.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from nodedb_server.engines import EngineKind
from nodedb_server.storage.records import TIMESERIES_OPS
from nodedb_server.storage.snapshot import Prefetch

KINDS: dict[str, pa.DataType] = {
    "timestamp": pa.timestamp("us", tz="UTC"),
    "text": pa.string(),
    "float": pa.float64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
}
# Rows per Parquet item in a checkpoint: bounds one L1 frame.
CHECKPOINT_ROWS = 250_000
PIECE_BYTES = 32 << 20  # in-memory (Arrow) bytes of rows one Parquet piece holds, at most
_UNITS_US = {
    "us": 1,
    "ms": 1000,
    "s": 1_000_000,
    "m": 60_000_000,
    "min": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class TimeseriesError(ValueError):
    """A value or a field that does not fit the collection."""


def parse_partition(text: str) -> int:
    """'1h', '15m', '1d' ... as microseconds."""
    mt = re.fullmatch(r"\s*(\d+)\s*(us|ms|s|min|m|h|d)\s*", text)
    if not mt or int(mt.group(1)) == 0:
        raise TimeseriesError(f"partition_by {text!r} is not a duration like '1h' or '15m'")
    return int(mt.group(1)) * _UNITS_US[mt.group(2)]


def kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, dt.datetime):
        return "timestamp"
    return "text"


def to_micros(value: Any) -> int:
    """A time key value: datetime, ISO 8601 text, or integer epoch milliseconds."""
    if isinstance(value, dt.datetime):
        v = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        d = v - _EPOCH
        return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds
    if isinstance(value, bool):
        raise TimeseriesError("a boolean is not a timestamp")
    if isinstance(value, int | float):
        return int(value * 1000)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+", text):
            return int(text) * 1000
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise TimeseriesError(f'invalid timestamp "{text[:40]}"') from None
        return to_micros(parsed)
    raise TimeseriesError("the time key must be a timestamp")


class Partition:
    __slots__ = ("start", "batches", "rows")

    def __init__(self, start: int):
        self.start = start
        self.batches: list[pa.RecordBatch] = []
        self.rows = 0


class TimeseriesCollection:
    engine: EngineKind = "timeseries"
    key_field = ""

    def __init__(
        self,
        name: str,
        time_key: str = "ts",
        columns: dict[str, str] | None = None,
        partition_us: int = 3_600_000_000,
        dynamic: bool = True,
    ):
        self.name = name
        self.time_key = time_key
        self.columns: dict[str, str] = dict(columns or {time_key: "timestamp"})
        self.partition_us = partition_us
        self.dynamic = dynamic
        self.partitions: dict[int, Partition] = {}
        self.size_bytes = 0
        self.indexes: dict[str, Any] = {}
        self.vectors: dict[str, Any] = {}

    def __len__(self) -> int:
        return sum(p.rows for p in self.partitions.values())

    def fields(self) -> list[str]:
        return list(self.columns)

    def schema(self) -> pa.Schema:
        return pa.schema([(n, KINDS[k]) for n, k in self.columns.items()])

    # ---- preparing writes (pure: nothing changes until the operation is applied) -----

    def batch_from_rows(self, rows: list[dict[str, Any]]) -> pa.RecordBatch:
        names = list(self.columns)
        kinds = dict(self.columns)
        for row in rows:
            for f, v in row.items():
                if f not in kinds:
                    if not self.dynamic:
                        raise TimeseriesError(f'column "{f}" of "{self.name}" does not exist')
                    if v is not None:
                        kinds[f] = kind_of(v)
                        names.append(f)
        arrays = []
        for f in names:
            values = [row.get(f) for row in rows]
            kind = kinds.get(f, "text")
            if f == self.time_key:
                if any(v is None for v in values):
                    raise TimeseriesError(f'every row needs a value for the time key "{f}"')
                arrays.append(
                    pa.array([to_micros(v) for v in values], pa.int64()).cast(KINDS["timestamp"])
                )
                continue
            if kind == "int" and any(isinstance(v, float) for v in values):
                kind = "float" if self.dynamic else "int"
            arrays.append(_column(values, kind, f))
        return pa.RecordBatch.from_arrays(arrays, names=names)

    def batch_from_csv(
        self, data: bytes, columns: list[str] | None, fmt: str, header: bool, delimiter: str | None
    ) -> pa.Table:
        names = columns or list(self.columns)
        unknown = [c for c in names if c not in self.columns]
        if unknown:
            raise TimeseriesError(f'column "{unknown[0]}" of "{self.name}" does not exist')
        types = {c: (pa.string() if c == self.time_key else KINDS[self.columns[c]]) for c in names}
        sep = delimiter or ("," if fmt == "csv" else "\t")
        if data.endswith(b"\\.\n") or data == b"\\.":  # an end-of-data marker from old clients
            data = data[: -3 if data.endswith(b"\n") else -2]
        try:
            table = pcsv.read_csv(
                pa.BufferReader(data),
                read_options=pcsv.ReadOptions(column_names=names, skip_rows=1 if header else 0),
                parse_options=pcsv.ParseOptions(
                    delimiter=sep, quote_char='"' if fmt == "csv" else False
                ),
                convert_options=pcsv.ConvertOptions(
                    column_types=types,
                    null_values=["\\N"] if fmt == "text" else [""],
                    strings_can_be_null=True,
                    true_values=["t", "true"],
                    false_values=["f", "false"],
                ),
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise TimeseriesError(
                f"COPY data does not fit the columns: {str(e).splitlines()[0][:200]}"
            ) from None
        ts = table.column(self.time_key)
        if ts.null_count:
            raise TimeseriesError(f'every row needs a value for the time key "{self.time_key}"')
        table = table.set_column(
            table.schema.get_field_index(self.time_key), self.time_key, _parse_times(ts)
        )
        return table

    # ---- applying committed operations -----------------------------------------------------

    def apply(self, op: int, key: Any, row: Any, expires_ms: int | None) -> None:
        if op in TIMESERIES_OPS:
            self.apply_batch(from_ipc(row), len(row))

    def apply_run(self, ops: Sequence[tuple[int, Any, Any, int | None]]) -> None:
        for op in ops:
            self.apply(*op)

    def apply_batch(self, batch: pa.RecordBatch | pa.Table, size: int) -> None:
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        if table.num_rows == 0:
            return
        self._evolve(table.schema)
        ts = pc.cast(table.column(self.time_key), pa.int64())
        pid = pc.subtract(ts, _mod(ts, self.partition_us))
        order = pc.sort_indices(pid)
        table = table.take(order)
        pid = pid.take(order)
        counts = pc.value_counts(pid)
        offset = 0
        for item in counts:
            start, n = item["values"].as_py(), item["counts"].as_py()
            part = self.partitions.get(start)
            if part is None:
                part = self.partitions[start] = Partition(start)
            part.batches += table.slice(offset, n).combine_chunks().to_batches()
            part.rows += n
            offset += n
        self.size_bytes += size

    def _evolve(self, schema: pa.Schema) -> None:
        for field in schema:
            kind = _kind_of_type(field.type)
            have = self.columns.get(field.name)
            if have is None:
                if self.dynamic:
                    self.columns[field.name] = kind
            elif have == "int" and kind == "float" and self.dynamic:
                self.columns[field.name] = "float"

    def with_tables(self, tables: list[pa.Table]) -> TimeseriesCollection:
        """A copy that also holds ``tables`` (a transaction's own appends, as it sees
        them); the batches it shares with this collection are never changed."""
        view = TimeseriesCollection(
            self.name, self.time_key, self.columns, self.partition_us, self.dynamic
        )
        for start, part in self.partitions.items():
            copy = view.partitions[start] = Partition(start)
            copy.batches, copy.rows = list(part.batches), part.rows
        for table in tables:
            view.apply_batch(table, 0)
        return view

    # ---- reading ------------------------------------------------------------------------

    def table(self, lo: int | None = None, hi: int | None = None) -> tuple[pa.Table, int, int]:
        """Rows of the partitions overlapping [lo, hi] (µs; None: open), and how many
        partitions were read and skipped."""
        schema = self.schema()
        batches = []
        read = skipped = 0
        for start in sorted(self.partitions):
            end = start + self.partition_us - 1
            if (lo is not None and end < lo) or (hi is not None and start > hi):
                skipped += 1
                continue
            read += 1
            batches += [_conform(b, schema) for b in self.partitions[start].batches]
        return pa.Table.from_batches(batches, schema=schema), read, skipped

    # ---- checkpoint ----------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        return {
            "time_key": self.time_key,
            "columns": self.columns,
            "partition_us": self.partition_us,
            "dynamic": self.dynamic,
        }

    def load_meta(self, meta: dict[str, Any]) -> None:
        self.time_key = meta["time_key"]
        self.columns = dict(meta["columns"])
        self.partition_us = meta["partition_us"]
        self.dynamic = meta["dynamic"]

    def checkpoint_parts(self, prefix: str) -> list[tuple[str, Iterable[Any]]]:
        snapshot = {s: list(p.batches) for s, p in self.partitions.items()}
        schema = self.schema()
        # Parquet encoding releases the GIL: done ahead on a helper thread, it overlaps
        # with the other parts' packing (storage/snapshot.py, Prefetch).
        return [(prefix, Prefetch(lambda: _parquet_items(snapshot, schema)))]

    def load_parts(self, prefix: str, read_part: Callable[[str], Iterator[Any]]) -> None:
        for start, data in read_part(prefix):
            table = pq.read_table(pa.BufferReader(data))
            part = self.partitions.setdefault(start, Partition(start))
            part.batches += table.combine_chunks().to_batches()
            part.rows += table.num_rows
            self.size_bytes += len(data)

    def load_size(self, estimate: int | None) -> None:
        if estimate is not None:
            self.size_bytes = estimate


def to_python(column: pa.Array | pa.ChunkedArray) -> list[Any]:
    """A column as Python values. Timestamps are converted here, not by pyarrow: its
    time-zone-aware conversion crashes the process (a segfault in libstdc++) once a
    usearch index exists in it (seen with pyarrow 26 and usearch 2.26)."""
    if pa.types.is_timestamp(column.type):
        micros = pc.cast(column, pa.int64()).to_pylist()
        return [None if m is None else _EPOCH + dt.timedelta(microseconds=m) for m in micros]
    values: list[Any] = column.to_pylist()
    return values


def table_rows(table: pa.Table) -> list[dict[str, Any]]:
    columns = {name: to_python(table.column(name)) for name in table.column_names}
    return [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]


def to_ipc(batch: pa.RecordBatch | pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write(batch)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.BufferReader(data)).read_all()


def _parquet_items(
    snapshot: dict[int, list[pa.RecordBatch]], schema: pa.Schema
) -> Iterator[list[Any]]:
    """[partition start, Parquet bytes] items; produced lazily on the checkpoint thread."""
    for start in sorted(snapshot):
        table = pa.Table.from_batches([_conform(b, schema) for b in snapshot[start]], schema=schema)
        # At most CHECKPOINT_ROWS a piece, and fewer for wide rows, so that one piece
        # (one item of an L1 file or a backup) stays well inside their limits.
        per_row = max(1, table.nbytes // max(table.num_rows, 1))
        step = max(1, min(CHECKPOINT_ROWS, PIECE_BYTES // per_row))
        for offset in range(0, table.num_rows, step):
            sink = pa.BufferOutputStream()
            pq.write_table(table.slice(offset, step), sink)
            yield [start, sink.getvalue().to_pybytes()]


def _mod(values: pa.Array, m: int) -> pa.Array:
    # floor modulo for int64 (pyarrow has no modulo kernel): v - floor(v / m) * m
    q = pc.floor(pc.divide(pc.cast(values, pa.float64()), float(m)))
    return pc.subtract(values, pc.multiply(pc.cast(q, pa.int64()), m))


def _column(values: list[Any], kind: str, name: str) -> pa.Array:
    try:
        if kind == "timestamp":
            return pa.array([None if v is None else to_micros(v) for v in values], pa.int64()).cast(
                KINDS["timestamp"]
            )
        if kind == "float":
            return pa.array([None if v is None else float(v) for v in values], pa.float64())
        if kind == "int":
            return pa.array([None if v is None else int(v) for v in values], pa.int64())
        if kind == "bool":
            return pa.array(values, pa.bool_())
        return pa.array(
            [None if v is None else (v if isinstance(v, str) else str(v)) for v in values],
            pa.string(),
        )
    except (TypeError, ValueError, pa.ArrowInvalid):
        raise TimeseriesError(f'a value of column "{name}" is not a {kind}') from None


def _kind_of_type(t: pa.DataType) -> str:
    for kind, typ in KINDS.items():
        if t == typ:
            return kind
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_timestamp(t):
        return "timestamp"
    return "text"


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    if batch.schema.equals(schema):
        return batch
    arrays = []
    for field in schema:
        i = batch.schema.get_field_index(field.name)
        arrays.append(
            batch.column(i).cast(field.type) if i >= 0 else pa.nulls(batch.num_rows, field.type)
        )
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _parse_times(column: pa.ChunkedArray) -> pa.Array:
    """Text times from COPY: integer epoch milliseconds, or ISO 8601 (all with a zone
    offset, or all without, read as UTC); a mix falls back to parsing value by value."""
    text = column.combine_chunks()
    if pc.all(pc.match_substring_regex(text, r"^-?\d+$")).as_py():
        return pc.multiply(pc.cast(text, pa.int64()), 1000).cast(KINDS["timestamp"])
    for target in (KINDS["timestamp"], pa.timestamp("us")):
        try:
            return pc.cast(text, target).cast(KINDS["timestamp"])
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return pa.array([to_micros(v) for v in text.to_pylist()], pa.int64()).cast(KINDS["timestamp"])
