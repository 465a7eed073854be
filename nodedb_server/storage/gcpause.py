"""Pausing Python's cyclic garbage collector while a tenant is loaded or restored.

Loading a checkpoint creates millions of dicts and lists that all survive.
The cyclic collector, triggered by allocation counts, would traverse the
growing heap again and again; measured here, that doubles the time to load
rows from msgpack. Rows hold no reference cycles, so nothing is lost by not
looking for cycles meanwhile; the collector resumes when the last loader
finishes (loads on several threads share one counter).

When it resumes, what the loads built is frozen (``gc.freeze``): moved out of
the collector's sight for good. Otherwise the next full collection walks every
loaded row while holding the GIL, a stall of every session on every tenant
(0.44 s for a million small documents, measured here; nothing after freezing).
Frozen objects are still freed by reference counting when they are dropped.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_active = 0
_was_enabled = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    global _active, _was_enabled
    with _lock:
        if _active == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                gc.freeze()
                if _was_enabled:
                    gc.enable()
