"""``x IN (..)`` over a long list of constants: the same answers as comparing item by
item (PostgreSQL's rules for NULL and untyped text), at a cost that does not grow with
the list, since each row of a scan pays it."""

from __future__ import annotations

import time
from typing import Any

import pytest

from nodedb_server.sql.expr import Const, Ctx, Field, In, Param, compare


def _one_by_one(v: Any, items: list[Any]) -> bool | None:
    if v is None:
        return None
    saw_null = False
    for i in items:
        r = compare("=", v, i)
        if r:
            return True
        saw_null = saw_null or r is None
    return None if saw_null else False


LISTS = [[1, 2, 3], ["a", "b"], [1, None], [1, "2"], [True, False], [1.5, 2.0], [2**70, 3]]
VALUES = [1, 2, 4, "a", "c", "2", "1.5", 2.0, 1.5, True, None, 2**70]


@pytest.mark.parametrize("items", LISTS, ids=[repr(x) for x in LISTS])
def test_same_answer_as_comparing_one_by_one(items: list[Any]) -> None:
    expr = In(Field("x"), [Const(i) for i in items])
    for v in VALUES:
        try:
            expected: Any = _one_by_one(v, items)
        except Exception as e:
            expected = type(e)
        try:
            got: Any = expr.eval({"x": v}, Ctx())
        except Exception as e:
            got = type(e)
        assert got == expected, (v, items)


def test_parameters_in_the_list_are_compared() -> None:
    expr = In(Field("x"), [Const(1), Param(0)])
    assert expr.eval({"x": 7}, Ctx(params=[7])) is True


def test_cost_per_row_does_not_grow_with_the_list() -> None:
    rows = [{"x": i} for i in range(2000)]

    def seconds(n: int) -> float:
        expr = In(Field("x"), [Const(10**9 + i) for i in range(n)])  # none matches
        start = time.perf_counter()
        for row in rows:
            assert expr.eval(row, Ctx()) is False
        return time.perf_counter() - start

    short = min(seconds(10) for _ in range(3))
    # Compared one by one, 10,000 items cost about 1,000 times 10 items.
    assert seconds(10_000) < 50 * short
