"""CRDT state as a user drives it: Loro peers editing offline, merged through the server."""

from __future__ import annotations

import asyncpg
import loro
import pg8000.native
import psycopg
import pytest

from tests.serverproc import ServerProcess


def _peer(peer_id: int) -> loro.LoroDoc:
    doc = loro.LoroDoc()
    doc.peer_id = peer_id
    return doc


def _updates(doc: loro.LoroDoc) -> bytes:
    return bytes(doc.export(loro.ExportMode.Updates(loro.VersionVector())))


def _value(snapshot: bytes) -> dict:
    doc = loro.LoroDoc()
    doc.import_(snapshot)
    return doc.get_deep_value()


@pytest.fixture
def peers() -> tuple[loro.LoroDoc, loro.LoroDoc, bytes]:
    """Two peers share a base, then edit the same note concurrently while offline."""
    a = _peer(1)
    a.get_text("body").insert(0, "Hello")
    a.get_map("meta").insert("title", "draft")
    a.commit()
    base = _updates(a)
    b = _peer(2)
    b.import_(base)
    a.get_text("body").insert(5, ", world")
    a.get_map("meta").insert("title", "final")
    a.commit()
    b.get_text("body").insert(0, ">> ")
    b.get_list("tags").push("urgent")
    b.commit()
    return a, b, base


def test_concurrent_peers_converge_whatever_the_order(server: ServerProcess, peers) -> None:
    a, b, base = peers
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION notes")
        for doc_id, order in (("n1", (a, b)), ("n2", (b, a))):
            conn.execute("SELECT crdt_apply('notes', %s, %s)", (doc_id, base))
            for peer in order:
                assert conn.execute(
                    "SELECT crdt_apply('notes', %s, %s)", (doc_id, _updates(peer))
                ).fetchone() == (True,)
        s1 = conn.execute("SELECT crdt_state('notes', 'n1')").fetchone()[0]
        s2 = conn.execute("SELECT crdt_state('notes', 'n2')").fetchone()[0]
    # Each peer, once it has the other's edits, holds exactly what the server returns.
    a.import_(_updates(b))
    b.import_(_updates(a))
    assert _value(s1) == _value(s2) == a.get_deep_value() == b.get_deep_value()
    assert _value(s1)["body"] == ">> Hello, world" and _value(s1)["tags"] == ["urgent"]


def test_applying_twice_changes_nothing_and_garbage_is_22000(server: ServerProcess, peers) -> None:
    a, _, _ = peers
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION notes")
        conn.execute("SELECT crdt_apply('notes', 'n', %s)", (_updates(a),))
        once = conn.execute("SELECT crdt_state('notes', 'n')").fetchone()[0]
        conn.execute("SELECT crdt_apply('notes', 'n', %s)", (_updates(a),))
        assert _value(conn.execute("SELECT crdt_state('notes', 'n')").fetchone()[0]) == _value(once)
        for garbage in (b"", b"\x00\x01garbage", b"not a loro update at all" * 10):
            with pytest.raises(psycopg.errors.DataException) as err:
                conn.execute("SELECT crdt_apply('notes', 'n', %s)", (garbage,))
            assert err.value.sqlstate == "22000"
        assert _value(conn.execute("SELECT crdt_state('notes', 'n')").fetchone()[0]) == _value(once)
        assert conn.execute("SELECT crdt_state('notes', 'nobody')").fetchone() == (None,)
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT crdt_apply('missing', 'n', %s)", (_updates(a),))


def test_crdt_state_survives_kill9_and_checkpoint(server: ServerProcess, peers) -> None:
    a, b, base = peers
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE COLLECTION notes")
        conn.execute("SELECT crdt_apply('notes', 'n', %s)", (base,))
        conn.execute("SELECT crdt_apply('notes', 'n', %s)", (_updates(a),))
    server.kill9()
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        conn.execute("SELECT crdt_apply('notes', 'n', %s)", (_updates(b),))
    server.kill9()
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        state = conn.execute("SELECT crdt_state('notes', 'n')").fetchone()[0]
    a.import_(_updates(b))
    assert _value(state) == a.get_deep_value()


async def test_crdt_with_asyncpg_and_pg8000(server: ServerProcess, peers) -> None:
    a, _, _ = peers
    conn = await asyncpg.connect(host="127.0.0.1", port=server.port, user="nodedb")
    try:
        await conn.execute("CREATE COLLECTION notes")
        assert await conn.fetchval("SELECT crdt_apply('notes', $1, $2)", "n", _updates(a)) is True
        state = await conn.fetchval("SELECT crdt_state('notes', $1)", "n")
        assert _value(state) == a.get_deep_value()
    finally:
        await conn.close()
    pg = pg8000.native.Connection("nodedb", host="127.0.0.1", port=server.port, database="nodedb")
    try:
        pg.run("SELECT crdt_apply('notes', 'm', :u)", u=_updates(a))
        assert _value(pg.run("SELECT crdt_state('notes', 'm')")[0][0]) == a.get_deep_value()
    finally:
        pg.close()
