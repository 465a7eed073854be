"""What a schemaless collection records of its fields' types (SELECT * and Describe
read it): every type a field has held, in the order fields first appear."""

from __future__ import annotations

import random

from nodedb_server.engines.base import RowCollection
from nodedb_server.engines.kv import KvCollection
from nodedb_server.storage import codec
from nodedb_server.storage.records import OpKind

PUT = int(OpKind.INSERT)
UPDATE = int(OpKind.UPDATE)
DELETE = int(OpKind.DELETE)


def test_fields_in_first_appearance_order_with_every_type_they_held() -> None:
    c = RowCollection("c")
    c.apply_run(
        [
            (PUT, "a", {"id": "a", "n": 1}, None),
            (PUT, "b", {"id": "b", "n": "one", "z": None}, None),
            (PUT, "c", {"id": "c", "m": [1.0, 2.0], "n": 2}, None),
        ]
    )
    c.apply_run([(PUT, "d", {"id": "d", "m": ["x"], "y": {"k": 1}}, None)])
    assert c.fields() == ["id", "n", "z", "m", "y"]
    assert c.field_types == {
        "id": {"text"},
        "n": {"int", "text"},
        "z": {"null"},
        "m": {"vector", "array"},  # a list is tagged by what it holds, each time
        "y": {"object"},
    }
    # Rows of types already seen change nothing; a new type for a known field adds one.
    c.apply_run([(PUT, "e", {"id": "e", "n": 5}, None), (PUT, "f", {"id": "f", "n": 2.5}, None)])
    assert c.field_types["n"] == {"int", "text", "float"}
    assert c.fields() == ["id", "n", "z", "m", "y"]


def test_a_type_seen_second_is_noted_again_after_the_types_are_reloaded() -> None:
    c = RowCollection("c")
    c.apply_run([(PUT, "a", {"id": "a", "n": 1}, None), (PUT, "b", {"id": "b", "n": None}, None)])
    meta = c.meta()
    c.load_meta({"field_types": {"id": ["text"]}})  # as a checkpoint that knew less
    c.apply_run([(PUT, "c", {"id": "c", "n": None}, None), (PUT, "d", {"id": "d", "n": 7}, None)])
    assert c.field_types["n"] == {"null", "int"}
    assert meta["field_types"]["n"] == ["int", "null"]


def test_size_is_the_encoded_size_of_the_rows_there_after_any_mix_of_runs() -> None:
    """``size_bytes`` (size_bytes_estimate) counts each row as it is encoded: written
    rows less those they replaced or removed, also when a run writes a key twice."""
    rng = random.Random(11)
    for kind in (RowCollection, KvCollection):
        c = kind("c")
        for _ in range(200):
            run = []
            for _ in range(rng.randrange(1, 12)):
                key = f"k{rng.randrange(40)}"
                op = rng.choice((PUT, UPDATE, UPDATE, DELETE))
                row = None
                if op != DELETE:
                    row = {c.key_field: key, "v": "x" * rng.randrange(0, 300), "n": rng.random()}
                run.append((op, key, row, None))
            c.apply_run(run)
            assert c.size_bytes == sum(len(codec.pack(r)) for r in c.rows.values())
