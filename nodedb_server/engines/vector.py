"""Vector indexes: HNSW through usearch, with exact search alongside as the check.

Distances (the same in SEARCH and ``vector_distance``):
  cosine  1 - cos(a, b)
  l2      Euclidean distance |a - b|
  ip      1 - a . b            (smaller is more similar, as for the others)

usearch labels are integers, so each index maps document keys to labels.
An update removes the old vector and adds the new one; a delete removes it.
The index is rebuilt from the stored documents when a checkpoint is loaded.

Vectors written one at a time are held back and added to usearch in batches, one
multi-threaded call each (about 2.2x the rate of single adds on two cores): on the event
loop, ``ADD_BATCH`` held asks for an add at the loop's next turn, after the commit that
put them has answered; a search adds what is held first (``flush``, on the event loop).
Searches of one index asked in the same turn of the event loop are answered by one
batched, two-threaded usearch call (``search_soon``). An add cannot run beside Python on
a worker thread: usearch's add takes the GIL for each vector (measured: 370 vectors/s
on two threads while the loop ran Python, 10,400/s alone).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from usearch.index import BatchMatches, Index

METRICS = {"cosine": "cos", "l2": "l2sq", "ip": "ip"}
# Below this many vectors a SEARCH compares against every vector (usearch's exact
# mode): about 2 ms at 20,000 x 128 on one core, and recall is then exact.
EXACT_BELOW = 20_000
# HNSW parameters an index may set (WITH m = .., ef_construction = .., ef_search = ..).
HNSW_OPTIONS = ("m", "ef_construction", "ef_search")
# Those of an index created without them: pgvector's (m 16, ef_construction 64, and
# ef_search 40 there, 64 here, usearch's). usearch's own ef_construction of 128 adds
# half as fast for the same recall on W8's data (100,000 x 128 clustered, 2 threads):
# 6,400 vectors/s at 128, 11,900 at 64, recall@10 1.000 at both; at 40, 26,600/s but
# recall 0.969.
HNSW_DEFAULTS = {"m": 16, "ef_construction": 64, "ef_search": 64}
BUILD_THREADS = 2  # threads for building an index from stored rows (CREATE, checkpoint load)
# Vectors held before one batched add. usearch on two threads: single adds 6,200/s,
# batches of 50 13,300/s, of 250 14,200/s (10,000 x 128 into 10,000, cosine); 64 holds
# the event loop about 5 ms a batch.
ADD_BATCH = 64
# On the event loop, ADD_BATCH held asks for one add at the next turn of the loop, after
# the statement or commit that put them has answered: a commit of many rows is added in
# one call, and its client writes its next batch meanwhile. Held this many, a put adds
# at once, so a long transaction does not hold them all.
HOLD_MAX = 4096
# Threads for one batch of searches asked together (search_soon).
SEARCH_THREADS = 2


_FLOATS = frozenset({float})
_NUMBERS = frozenset({float, int})


# The list as_vector looked at last and its answer, as one tuple (rebound whole, so
# threads never see half of one): an INSERT asks three times of the same list (the
# dimension check, the index, the field's type), which is 3.4 us each at 128 floats.
# Stored values are never changed in place, so the same list has the same answer.
_last: tuple[Any, list[float] | None] = (None, None)


def as_vector(value: Any) -> list[float] | None:
    """The value as a vector if it is a non-empty list of numbers, else None. A list of
    floats is returned as it is (callers only read it)."""
    global _last
    if not isinstance(value, list) or not value:
        return None
    last = _last
    if last[0] is value:
        return last[1]
    vec = _vector_of(value)
    _last = (value, vec)
    return vec


def _vector_of(value: list[Any]) -> list[float] | None:
    kinds = set(map(type, value))  # one C-level pass; bool is its own type, not int
    if kinds <= _FLOATS:
        return value
    if kinds <= _NUMBERS:
        return [float(x) for x in value]
    for x in value:  # subclasses of int or float (a numpy scalar, say)
        if isinstance(x, bool) or not isinstance(x, int | float):
            return None
    return [float(x) for x in value]


def distance(metric: str, a: list[float], b: list[float]) -> float:
    va = np.asarray(a, dtype=np.float32)
    vb = np.asarray(b, dtype=np.float32)
    if metric == "l2":
        return float(np.linalg.norm(va - vb))
    if metric == "ip":
        return float(1.0 - np.dot(va, vb))
    na, nb = float(np.linalg.norm(va)), float(np.linalg.norm(vb))
    if na == 0.0 or nb == 0.0:
        return 1.0
    return float(1.0 - np.dot(va, vb) / (na * nb))


class VectorIndex:
    def __init__(
        self,
        name: str,
        field: str | None,
        metric: str,
        dim: int,
        options: dict[str, int] | None = None,
    ):
        self.name = name
        self.field = field  # None until bound to the first field holding numeric arrays
        self.metric = metric
        self.dim = dim
        o = {**HNSW_DEFAULTS, **(options or {})}
        self._index = Index(
            ndim=dim,
            metric=METRICS[metric],
            dtype="f32",
            connectivity=o.get("m"),
            expansion_add=o.get("ef_construction"),
            expansion_search=o.get("ef_search"),
        )
        self._labels: dict[Any, int] = {}
        self._keys: dict[int, Any] = {}
        self._next_label = 1
        self._held: dict[int, list[float]] = {}  # by label: put, not yet in usearch
        self._flush_soon = False  # a flush is asked for the next turn of the event loop
        # Searches waiting for the end of this turn of the event loop (search_soon).
        self._asked: list[tuple[list[float], int, asyncio.Future[list[tuple[Any, float]]]]] = []

    def __len__(self) -> int:
        return len(self._labels)

    def bind_from(self, fields: Iterable[str], row: dict[str, Any]) -> None:
        """Bind to the first of ``fields`` whose value in ``row`` is a numeric array."""
        if self.field is not None:
            return
        for f in fields:
            if as_vector(row.get(f)) is not None:
                self.field = f
                return

    def put(self, key: Any, value: Any) -> None:
        self.remove(key)
        vec = as_vector(value)
        if vec is None or len(vec) != self.dim:
            return
        self._hold(key, vec)
        held = len(self._held)
        if held >= HOLD_MAX:
            self.flush()
        elif held >= ADD_BATCH and not self._flush_soon:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # a worker thread (an index catching up): add now
                self.flush()
            else:
                self._flush_soon = True
                loop.call_soon(self.flush)

    def _hold(self, key: Any, vec: list[float]) -> None:
        """Give ``key`` a new label and hold its vector for the next flush."""
        label = self._next_label
        self._next_label += 1
        self._labels[key] = label
        self._keys[label] = key
        self._held[label] = vec

    def flush(self) -> None:
        """Add the vectors held back to usearch, in one call; on the event loop, where
        ``put`` and ``remove`` run."""
        self._flush_soon = False
        held, self._held = self._held, {}
        if held:
            labels = np.fromiter(held, dtype=np.uint64, count=len(held))
            self._index.add(
                labels, np.asarray(list(held.values()), dtype=np.float32), threads=BUILD_THREADS
            )

    def build(self, items: Iterable[tuple[Any, Any]]) -> None:
        """Add many (key, value) pairs at once: one multi-threaded usearch call (on a
        worker thread for an index not yet installed, or on the loop)."""
        for key, value in items:
            vec = as_vector(value)
            if vec is not None and len(vec) == self.dim:
                self._hold(key, vec)
        self.flush()

    def remove(self, key: Any) -> None:
        label = self._labels.pop(key, None)
        if label is not None:
            del self._keys[label]
            if self._held.pop(label, None) is None:
                self._index.remove(label)

    def search(self, query: list[float], k: int) -> list[tuple[Any, float]]:
        """Approximate nearest neighbours (HNSW), nearest first, among the vectors in
        usearch: the caller flushes first (``search_soon`` does)."""
        if not self._labels or k <= 0:
            return []
        exact = len(self._labels) < EXACT_BELOW
        found = self._index.search(np.asarray(query, dtype=np.float32), k, exact=exact)
        return self._matches(found.keys, found.distances)

    def search_soon(self, query: list[float], k: int) -> asyncio.Future[list[tuple[Any, float]]]:
        """``search`` after a flush, answered at the end of this turn of the event loop
        together with every other search of this index asked in it: one usearch call
        on ``SEARCH_THREADS`` threads for all of them (see ``_answer_asked``)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[tuple[Any, float]]] = loop.create_future()
        if k <= 0:
            fut.set_result([])
            return fut
        if not self._asked:
            loop.call_soon(self._answer_asked)
        self._asked.append((query, k, fut))
        return fut

    def _answer_asked(self) -> None:
        # Sessions woken by the same poll of the sockets all run before this callback,
        # so a batch holds every search that arrived together. W8 (16 connections,
        # 100,000 x 128): 2,600 queries/s one at a time, 3,000-3,100 in batches on one
        # thread, 3,700-4,100 on two.
        asked = [a for a in self._asked if not a[2].done()]  # a cancelled statement's
        self._asked = []
        if not asked:
            return
        try:
            self.flush()
            if len(asked) == 1 or not self._labels:
                for query, k, fut in asked:
                    fut.set_result(self.search(query, k))
                return
            top = max(k for _, k, _ in asked)
            queries = np.asarray([q for q, _, _ in asked], dtype=np.float32)
            exact = len(self._labels) < EXACT_BELOW
            found = self._index.search(queries, top, exact=exact, threads=SEARCH_THREADS)
            assert isinstance(found, BatchMatches)
        except Exception as e:  # each asker gets the error, as a search of its own would
            for _, _, fut in asked:
                if not fut.done():
                    fut.set_exception(e)
            return
        for i, (_, k, fut) in enumerate(asked):
            n = min(k, int(found.counts[i]))
            fut.set_result(self._matches(found.keys[i][:n], found.distances[i][:n]))

    def _matches(self, labels: np.ndarray, dists: np.ndarray) -> list[tuple[Any, float]]:
        """(key, distance) of usearch's labels, skipping any no longer mapped."""
        out = []
        keys = self._keys
        for label, dist in zip(labels.tolist(), dists.tolist(), strict=True):
            key = keys.get(label)
            if key is not None:
                out.append((key, self._report(dist)))
        return out

    def _report(self, raw: float) -> float:
        return math.sqrt(max(raw, 0.0)) if self.metric == "l2" else raw
