"""One tenant at run time: its state, its durable store, and the commit path.

Commit order, all on the event loop with no await in between: the caller
validates against the current state, ``commit_ops`` queues the WAL record
(taking the next LSN) and applies the operations to the state, so LSN order
and apply order are the same; then it awaits the group-commit fsync before
returning, so nothing is acknowledged before it is durable.

If the WAL breaks (failed write or fsync, full disk), the tenant's state is
thrown away and rebuilt from disk by the same recovery that runs at boot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nodedb_server.engines.kv import KvCollection
from nodedb_server.engines.vector import VectorIndex
from nodedb_server.errors import (
    CannotConnectNow,
    DBError,
    DiskFull,
    StatementTooComplex,
    StorageFailure,
)
from nodedb_server.events.changes import Positions
from nodedb_server.events.live import LivePlane
from nodedb_server.events.recent import RecentRecords
from nodedb_server.storage import codec
from nodedb_server.storage.checkpoint import CheckpointInfo
from nodedb_server.storage.fsio import FileIO
from nodedb_server.storage.records import MAX_BODY, OpKind, Record, RecordKind
from nodedb_server.storage.recovery import RecoveryReport, Store, WalSettings
from nodedb_server.storage.uploads import Storage
from nodedb_server.storage.wal import RecordTooLarge, WalBroken
from nodedb_server.tenants.catalog import Op, TenantState

log = logging.getLogger("nodedb.tenant")

# recovering: opening (recovery, then a WAL segment; its connections get 57P03);
# online: serving statements; restoring: a restore is replacing it (begin_restore until
# its switch or abort); closed: shut down, dropped or replaced, never reopened as this
# object; failed: it could not be opened (``failure`` says why), and only DROP, PURGE
# or a RESTORE over it run.
TenantStatus = Literal["recovering", "online", "restoring", "closed", "failed"]
# How often expired KV keys are reclaimed (each becomes a WAL DELETE) and dropped
# collections past their retention window are purged.
TTL_SWEEP_SECONDS = 1.0
# deactivated_collection_retention_days when nobody set it (ALTER SYSTEM SET).
RETENTION_DAYS = 7


class Tenant:
    def __init__(
        self,
        tenant_id: int,
        name: str,
        root: Path,
        key: bytes,
        fs: FileIO,
        settings: WalSettings,
        checkpoint_wal_bytes: int,
        retention_ms: Callable[[], int] = lambda: RETENTION_DAYS * 86_400_000,
        storage: Storage | None = None,
    ):
        self.id = tenant_id
        self.name = name
        self.root = root
        self._aead = AESGCM(key)
        self._fs = fs
        self._settings = settings
        self._checkpoint_wal_bytes = checkpoint_wal_bytes
        self.retention_ms = retention_ms
        self._storage = storage
        self.state = TenantState()
        self.recent = RecentRecords()  # the newest durable records, for change streams
        self.wal_positions = Positions()  # where change reads from segment files left off
        self.live = LivePlane()  # LIVE SELECT subscriptions
        self.store = self._new_store(self.state)
        self.status: TenantStatus = "recovering"
        self.failure = ""  # why it failed, when it did
        self._reload_lock = asyncio.Lock()
        self._sweeper: asyncio.Task[None] | None = None

    def _new_store(self, state: TenantState) -> Store:
        store = Store(
            f"tenant {self.name}",
            self.root,
            self.id,
            self._aead,
            self._fs,
            self._settings,
            state,
            owner=self.name,
            rel=f"tenants/{self.id}",
            storage=self._storage,
            retain=lambda: self.state.retained_from(),
        )
        store.on_durable = self._on_durable
        return store

    def _on_durable(self, records: list[Record]) -> None:
        """Each batch the WAL made durable: the Event Plane's only feed."""
        self.recent.add(records)
        self.live.feed(records)

    async def open(self) -> RecoveryReport:
        report = await self.store.open()
        self.status = "online"
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_ttl(), name=f"ttl-{self.name}")
        return report

    def drop_state(self) -> list[Any]:
        """After ``close``: let go of the in-memory data, so that a restore loading the
        tenant's replacement does not hold both at once. Returns the only references
        left to it: freeing millions of rows takes a while, and the caller clears the
        list on a worker thread rather than stall the event loop."""
        held: list[Any] = [self.state, self.store]
        self.state = TenantState()
        self.store = self._new_store(self.state)
        return held

    async def close(self, checkpoint: bool = True) -> None:
        # Closed from the first await on: a statement arriving while the WAL drains is
        # refused (57P03) rather than appending to a WAL about to stop.
        was_online, self.status = self.status == "online", "closed"
        await self.live.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if checkpoint and was_online and self.store.broken is None:
            try:
                await self.store.checkpoint()
            except Exception:
                log.exception("tenant %s: checkpoint at shutdown failed", self.name)
        await self.store.close()

    @property
    def last_lsn(self) -> int:
        wal = self.store.wal
        return wal.last_lsn if wal is not None else self.state.last_lsn

    # ---- the commit path -----------------------------------------------------------

    async def commit_ops(self, ops: Sequence[Op]) -> int:
        """Log ``ops`` as one atomic record, apply them, and wait until durable."""
        if not ops:
            return self.last_lsn
        self._check_writable()
        wal = self.store.wal
        assert wal is not None
        for op in ops:
            # Checked before the WAL: a value that could not be read back would fail
            # every later replay and checkpoint, not just this statement.
            row = op[3]
            if isinstance(row, dict) and codec.nests_deeper(row, codec.MAX_VALUE_DEPTH + 1):
                raise StatementTooComplex(
                    f"a value nests more than {codec.MAX_VALUE_DEPTH} levels deep",
                    detail=f'In collection "{op[1]}".',
                )
        packed = [codec.pack(op) for op in ops]
        try:
            lsn, fut = wal.append(RecordKind.DATA, codec.pack_array(packed))
        except RecordTooLarge as e:
            raise DBError(
                f"this transaction's changes come to {e.size} bytes, over the "
                f"{MAX_BODY} one WAL record holds; split it into smaller ones",
                sqlstate="54000",
            ) from None
        self.state.apply_ops(ops)
        self.state.last_lsn = self.state.last_data_lsn = lsn
        await self._await_durable(fut)
        self._maybe_checkpoint()
        return lsn

    async def commit_catalog(
        self, action: str, args: dict[str, Any], built: VectorIndex | None = None
    ) -> int:
        self._check_writable()
        wal = self.store.wal
        assert wal is not None
        at_us = time.time_ns() // 1000
        lsn, fut = wal.append(RecordKind.CATALOG, codec.pack([action, args]), at_us)
        self.state.apply_catalog(lsn, at_us // 1000, action, args, built)
        self.state.last_lsn = lsn
        await self._await_durable(fut)
        return lsn

    async def _await_durable(self, fut: asyncio.Future[int]) -> None:
        # A cancelled statement cancels only its wait: the writer skips
        # resolving a cancelled future, and the record is written regardless.
        try:
            await fut
        except WalBroken as e:
            asyncio.get_running_loop().create_task(self._reload_quietly())
            if e.disk_full:
                raise DiskFull("could not extend the WAL: no space left on device") from None
            raise StorageFailure(
                "the write could not be made durable; the tenant is recovering from its WAL"
            ) from None

    def _check_writable(self) -> None:
        if self.status != "online":
            raise CannotConnectNow(f"tenant {self.name!r} is not available ({self.status})")
        if self.store.wal is None or self.store.broken is not None:
            raise StorageFailure(f"tenant {self.name!r} is recovering from a WAL failure; retry")

    async def ensure_healthy(self) -> None:
        """Before a statement: if the WAL broke, recover from disk first."""
        if self.status != "online":
            # Dropped, purged or shut down: never reopen its WAL behind the catalog's back.
            raise CannotConnectNow(f"tenant {self.name!r} is not available ({self.status})")
        if self.store.broken is not None or self.store.wal is None:
            await self.reload()

    async def _reload_quietly(self) -> None:
        with contextlib.suppress(DiskFull):
            await self.reload()

    async def reload(self) -> None:
        """Rebuild the state from disk after a WAL failure, then reopen the WAL.

        The old state (which may hold the failed write) is replaced only by a
        fully recovered one; if the disk is still full, reads see the recovered
        state and writes fail with 53100 until a fresh segment can be opened.
        """
        async with self._reload_lock:
            if self.store.wal is not None and self.store.broken is None:
                return
            if self.store.broken is not None:
                await self.store.close()
                state = TenantState()
                store = self._new_store(state)
                try:
                    await store.recover()
                except OSError as e:
                    log.error("tenant %s: recovery after a WAL failure failed: %s", self.name, e)
                    raise DiskFull(f"tenant storage is not writable: {e.strerror}") from None
                self.state, self.store = state, store
            try:
                await self.store.open_wal()
            except OSError as e:
                log.error("tenant %s: cannot open a new WAL segment: %s", self.name, e)
                raise DiskFull(f"could not open a WAL segment: {e.strerror}") from None
            # A new store (the old one closed its uploads): archiving goes on.
            await self.store.start_uploads()
            log.info("tenant %s: recovered after a WAL failure at LSN %d", self.name, self.last_lsn)

    # ---- background work ------------------------------------------------------------

    def _maybe_checkpoint(self) -> None:
        wal = self.store.wal
        if (
            self._checkpoint_wal_bytes
            and wal is not None
            and wal.bytes_since_checkpoint >= self._checkpoint_wal_bytes
        ):
            wal.bytes_since_checkpoint = 0
            asyncio.get_running_loop().create_task(self.checkpoint())

    async def checkpoint(self) -> CheckpointInfo | None:
        if self.status != "online":
            return None
        try:
            return await self.store.checkpoint()
        except WalBroken:
            return None

    async def _sweep_ttl(self) -> None:
        while True:
            await asyncio.sleep(TTL_SWEEP_SECONDS)
            now = int(time.time() * 1000)
            ops: list[Op] = []
            for meta in self.state.active():
                engine = self.state.engines[meta.name]
                if not isinstance(engine, KvCollection):
                    continue
                for key in engine.expired(now):
                    ops.append((OpKind.DELETE, meta.name, key, engine.rows.get(key), None))
            if ops and self.status == "online":
                try:
                    await self.commit_ops(ops)
                except Exception as e:  # the next sweep tries again
                    log.warning("tenant %s: TTL sweep failed: %s", self.name, e)
            await self._purge_expired_drops(now)

    async def _purge_expired_drops(self, now: int) -> None:
        """Dropped collections past the retention window are purged (a WAL tombstone)."""
        retention = self.retention_ms()
        for meta in list(self.state.catalog.values()):
            if meta.dropped_ms is None or meta.dropped_ms + retention > now:
                continue
            if self.status != "online":
                return
            try:
                await self.commit_catalog("purge_collection", {"name": meta.name})
                log.info(
                    "tenant %s: purged collection %s after its retention window",
                    self.name,
                    meta.name,
                )
            except Exception as e:  # the next sweep tries again
                log.warning("tenant %s: purge of %s failed: %s", self.name, meta.name, e)
