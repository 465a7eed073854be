"""The statement families. Importing this package registers every statement
(``sql/registry.py``); each module holds one family's statements and helpers."""

from nodedb_server.sql.exec import (
    admin,
    backup,
    copy_out,
    crdt,
    cursors,
    ddl,
    events,
    graph,
    relational,
    rows,
    system_views,
    timeseries,
    txn,
    vector,
)

__all__ = [
    "admin",
    "backup",
    "copy_out",
    "cursors",
    "crdt",
    "ddl",
    "events",
    "graph",
    "relational",
    "rows",
    "system_views",
    "timeseries",
    "txn",
    "vector",
]
