"""What a schemaless collection records of its fields' types (SELECT * and Describe
read it): every type a field has held, in the order fields first appear."""

from __future__ import annotations

from nodedb_server.engines.base import RowCollection
from nodedb_server.storage.records import OpKind

PUT = int(OpKind.INSERT)


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
