"""The parse cache is bounded by the text it holds, not only by its number of entries:
a bulk load of distinct multi-row INSERTs must not leave their parsed trees in memory."""

from __future__ import annotations

import gc
import sys
import threading

from nodedb_server.sql import parse


def _insert(i: int, rows: int) -> str:
    body = ", ".join(f"{{ id: 'd{i}_{j}', pad: '{'p' * 100}' }}" for j in range(rows))
    return f"INSERT INTO docs [ {body} ]"


def test_long_statements_are_parsed_but_not_held() -> None:
    parse._cache.clear()
    parse._cached_text = 0
    big = _insert(0, 200)
    assert len(big) > parse.CACHE_MAX_TEXT
    first = parse.parse(big)
    assert parse.parse(big) is not first  # parsed again, not cached
    assert big not in parse._cache and parse._cached_text == 0


def test_short_statements_are_held_until_the_text_budget_is_spent() -> None:
    parse._cache.clear()
    parse._cached_text = 0
    texts = [_insert(i, 40) for i in range(2 * parse.CACHE_TEXT_BYTES // len(_insert(0, 40)))]
    assert all(len(t) <= parse.CACHE_MAX_TEXT for t in texts)
    for t in texts:
        parse.parse(t)
    held = sum(len(t) for t in parse._cache)
    assert held == parse._cached_text <= parse.CACHE_TEXT_BYTES
    assert texts[-1] in parse._cache and texts[0] not in parse._cache  # oldest went first
    again = parse.parse(texts[-1])
    assert again is parse.parse(texts[-1])  # a repeated statement is parsed once


def test_cache_stays_consistent_when_threads_parse_at_once() -> None:
    """Long statements are parsed on worker threads; the same text may be parsed on
    several at once, and each must leave the cache's accounting exact."""
    parse._cache.clear()
    parse._cached_text = 0
    texts = [_insert(i, 5) for i in range(40)]
    failures: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for j in range(len(texts) * 3):
                parse.parse(texts[(j + offset) % len(texts)])
        except BaseException as e:  # reported below, from the main thread
            failures.append(e)

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, to meet the races
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        sys.setswitchinterval(old_interval)
    assert failures == []
    assert parse._cached_text == sum(len(t) for t in parse._cache)
    assert set(parse._cache) == set(texts)


def test_a_long_statement_leaves_no_cycles_for_the_collector() -> None:
    """sqlglot's tree links each node to its parent; left to the cyclic collector, a long
    statement's tree was freed by whichever thread ran the next full collection, most
    often the event loop (0.3 s for a 20,000-row INSERT)."""
    rows = ", ".join(f"('k{i}', 'name {i}', {i}, {i}.5)" for i in range(500))
    gc.collect()
    gc.disable()
    try:
        parse.parse(f"INSERT INTO unseen_c (id, name, n, f) VALUES {rows}")
        assert gc.collect() < 100  # what a tree of 500 rows would leave: about 3,500
    finally:
        gc.enable()
