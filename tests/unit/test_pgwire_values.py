"""Bind parameters decoded and result rows encoded by type and format code."""

from __future__ import annotations

import struct

import pytest

from nodedb_server import types as t
from nodedb_server.errors import DBError
from nodedb_server.pgwire import messages as m
from nodedb_server.pgwire.values import bind_params, row_description, row_encoders, row_values


def bind(params: tuple[bytes | None, ...], formats: tuple[int, ...] = ()) -> m.Bind:
    return m.Bind("", "s1", formats, params, ())


def test_text_binary_and_null_parameters() -> None:
    event = bind((b"42", struct.pack("!q", 7), None), (0, 1, 0))
    assert bind_params(event, [t.INT8, t.INT8, t.TEXT]) == [42, 7, None]


def test_one_format_code_applies_to_every_parameter() -> None:
    event = bind((struct.pack("!q", 1), struct.pack("!q", 2)), (1,))
    assert bind_params(event, [t.INT8, t.INT8]) == [1, 2]


def test_a_parameter_count_mismatch_is_an_error_naming_the_statement() -> None:
    with pytest.raises(DBError) as e:
        bind_params(bind((b"40",)), [t.INT8, t.INT8])
    assert e.value.sqlstate == "08P01" and e.value.severity == "ERROR"
    assert e.value.message == (
        'bind message supplies 1 parameters, but prepared statement "s1" requires 2'
    )


def test_a_text_parameter_that_is_not_utf8_is_22021() -> None:
    with pytest.raises(DBError) as e:
        bind_params(bind((b"\xff\xfe",)), [t.TEXT])
    assert e.value.sqlstate == "22021"


def test_row_description_gives_each_column_its_type_size_and_format() -> None:
    description = row_description([("id", t.TEXT), ("n", t.INT8)], (1,))
    assert description.fields == [
        m.Field("id", t.TEXT, t.TYPE_SIZES.get(t.TEXT, -1), -1, 1),
        m.Field("n", t.INT8, 8, -1, 1),
    ]


def test_row_values_in_text_and_binary() -> None:
    columns = [("id", t.TEXT), ("n", t.INT8)]
    assert row_values(row_encoders(columns, ()), ("a", 5), columns) == [b"a", b"5"]
    binary = row_values(row_encoders(columns, (0, 1)), ("a", None), columns)
    assert binary == [b"a", None]
    assert row_values(row_encoders(columns, (1,)), ("a", 5), columns)[1] == struct.pack("!q", 5)


def test_a_value_that_does_not_fit_its_column_type_is_22000() -> None:
    columns = [("n", t.INT8)]
    with pytest.raises(DBError, match='field "n" does not fit its column type') as e:
        row_values(row_encoders(columns, (1,)), ("not a number",), columns)
    assert e.value.sqlstate == "22000"
