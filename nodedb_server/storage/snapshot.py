"""Copy-on-write views: an engine's contents as of one LSN, without copying them.

A checkpoint or a backup must read every collection as it was at one LSN
while writes go on, and must not copy the tenant to do it (BENCH.md W5:
memory flat whatever the size). A ``CowView`` over one of an engine's dicts
lists only its keys when it opens (one pointer per key; the values are not
touched) and, while it is open, keeps the *pre-image* of every key a writer
changes: the value the key had when the view opened, recorded the first time
it changes. Reading key k through the view gives its pre-image if it has one,
else the live value. Memory grows with the writes made while the view is
open, not with the size of the collection.

Threads. A view is opened, and pre-images are recorded, on the event loop;
it is read on a worker thread. The two meet only in single dict operations
(``get``, ``__setitem__``, ``__contains__``), which CPython performs
atomically under the GIL, and in this order:

- the writer records the pre-image *before* it changes anything of the key;
- the reader reads the live value *before* it looks for a pre-image.

So if the reader saw any part of a change, the pre-image is already there
and replaces what it read; if there is no pre-image yet, nothing it read had
changed. A reader that takes several values for one key (a row and its
expiry time) gets either all of them as of the snapshot, or the pre-image.

The list of open views belongs to the engine and is only changed on the
event loop (views are added when opened and pruned by writers once closed);
a worker that finishes a view only marks it closed and drops its data.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

# A key that did not exist when the view opened (its pre-image), or a read
# that found nothing. None, so that ``dict.get`` is a reader as it stands: no
# value an engine stores is None (rows are dicts, edges lists, CRDT bytes).
ABSENT: Any = None
_NO_PRE: Any = object()
READ_BATCH = 1024


class CowView:
    __slots__ = ("keys", "pre", "closed")

    def __init__(self, keys: list[Any]):
        self.keys = keys
        self.pre: dict[Any, Any] = {}
        self.closed = False

    def close(self) -> None:
        """Release what the view holds; safe from any thread, and more than once."""
        self.closed = True
        self.keys = []
        self.pre = {}

    def read(self, live: Callable[[Any], Any]) -> Iterator[tuple[Any, Any]]:
        """(key, value) as of the snapshot for each key that existed then; ``live(key)``
        returns the current value or ABSENT. The view closes when this ends.

        Keys are read a batch at a time: all live values first, then the pre-images.
        That keeps the order above for every key, and lets a batch for which no
        pre-image exists (no key of the view has changed yet) skip the per-key look:
        a change made after that look was made after the live reads too."""
        try:
            pre, keys = self.pre, self.keys
            for i in range(0, len(keys), READ_BATCH):
                batch = keys[i : i + READ_BATCH]
                values = list(map(live, batch))
                if pre:
                    get = pre.get
                    for j, key in enumerate(batch):
                        old = get(key, _NO_PRE)
                        if old is not _NO_PRE:
                            values[j] = old
                if None in values:
                    yield from [(k, v) for k, v in zip(batch, values, strict=True) if v is not None]
                else:
                    yield from zip(batch, values, strict=True)
        finally:
            self.close()


class Views:
    """The open views of one dict, and the writer's side of the protocol."""

    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open: list[CowView] = []

    def __bool__(self) -> bool:
        return bool(self.open)

    def new(self, keys: list[Any]) -> CowView:
        """Open a view (on the event loop)."""
        self.open = [v for v in self.open if not v.closed]
        view = CowView(keys)
        self.open.append(view)
        return view

    def before_change(self, key: Any, pre_image: Callable[[], Any]) -> None:
        """Call on the event loop before changing ``key``; ``pre_image()`` gives its
        current value, or ABSENT, and is called at most once per open view."""
        closed = False
        for view in self.open:
            if view.closed:
                closed = True
            elif key not in view.pre:
                view.pre[key] = pre_image()
        if closed:
            self.open = [v for v in self.open if not v.closed]

    def close_all(self) -> None:
        for view in self.open:
            view.close()
        self.open = []


class SnapshotItems:
    """A part's items read through a view: iterable once, closable without reading."""

    __slots__ = ("_view", "_items")

    def __init__(self, view: CowView, items: Iterator[Any]):
        self._view = view
        self._items = items

    def __iter__(self) -> Iterator[Any]:
        return self._items

    def close(self) -> None:
        self._view.close()


class Prefetch:
    """A part whose items are made on a helper thread, a few ahead of the reader.

    For parts whose items cost work that releases the GIL (a timeseries part encodes
    each piece to Parquet in Arrow's C++): started when a checkpoint or backup begins,
    the encoding overlaps with the packing of the parts written before it. At most
    ``depth`` made items wait; ``prepare`` links a snapshot's Prefetch parts so that
    only the one being read and the next one run.
    """

    def __init__(self, make: Callable[[], Iterator[Any]], depth: int = 2):
        self._make = make
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.next: Prefetch | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prefetch", daemon=True)
            self._thread.start()

    def _put(self, entry: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._make():
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except BaseException as e:  # handed to the reader, raised there
            self._put(("error", e))

    def __iter__(self) -> Iterator[Any]:
        self.start()
        if self.next is not None:
            self.next.start()
        while True:
            kind, value = self._queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value

    def close(self) -> None:
        """Stop the helper and let go of what it made; safe more than once."""
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                with contextlib.suppress(queue.Empty):
                    self._queue.get(timeout=0.05)
            self._thread = None
        while not self._queue.empty():
            self._queue.get_nowait()


def prepare(parts: list[tuple[str, Any]]) -> None:
    """Before a checkpoint or backup writes ``parts``: start the first Prefetch part and
    chain the rest, each starting as the one before it is read."""
    chain = [items for _name, items in parts if isinstance(items, Prefetch)]
    for a, b in zip(chain, chain[1:], strict=False):
        a.next = b
    if chain:
        chain[0].start()


def release(parts: list[tuple[str, Any]]) -> None:
    """Close every view and helper behind ``parts`` (after writing them, or giving up)."""
    for _name, items in parts:
        if isinstance(items, SnapshotItems | Prefetch):
            items.close()
