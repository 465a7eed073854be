"""Vector indexes: CREATE VECTOR INDEX (built off the event loop) and SEARCH."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from nodedb_server import types as t
from nodedb_server.engines.base import Row, RowCollection
from nodedb_server.engines.vector import VectorIndex, as_vector
from nodedb_server.engines.vector import distance as vector_distance_of
from nodedb_server.errors import (
    DataError,
    DuplicateTable,
    ObjectInUse,
    UndefinedObject,
)
from nodedb_server.sql import ast
from nodedb_server.sql.describe import ast_cast, describe
from nodedb_server.sql.exec.argcheck import whole_number
from nodedb_server.sql.exec.values import live_row, now_ms
from nodedb_server.sql.registry import Exprs, statement
from nodedb_server.sql.result import Result

if TYPE_CHECKING:
    from nodedb_server.sql.session import Session

log = logging.getLogger("nodedb.sql")


# Rows changed during a vector index build that are indexed on the event loop before
# it is installed; while more changed, another catch-up pass runs on a worker.
CATCH_UP_ON_LOOP = 1000


@statement(ast.CreateVectorIndex)
async def create_vector_index(s: Session, stmt: ast.CreateVectorIndex, params: list[Any]) -> Result:
    engine = _vector_index_target(s, stmt)
    vindex = engine.new_vector_index(stmt.name, stmt.field, stmt.metric, stmt.dim, stmt.options)
    built = None
    if vindex.field is not None and len(engine):
        await _build_vector_index(s, engine, vindex)
        if _vector_index_target(s, stmt) is not engine:
            raise ObjectInUse(
                f'collection "{stmt.collection}" was replaced while its vector index was '
                "being built; run CREATE VECTOR INDEX again"
            )
        built = vindex
    args = {
        "name": stmt.name,
        "collection": stmt.collection,
        "field": vindex.field if built is not None else stmt.field,
        "metric": stmt.metric,
        "dim": stmt.dim,
        "options": stmt.options,
    }
    await s.tenant.commit_catalog("create_vector_index", args, built)
    return Result(None, [], "CREATE VECTOR INDEX")


def _vector_index_target(s: Session, stmt: ast.CreateVectorIndex) -> RowCollection:
    """The collection a new vector index is for, checked (again after a build)."""
    engine = s.collection(stmt.collection)
    if stmt.name in s.tenant.state.indexes:
        raise DuplicateTable(f'index "{stmt.name}" already exists')
    if stmt.field is not None and engine.vector_index_on(stmt.field) is not None:
        raise DuplicateTable(
            f'field "{stmt.field}" of "{stmt.collection}" already has a vector index'
        )
    if stmt.field is None and any(v.field is None for v in engine.vectors.values()):
        raise DuplicateTable(
            f'"{stmt.collection}" already has a vector index waiting to bind; name the FIELD'
        )
    return engine


async def _build_vector_index(s: Session, engine: RowCollection, vindex: VectorIndex) -> None:
    """Build ``vindex`` from a copy of the rows on a worker thread (usearch adds with
    the GIL released), then catch up with the rows written meanwhile: on workers while
    many changed, the last few on the loop, so nothing changes between that pass and
    the caller installing the index."""
    loop = asyncio.get_running_loop()
    field = vindex.field
    assert field is not None
    changed = engine.watch_changes()
    try:
        rows = list(engine.rows.items())  # row dicts are never mutated once stored
        items = ((key, row.get(field)) for key, row in rows)
        log.info(
            "building vector index %s on %s (%d rows) off the event loop",
            vindex.name,
            field,
            len(rows),
        )
        started = time.monotonic()
        await loop.run_in_executor(None, vindex.build, items)
        log.info("vector index %s built in %.2fs", vindex.name, time.monotonic() - started)
        while len(changed) > CATCH_UP_ON_LOOP:
            done, changed = changed, engine.watch_changes()
            engine.unwatch(done)
            await loop.run_in_executor(None, engine.catch_up, vindex, done)
        engine.catch_up(vindex, changed)
    finally:
        engine.unwatch(changed)


SEARCH_COLUMNS = [("id", t.TEXT), ("distance", t.FLOAT8)]


def search_exprs(s: Session, stmt: ast.VectorSearch) -> Exprs:
    return [ast_cast(stmt.query, t.FLOAT4_ARRAY), ast_cast(stmt.k, t.INT8)], []


@statement(
    ast.VectorSearch, columns=SEARCH_COLUMNS, exprs=search_exprs, writes=False, implicit=True
)
async def vector_search(s: Session, stmt: ast.VectorSearch, params: list[Any]) -> Result:
    engine = s.collection(stmt.collection)
    vindex = engine.vector_index_on(stmt.field)
    if vindex is None:
        raise UndefinedObject(f'"{stmt.collection}" has no vector index on field "{stmt.field}"')
    ctx = s.ctx(params)
    query = _query_vector(stmt.query.eval({}, ctx), vindex.dim)
    k = whole_number(stmt.k.eval({}, ctx), "k")
    now = now_ms()
    over = s.txn.overlay.get(stmt.collection, {}) if s.txn is not None else {}
    # The index holds committed rows only: those this transaction wrote or deleted
    # are dropped from its answer (asking for that many more) and its own compared.
    # Answered on the event loop with the other searches of this turn, in one batch.
    found = await vindex.search_soon(query, k + len(over))
    rows = [(key, d) for key, d in found if key not in over and engine.get(key, now) is not None]
    if over:
        rows = sorted(rows + _own_vector_hits(over, vindex, query, now), key=lambda r: r[1])
    rows = rows[:k]
    return Result(describe(s, stmt, []), rows, f"SELECT {len(rows)}")


def _query_vector(value: Any, dim: int) -> list[float]:
    vec = as_vector(value)
    if vec is None:
        raise DataError("the query vector must be an array of numbers")
    if len(vec) != dim:
        raise DataError(f"the query vector has dimension {len(vec)}; the index has DIM {dim}")
    return vec


def vector_distance(engine: RowCollection | None, value: Any, query: Any) -> float | None:
    """``vector_distance(field, query)``, by the metric of the collection's vector index
    of that dimension (cosine when there is none)."""
    a, b = as_vector(value), as_vector(query)
    if a is None or b is None:
        return None
    if len(a) != len(b):
        raise DataError(f"vector_distance() of dimensions {len(a)} and {len(b)}")
    metric = "cosine"
    if engine is not None:
        vindex = next((v for v in engine.vectors.values() if v.dim == len(a)), None)
        metric = vindex.metric if vindex is not None else metric
    return vector_distance_of(metric, a, b)


def _own_vector_hits(
    over: dict[Any, tuple[Row | None, int | None]],
    vindex: VectorIndex,
    query: list[float],
    now: int,
) -> list[tuple[Any, float]]:
    """(key, distance) of the vectors in a transaction's own rows, compared exactly."""
    hits = []
    for key, entry in over.items():
        row = live_row(entry, now)
        vec = as_vector(row.get(vindex.field)) if row is not None and vindex.field else None
        if vec is not None and len(vec) == vindex.dim:
            hits.append((key, vector_distance_of(vindex.metric, vec, query)))
    return hits
