"""Graph edges over a collection: adjacency kept both ways, so neighbours cost O(degree).

An edge is identified by (source, target, label); inserting one that exists
replaces its properties. Node ids are text and need not be documents.
Traversals are breadth-first; PATH is a shortest path by hop count;
PAGERANK and WCC run over every node that has an edge.

Written here rather than taken from a graph library: the engine must apply
WAL operations one at a time and answer neighbour queries in O(degree),
which a plain pair of dicts does with no conversion; the algorithms are a
few lines each over that structure.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

from nodedb_server.storage.snapshot import ABSENT, SnapshotItems, Views

Props = dict[str, Any]


class EdgeStore:
    def __init__(self) -> None:
        self.out: dict[str, dict[tuple[str, str], Props]] = {}
        self.inn: dict[str, dict[tuple[str, str], Props]] = {}
        self.count = 0
        self.views = Views()  # open snapshots of ``out``, by source (storage/snapshot.py)

    def put(self, src: str, dst: str, label: str, props: Props) -> bool:
        """Add or replace an edge; True if it is new."""
        if self.views.open:
            self.views.before_change(src, lambda: self._out_copy(src))
        outs = self.out.setdefault(src, {})
        new = (dst, label) not in outs
        outs[(dst, label)] = props
        self.inn.setdefault(dst, {})[(src, label)] = props
        self.count += new
        return new

    def delete(self, src: str, dst: str, label: str) -> bool:
        outs = self.out.get(src)
        if outs is None or (dst, label) not in outs:
            return False
        if self.views.open:
            self.views.before_change(src, lambda: self._out_copy(src))
        del outs[(dst, label)]
        if not outs:
            del self.out[src]
        ins = self.inn[dst]
        del ins[(src, label)]
        if not ins:
            del self.inn[dst]
        self.count -= 1
        return True

    def _out_copy(self, src: str) -> Any:
        """A source's out-edges as a list, or ABSENT. On a worker thread the copy can meet
        a change made on the loop (RuntimeError); the view then holds the pre-image,
        recorded before that change, and uses it instead of this read."""
        outs = self.out.get(src)
        if outs is None:
            return ABSENT
        try:
            return list(outs.items())
        except RuntimeError:
            return ABSENT

    def snapshot(self) -> SnapshotItems:
        """[source, target, label, props] items as of now (storage/snapshot.py)."""
        view = self.views.new(list(self.out))

        def items() -> Iterator[list[Any]]:
            for src, outs in view.read(self._out_copy):
                for (dst, label), props in outs:
                    yield [src, dst, label, props]

        return SnapshotItems(view, items())

    def overlaid(self, writes: list[tuple[list[str], Props | None]]) -> EdgeStore:
        """These edges with ``writes`` applied (props None: a delete), as a transaction
        sees them; the nodes they touch are copied, every other node's edges shared."""
        view = EdgeStore()
        view.out, view.inn, view.count = dict(self.out), dict(self.inn), self.count
        for src, dst in {(src, dst) for (src, dst, _), _ in writes}:
            if src in view.out:
                view.out[src] = dict(view.out[src])
            if dst in view.inn:
                view.inn[dst] = dict(view.inn[dst])
        for (src, dst, label), props in writes:
            if props is None:
                view.delete(src, dst, label)
            else:
                view.put(src, dst, label, props)
        return view

    def get(self, src: str, dst: str, label: str) -> Props | None:
        return self.out.get(src, {}).get((dst, label))

    def nodes(self) -> list[str]:
        return sorted(set(self.out) | set(self.inn))

    def neighbors(
        self, node: str, label: str | None = None, direction: str = "out"
    ) -> list[tuple[str, str, Props]]:
        found: list[tuple[str, str, Props]] = []
        if direction in ("out", "both"):
            found += [
                (d, lab, p)
                for (d, lab), p in self.out.get(node, {}).items()
                if label is None or lab == label
            ]
        if direction in ("in", "both"):
            found += [
                (s, lab, p)
                for (s, lab), p in self.inn.get(node, {}).items()
                if label is None or lab == label
            ]
        return found

    def _next(self, node: str, label: str | None, direction: str) -> list[str]:
        seen: dict[str, None] = {}
        for n, _, _ in self.neighbors(node, label, direction):
            seen.setdefault(n)
        return list(seen)

    def traverse(
        self, start: str, depth: int, label: str | None = None, direction: str = "out"
    ) -> list[tuple[str, int]]:
        """Breadth-first from ``start``: each reachable node once, with its hop count."""
        found = {start: 0}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            d = found[node]
            if d >= depth:
                continue
            for n in self._next(node, label, direction):
                if n not in found:
                    found[n] = d + 1
                    queue.append(n)
        return list(found.items())

    def shortest_path(
        self,
        start: str,
        target: str,
        max_depth: int,
        label: str | None = None,
        direction: str = "out",
    ) -> list[str]:
        """Nodes of a shortest path (start first), or [] when none within ``max_depth``."""
        if start == target:
            return [start]
        parent: dict[str, str | None] = {start: None}
        frontier = [start]
        for _ in range(max_depth):
            nxt = []
            for node in frontier:
                for n in self._next(node, label, direction):
                    if n in parent:
                        continue
                    parent[n] = node
                    if n == target:
                        path = [n]
                        while parent[path[-1]] is not None:
                            path.append(parent[path[-1]])  # type: ignore[arg-type]
                        return path[::-1]
                    nxt.append(n)
            frontier = nxt
            if not frontier:
                break
        return []

    def pagerank(self, damping: float = 0.85, iterations: int = 20) -> dict[str, float]:
        """Power iteration; a node with no out-edges spreads its rank over every node."""
        nodes = self.nodes()
        n = len(nodes)
        if n == 0:
            return {}
        rank = dict.fromkeys(nodes, 1.0 / n)
        out_deg = {s: len({d for d, _ in outs}) for s, outs in self.out.items()}
        for _ in range(iterations):
            dangling = sum(rank[v] for v in nodes if v not in out_deg)
            base = (1.0 - damping) / n + damping * dangling / n
            new = dict.fromkeys(nodes, base)
            for src, outs in self.out.items():
                targets = {d for d, _ in outs}
                share = damping * rank[src] / len(targets)
                for d in targets:
                    new[d] += share
            rank = new
        return rank

    def components(self) -> dict[str, int]:
        """Weakly connected components, numbered from 0 in order of their smallest node."""
        comp: dict[str, int] = {}
        next_id = 0
        for node in self.nodes():
            if node in comp:
                continue
            comp[node] = next_id
            queue = deque([node])
            while queue:
                cur = queue.popleft()
                for n in self._next(cur, None, "both"):
                    if n not in comp:
                        comp[n] = next_id
                        queue.append(n)
            next_id += 1
        return comp
