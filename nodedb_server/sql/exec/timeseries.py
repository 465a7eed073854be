"""Timeseries collections: reads through Arrow, INSERT, and COPY FROM STDIN."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from nodedb_server.engines.base import Row, RowCollection
from nodedb_server.engines.timeseries import (
    TimeseriesCollection,
    TimeseriesError,
    from_ipc,
    table_rows,
    to_ipc,
)
from nodedb_server.errors import (
    DataError,
    DBError,
    FeatureNotSupported,
    ObjectInUse,
    SyntaxError_,
    UndefinedColumn,
)
from nodedb_server.sql import ast
from nodedb_server.sql.columnar import arrow_filter, time_bounds, vector_aggregate
from nodedb_server.sql.exec.copy_in import RowsLoad, copy_data
from nodedb_server.sql.exec.txn import commit_or_buffer, own_writes
from nodedb_server.sql.expr import (
    Ctx,
)
from nodedb_server.sql.plan import Plan
from nodedb_server.sql.registry import statement
from nodedb_server.sql.result import CopyIn, Result

if TYPE_CHECKING:
    from nodedb_server.sql.session import Session


# One COPY is one WAL record (atomic), and a record holds at most 256 MiB.


def timeseries_view(s: Session, name: str, engine: TimeseriesCollection) -> TimeseriesCollection:
    own = own_writes(s, name, ("ts",))
    return engine.with_tables([from_ipc(payload) for _, payload in own]) if own else engine


def timeseries_rows(
    s: Session, stmt: ast.Select, plan: Plan, engine: TimeseriesCollection, ctx: Ctx
) -> tuple[list[Row], list[tuple[Any, ...]] | None]:
    """A partition scan step, answered natively: the rows of the partitions in the
    WHERE's time range, filtered column-wise; or, for an Aggregate Arrow can compute,
    the output rows themselves."""
    lo, hi = time_bounds(stmt.where, engine, ctx)
    table, read, skipped = engine.table(lo, hi)
    s.partitions = (read, skipped)
    s.examined = table.num_rows
    residual = stmt.where
    if residual is not None:
        arrow_where = arrow_filter(residual, engine, ctx)
        if arrow_where is not None:
            table, residual = table.filter(arrow_where), None
    if residual is None and plan.aggregate is not None and not stmt.star:
        fast = vector_aggregate(stmt, table, engine, ctx)
        if fast is not None:
            return [], fast
    rows = table_rows(table)
    if residual is not None:
        rows = [r for r in rows if residual.eval(r, ctx) is True]
    return rows, None


async def insert_timeseries(
    s: Session, stmt: ast.Insert, engine: TimeseriesCollection, params: list[Any]
) -> Result:
    if stmt.on_conflict is not None or stmt.upsert:
        raise FeatureNotSupported(
            "timeseries rows have no key: ON CONFLICT and UPSERT do not apply"
        )
    if stmt.returning:
        raise timeseries_returning(stmt.collection)
    ctx = s.ctx(params)
    if stmt.positional:
        raise SyntaxError_("INSERT needs a field list: INSERT INTO c (f, ..) VALUES (..)")
    rows = [{name: e.eval({}, ctx) for name, e in fields} for fields in stmt.rows]
    try:
        batch = engine.batch_from_rows(rows)
    except TimeseriesError as e:
        raise timeseries_error(e) from None
    await commit_or_buffer(s, stmt.collection, [("ts", None, to_ipc(batch), None)])
    return Result(None, [], f"INSERT 0 {len(rows)}")


@statement(ast.CopyFrom)
async def copy_from(s: Session, stmt: ast.CopyFrom, params: list[Any]) -> Result:
    """COPY .. FROM STDIN: checked before the client sends its data."""
    engine = s.any_collection(stmt.collection)
    if isinstance(engine, RowCollection):
        return Result(None, [], "COPY", copy=RowsLoad(s, stmt, engine))
    if not isinstance(engine, TimeseriesCollection):
        raise FeatureNotSupported("COPY FROM STDIN loads collections of rows")
    if stmt.format == "binary":
        raise FeatureNotSupported(
            "binary COPY into a timeseries collection is not supported yet: use text or csv"
        )
    return Result(None, [], "COPY", copy=TimeseriesLoad(s, stmt, engine))


def timeseries_error(e: TimeseriesError) -> DBError:
    text = str(e)
    if "does not exist" in text:
        return UndefinedColumn(text)
    if "timestamp" in text or "time value" in text:
        return DBError(text, sqlstate="22007")
    return DataError(text)


def timeseries_returning(name: str) -> FeatureNotSupported:
    return FeatureNotSupported(
        f'"{name}" is a timeseries collection: RETURNING works on document and '
        "key-value collections"
    )


class TimeseriesLoad(CopyIn):
    """COPY .. FROM STDIN into a timeseries collection: the data is parsed column-wise
    and committed as one operation (one WAL record, so atomic)."""

    def __init__(self, session: Session, stmt: ast.CopyFrom, engine: TimeseriesCollection):
        self.session = session
        self.stmt = stmt
        self.columns = len(stmt.columns or engine.columns)

    async def run(self, chunks: AsyncIterator[bytes]) -> Result:
        data = await copy_data(chunks)
        stmt, session = self.stmt, self.session
        engine = session.any_collection(stmt.collection)
        if not isinstance(engine, TimeseriesCollection):
            raise ObjectInUse(f'collection "{stmt.collection}" was replaced during the COPY')
        loop = asyncio.get_running_loop()
        try:
            table = await loop.run_in_executor(
                None,
                engine.batch_from_csv,
                data,
                stmt.columns,
                stmt.format,
                stmt.header,
                stmt.delimiter,
            )
            payload = await loop.run_in_executor(None, to_ipc, table)
        except TimeseriesError as e:
            raise timeseries_error(e) from None
        await commit_or_buffer(session, stmt.collection, [("ts", None, payload, None)])
        return Result(None, [], f"COPY {table.num_rows}")
