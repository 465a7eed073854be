"""Collections and indexes: CREATE, DROP, UNDROP, SHOW COLLECTIONS, DESCRIBE."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodedb_server import types as t
from nodedb_server.engines.base import RowCollection
from nodedb_server.engines.document import DocumentCollection
from nodedb_server.engines.timeseries import (
    TimeseriesCollection,
)
from nodedb_server.errors import (
    DataError,
    DuplicateColumn,
    DuplicateTable,
    FeatureNotSupported,
    InsufficientPrivilege,
    UndefinedObject,
    UndefinedTable,
    WrongObjectType,
)
from nodedb_server.sql import ast
from nodedb_server.sql.catalog_query import NAMES as CATALOG_NAMES
from nodedb_server.sql.describe import describe, field_oid
from nodedb_server.sql.registry import statement
from nodedb_server.sql.result import Result

if TYPE_CHECKING:
    from nodedb_server.sql.session import Session


SHOW_COLLECTIONS_COLUMNS = [
    ("name", t.TEXT),
    ("engine_type", t.TEXT),
    ("row_count", t.INT8),
    ("size_bytes_estimate", t.INT8),
]
DESCRIBE_COLUMNS = [("field", t.TEXT), ("type", t.TEXT), ("indexed", t.BOOL)]


@statement(ast.CreateCollection)
async def create_collection(s: Session, stmt: ast.CreateCollection, params: list[Any]) -> Result:
    tag = "CREATE TABLE" if "table" in stmt.options else "CREATE COLLECTION"
    what = "relation" if "table" in stmt.options else "collection"
    meta = s.tenant.state.catalog.get(stmt.name)
    if meta is not None:
        if stmt.if_not_exists and meta.dropped_ms is None:
            return Result(None, [], tag, [f'{what} "{stmt.name}" already exists, skipping'])
        hint = " (it is dropped: UNDROP or PURGE it first)" if meta.dropped_ms else ""
        raise DuplicateTable(f'{what} "{stmt.name}" already exists{hint}')
    if stmt.name.startswith("_system"):
        raise InsufficientPrivilege('collection names starting with "_system" are reserved')
    if stmt.name in CATALOG_NAMES:  # pg_catalog comes first in every search path
        raise DuplicateTable(f'relation "{stmt.name}" already exists in schema pg_catalog')
    await s.tenant.commit_catalog(
        "create_collection",
        {
            "name": stmt.name,
            "engine": stmt.engine,
            "typed_fields": stmt.typed_fields,
            "owner": s.user["name"],
            "options": stmt.options,
        },
    )
    return Result(None, [], tag)


@statement(ast.AddColumns)
async def add_columns(s: Session, stmt: ast.AddColumns, params: list[Any]) -> Result:
    found = s.tenant.state.collection(stmt.collection)
    if found is None:
        if stmt.if_exists:
            msg = f'relation "{stmt.collection}" does not exist, skipping'
            return Result(None, [], "ALTER TABLE", [msg])
        raise UndefinedTable(f'relation "{stmt.collection}" does not exist')
    engine = found[1]
    if not isinstance(engine, DocumentCollection) or engine.table is None:
        raise WrongObjectType(
            f'"{stmt.collection}" is a schemaless collection, not a table: any field can '
            "be written to it without ALTER TABLE"
        )
    notices, added = [], []
    taken = {c.name for c in engine.table.columns}
    for col, if_not_exists in stmt.columns:
        if col[0] in taken:
            if if_not_exists:
                notices.append(
                    f'column "{col[0]}" of relation "{stmt.collection}" already exists, skipping'
                )
                continue
            raise DuplicateColumn(
                f'column "{col[0]}" of relation "{stmt.collection}" already exists'
            )
        if (col[2] or col[3] is not None) and len(engine):
            raise FeatureNotSupported(
                f'ADD COLUMN "{col[0]}" with NOT NULL or a DEFAULT on a table that has rows '
                "is not supported: add the column, UPDATE the rows, and declare no default"
            )
        taken.add(col[0])
        added.append(col)
    for col in added:  # one catalog record per column, all checked before the first
        await s.tenant.commit_catalog("add_column", {"name": stmt.collection, "column": col})
    return Result(None, [], "ALTER TABLE", notices)


@statement(ast.DropCollection)
async def drop_collection(s: Session, stmt: ast.DropCollection, params: list[Any]) -> Result:
    meta = s.tenant.state.catalog.get(stmt.name)
    if meta is None or (meta.dropped_ms is not None and not stmt.purge):
        if stmt.if_exists:
            what = "table" if stmt.tag == "DROP TABLE" else "collection"
            return Result(None, [], stmt.tag, [f'{what} "{stmt.name}" does not exist, skipping'])
        raise UndefinedTable(f'collection "{stmt.name}" does not exist')
    action = "purge_collection" if stmt.purge else "drop_collection"
    await s.tenant.commit_catalog(action, {"name": stmt.name})
    return Result(None, [], stmt.tag)


@statement(ast.CreateIndex)
async def create_index(s: Session, stmt: ast.CreateIndex, params: list[Any]) -> Result:
    engine = s.collection(stmt.collection)
    name = stmt.name or f"idx_{stmt.collection}_{stmt.field}"
    state = s.tenant.state
    if name in state.indexes or stmt.field in engine.indexes:
        if stmt.if_not_exists:
            return Result(None, [], "CREATE INDEX", [f'index "{name}" already exists, skipping'])
        raise DuplicateTable(
            f'index "{name}" already exists'
            if name in state.indexes
            else f'field "{stmt.field}" of "{stmt.collection}" is already indexed'
        )
    if stmt.field == engine.key_field:
        raise DataError(f"{stmt.field} is the primary key and needs no index")
    await s.tenant.commit_catalog(
        "create_index", {"name": name, "collection": stmt.collection, "field": stmt.field}
    )
    return Result(None, [], "CREATE INDEX")


@statement(ast.DropIndex)
async def drop_index(s: Session, stmt: ast.DropIndex, params: list[Any]) -> Result:
    if stmt.name not in s.tenant.state.indexes:
        if stmt.if_exists:
            return Result(None, [], "DROP INDEX", [f'index "{stmt.name}" does not exist, skipping'])
        raise UndefinedObject(f'index "{stmt.name}" does not exist')
    await s.tenant.commit_catalog("drop_index", {"name": stmt.name})
    return Result(None, [], "DROP INDEX")


@statement(ast.UndropCollection)
async def undrop_collection(s: Session, stmt: ast.UndropCollection, params: list[Any]) -> Result:
    meta = s.tenant.state.catalog.get(stmt.name)
    if meta is None or meta.dropped_ms is None:
        raise UndefinedTable(f'no dropped collection "{stmt.name}" to undrop')
    await s.tenant.commit_catalog("undrop_collection", {"name": stmt.name})
    return Result(None, [], "UNDROP COLLECTION")


@statement(ast.ShowCollections, columns=SHOW_COLLECTIONS_COLUMNS, writes=False, implicit=True)
async def show_collections(s: Session, stmt: ast.ShowCollections, params: list[Any]) -> Result:
    st = s.tenant.state
    rows = [
        (
            m.name,
            st.engines[m.name].engine,
            len(st.engines[m.name]),
            st.engines[m.name].size_bytes,
        )
        for m in st.active()
    ]
    return Result(describe(s, stmt, []), rows, f"SHOW {len(rows)}")


@statement(ast.DescribeCollection, columns=DESCRIBE_COLUMNS, writes=False, implicit=True)
async def describe_collection(
    s: Session, stmt: ast.DescribeCollection, params: list[Any]
) -> Result:
    engine = s.any_collection(stmt.name)
    rows = []
    for f in engine.fields():
        name = t.TYPE_NAMES[field_oid(engine, f)]
        vindex = engine.vector_index_on(f) if isinstance(engine, RowCollection) else None
        if vindex is not None:
            name = f"vector({vindex.dim}) {vindex.metric}, index {vindex.name}"
        elif name.startswith("_"):
            name = name[1:] + "[]"
        indexed = f == engine.key_field or f in engine.indexes or vindex is not None
        if isinstance(engine, TimeseriesCollection) and f == engine.time_key:
            name += " (time key)"
        rows.append((f, name, indexed))
    return Result(describe(s, stmt, []), rows, f"DESCRIBE {len(rows)}")
