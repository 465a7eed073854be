"""A restore writes the backup's encoded items to its checkpoint as they are, so the
bytes it hands on for each batch must be exactly the encodings of that batch's items,
wherever the envelope's chunks cut through them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodedb_server.backup.envelope import EnvelopeError
from nodedb_server.backup.restore import _batches
from nodedb_server.storage import codec

item = st.one_of(
    st.lists(
        st.one_of(st.text(max_size=40), st.integers(-(2**63), 2**63 - 1), st.binary(max_size=300)),
        max_size=4,
    ),
    st.dictionaries(
        st.text(max_size=8), st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=200))
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(item, min_size=1, max_size=30), st.data())
def test_batches_carry_the_exact_bytes_of_their_items(items: list[object], data) -> None:  # type: ignore[no-untyped-def]
    encoded = b"".join(codec.pack(i) for i in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(encoded)), max_size=8)))
    chunks = [encoded[a:b] for a, b in zip([0, *cuts], [*cuts, len(encoded)], strict=True)]
    seen: list[object] = []
    batches = list(_batches(iter(chunks), seen.append))
    assert seen == items
    assert batches[0] == (codec.pack(items[0]), 1)  # the first item comes alone
    assert sum(n for _, n in batches) == len(items)
    at = 0
    for raw, n in batches:
        assert raw == b"".join(codec.pack(i) for i in items[at : at + n])
        at += n


def test_a_section_cut_inside_an_item_is_refused() -> None:
    encoded = codec.pack({"part": "c1"}) + codec.pack(["k", {"a": "x" * 50}])
    with pytest.raises(EnvelopeError, match="ends inside an item"):
        list(_batches(iter([encoded[:-5]]), lambda _item: None))
