"""What a load builds is kept out of the cyclic collector's later full collections."""

from __future__ import annotations

import gc

from nodedb_server.storage.gcpause import gc_paused


def test_a_load_leaves_its_objects_frozen_and_the_collector_on() -> None:
    enabled = gc.isenabled()
    gc.unfreeze()
    try:
        with gc_paused():
            assert not gc.isenabled()
            with gc_paused():  # a second loader on another thread shares the pause
                rows = [{"id": i} for i in range(10_000)]
            assert not gc.isenabled()
        assert gc.isenabled() == enabled
        assert gc.get_freeze_count() >= len(rows)
    finally:
        gc.unfreeze()
