"""The statement registry: every statement the parser can produce has one entry."""

from __future__ import annotations

import typing

import nodedb_server.sql.session  # noqa: F401  (registers every statement family)
from nodedb_server.sql import ast
from nodedb_server.sql.parse import parse
from nodedb_server.sql.registry import SPECS, spec_of

STATEMENT_TYPES = typing.get_args(ast.Statement)


def test_every_ast_statement_type_has_a_spec() -> None:
    missing = [kind.__name__ for kind in STATEMENT_TYPES if kind not in SPECS]
    assert missing == []


def test_every_spec_is_for_an_ast_statement_type() -> None:
    extra = [kind.__name__ for kind in SPECS if kind not in STATEMENT_TYPES]
    assert extra == []


def test_what_writes_and_what_may_share_an_implicit_transaction() -> None:
    reads = ("SELECT 1", "SHOW ALL", "BEGIN", "ROLLBACK", "EXPLAIN SELECT 1", "SET a = 1")
    for sql in reads:
        assert not spec_of(parse(sql)[0]).writes, sql
    writes = (
        "INSERT INTO c {id: 'a'}",
        "UPDATE c SET n = 1",
        "DELETE FROM c",
        "CREATE COLLECTION c",
        "DROP COLLECTION c",
        "CREATE TENANT t",
        "CHECKPOINT",
        "COMMIT",
    )
    for sql in writes:
        assert spec_of(parse(sql)[0]).writes, sql
    implicit = ("SELECT 1", "INSERT INTO c {id: 'a'}", "DELETE FROM c")
    for sql in implicit:
        assert spec_of(parse(sql)[0]).implicit, sql
    for sql in ("CREATE COLLECTION c", "BEGIN", "CREATE TENANT t", "CHECKPOINT"):
        assert not spec_of(parse(sql)[0]).implicit, sql
