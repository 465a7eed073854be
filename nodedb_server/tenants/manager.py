"""The system catalog (tenants, users, grants, settings) and the tenants it opens.

The system catalog is itself a store: a WAL and checkpoints under
``<data_dir>/system/``, sealed with a system key wrapped by the master key
(``system/KEY``), so catalog changes are logged like data and survive
``kill -9`` with no checkpoint in between. Tenant WAL keys live in it,
wrapped by the master key.

    system/KEY: "NDSK" | u8 version=1 | 8-byte master key id | 60-byte wrapped key
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nodedb_server.config import Config
from nodedb_server.errors import (
    ConfigError,
    DBError,
    DiskFull,
    DuplicateObject,
    InsufficientPrivilege,
    InvalidCatalogName,
    ObjectInUse,
    StorageFailure,
    UndefinedObject,
)
from nodedb_server.events.notify import NotifyHub
from nodedb_server.objectstore.base import ObjectStoreError
from nodedb_server.storage import codec
from nodedb_server.storage.datadir import lock_data_dir, unlock_data_dir
from nodedb_server.storage.fsio import FileIO, disk_full
from nodedb_server.storage.records import Record, RecordKind
from nodedb_server.storage.recovery import (
    RecoveryAbandoned,
    RecoveryReport,
    Store,
    Unrecoverable,
    WalSettings,
)
from nodedb_server.storage.uploads import Storage, open_storage
from nodedb_server.tenants import keys
from nodedb_server.tenants.operations import Operations
from nodedb_server.tenants.tenant import RETENTION_DAYS, Tenant
from nodedb_server.tenants.users import ScramVerifier, make_verifier

log = logging.getLogger("nodedb.tenants")

SUPERUSER = "nodedb"
DEFAULT_TENANT = "default"
DEFAULT_TENANT_ID = 1
SYSTEM_ID = 0
KEY_FILE_MAGIC = b"NDSK"
# Database names that select the default tenant.
DEFAULT_DATABASES = frozenset({"nodedb", "default", "postgres"})


class SystemState:
    """The state machine of the system catalog."""

    def __init__(self) -> None:
        self.tenants: dict[str, dict[str, Any]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.grants: dict[str, list[list[str]]] = {}
        self.settings: dict[str, Any] = {}
        self.next_tenant_id = DEFAULT_TENANT_ID

    def apply(self, rec: Record) -> None:
        if rec.rtype == RecordKind.CATALOG:
            action, args = codec.unpack(rec.body)
            self.apply_action(action, args)

    def replay(self, records: Iterable[Record]) -> None:
        for rec in records:
            self.apply(rec)

    def apply_action(self, action: str, a: dict[str, Any]) -> None:
        if action == "create_tenant":
            self.tenants[a["name"]] = {**a, "status": "active"}
            self.next_tenant_id = max(self.next_tenant_id, a["id"] + 1)
        elif action == "restore_tenant":
            self.tenants[a["name"]] = {
                k: a[k] for k in ("name", "id", "wrapped_key", "key_id", "created_ms")
            } | {"status": "active"}
            self.next_tenant_id = max(self.next_tenant_id, a["id"] + 1)
            for user in [u for u, d in self.users.items() if d["tenant"] == a["name"]]:
                self.users.pop(user)
                self.grants.pop(user, None)
            for user in a["users"]:
                if user["name"] not in self.users:  # never take over another tenant's user
                    self.users[user["name"]] = {**user, "tenant": a["name"]}
                    self.grants[user["name"]] = [
                        [p, a["name"]] for p, _ in a["grants"].get(user["name"], [])
                    ]
        elif action == "drop_tenant":
            self.tenants[a["name"]]["status"] = "dropped"
        elif action == "purge_tenant":
            self.tenants.pop(a["name"], None)
            for user in [u for u, d in self.users.items() if d["tenant"] == a["name"]]:
                self.users.pop(user)
                self.grants.pop(user, None)
            for user, gs in self.grants.items():
                self.grants[user] = [g for g in gs if g[1] != a["name"]]
        elif action == "create_user":
            self.users[a["name"]] = dict(a)
        elif action == "set_password":
            self.users[a["name"]]["verifier"] = a["verifier"]
        elif action == "drop_user":
            self.users.pop(a["name"], None)
            self.grants.pop(a["name"], None)
        elif action == "grant":
            self.grants.setdefault(a["user"], []).append([a["privilege"], a["tenant"]])
        elif action == "set":
            self.settings[a["name"]] = a["value"]
        else:
            raise ValueError(f"unknown system catalog action {action!r}")

    def checkpoint_parts(self) -> tuple[dict[str, Any], list[tuple[str, Iterable[Any]]]]:
        return {
            "tenants": self.tenants,
            "users": self.users,
            "grants": self.grants,
            "settings": self.settings,
            "next_tenant_id": self.next_tenant_id,
        }, []

    def load_checkpoint(
        self, meta: dict[str, Any], read_part: Callable[[str], Iterator[Any]]
    ) -> None:
        self.tenants = dict(meta.get("tenants", {}))
        self.users = dict(meta.get("users", {}))
        self.grants = dict(meta.get("grants", {}))
        self.settings = dict(meta.get("settings", {}))
        self.next_tenant_id = meta.get("next_tenant_id", DEFAULT_TENANT_ID)


class TenantManager:
    def __init__(self, cfg: Config, fs: FileIO | None = None):
        self.cfg = cfg
        self.fs = fs or FileIO()
        self.data_dir = cfg.data_dir
        self.settings = WalSettings(
            cfg["wal.segment_bytes"],
            cfg["wal.fsync"],
            cfg["wal.batch_ms"],
            cfg["events.max_retained_bytes"],
        )
        self.master = b""
        self.master_key_id = ""
        self.system = SystemState()
        self.store: Store | None = None
        self.storage: Storage | None = None  # object storage, once open
        self.tenants: dict[str, Tenant] = {}
        self._lock = asyncio.Lock()
        self._reserved_id = 0
        self._restoring: set[str] = set()  # tenant names with a restore under way
        self._abandoning = False  # shutting down: recover no more tenants
        self.operations = Operations()  # running and recent backups and restores
        self.notify_hub = NotifyHub()  # LISTEN / NOTIFY channels of every tenant
        self._dir_lock = -1  # the descriptor holding <data_dir>/LOCK while open
        # Set by the wire layer: end every session of a tenant but one (57P01).
        self.end_sessions: Callable[[str, int], None] = lambda _name, _keep_pid: None

    # ---- boot and shutdown ----------------------------------------------------------

    async def open(self) -> RecoveryReport:
        """Open the system catalog; the tenants it names wait, recovering, for
        ``recover_tenants``."""
        self.fs.makedirs(self.data_dir)
        self._dir_lock = lock_data_dir(self.data_dir)
        if not self.cfg["backup.allowed_dirs"]:
            # The default place BACKUP writes to, so that a first backup just works.
            self.fs.makedirs(self.data_dir / "backups")
        self.master, key_path = keys.load_master_key(
            self.cfg["encryption.master_key_file"], self.data_dir
        )
        self.master_key_id = keys.key_id(self.master)
        log.info("master key %s (id %s)", key_path, self.master_key_id)
        system_key = self._system_key()
        self.storage = await open_storage(self.cfg)
        await self._store_system_key()
        self.store = Store(
            "system catalog",
            self.data_dir / "system",
            SYSTEM_ID,
            AESGCM(system_key),
            self.fs,
            self.settings,
            self.system,
            owner="system",
            rel="system",
            storage=self.storage,
        )
        report = await self.store.open()
        await self._bootstrap()
        self._remove_orphan_dirs()
        for name, t in sorted(self.system.tenants.items(), key=lambda kv: kv[1]["id"]):
            if t["status"] == "active":
                self.tenants[name] = self._new_tenant(name)
        return report

    async def recover_tenants(self) -> list[Tenant]:
        """Recover the tenants ``open`` left recovering, in id order, while the listener
        already serves: each comes online when its own replay ends, and until then its
        connections get 57P03. One that cannot be recovered is marked failed (its
        connections get 57P03 saying why; DROP, PURGE or a RESTORE over it still run)
        and the others go on. Returns the tenants that failed."""
        failed: list[Tenant] = []
        for tenant in list(self.tenants.values()):
            if self._abandoning:
                break
            if tenant.status != "recovering" or self.tenants.get(tenant.name) is not tenant:
                continue
            try:
                await self._recover(tenant)
            except RecoveryAbandoned:
                break
            except Exception as e:
                await self._mark_failed(tenant, e)
                failed.append(tenant)
        return failed

    async def _mark_failed(self, tenant: Tenant, e: Exception) -> None:
        """A tenant that could not be opened: failed, so that DROP, PURGE and a RESTORE
        over it still run, with nothing of its half-opened store left running."""
        tenant.status = "failed"
        tenant.failure = str(e) or type(e).__name__
        log.error(
            "tenant %s (id %d) could not be recovered, and is unavailable until it is "
            "restored or dropped: %s",
            tenant.name,
            tenant.id,
            tenant.failure,
            exc_info=not isinstance(e, Unrecoverable | OSError),
        )
        with contextlib.suppress(Exception):
            await tenant.store.close()

    @property
    def abandoning(self) -> bool:
        return self._abandoning

    def abandon_recovery(self) -> None:
        """Shutdown: a replay under way stops at its next batch, and no other starts."""
        self._abandoning = True
        for tenant in self.tenants.values():
            if tenant.status == "recovering":
                tenant.store.abandon_recovery()

    def _system_key(self) -> bytes:
        path = self.data_dir / "system" / "KEY"
        self.fs.makedirs(path.parent)
        if not path.exists():
            key = keys.new_key()
            blob = (
                KEY_FILE_MAGIC
                + b"\x01"
                + bytes.fromhex(self.master_key_id)
                + keys.wrap(self.master, key)
            )
            self.fs.write_file_atomic(path, blob)
            return key
        blob = path.read_bytes()
        if len(blob) != 73 or blob[:5] != KEY_FILE_MAGIC + b"\x01":
            raise ConfigError(f"{path} is damaged")
        try:
            return keys.unwrap(self.master, blob[13:])
        except keys.KeyUnwrapError:
            raise ConfigError(
                f"the data directory {self.data_dir} was created with master key id "
                f"{blob[5:13].hex()}, but the configured master key has id {self.master_key_id}"
            ) from None

    async def _store_system_key(self) -> None:
        """Snapshot storage keeps a copy of system/KEY (wrapped by the master key, so
        useless without it): a lost data directory is rebuilt from storage with it."""
        assert self.storage is not None
        store = self.storage.snapshots
        path = self.data_dir / "system" / "KEY"
        try:
            if await store.head("system/KEY") is None:
                await store.put_file("system/KEY", path)
        except ObjectStoreError as e:
            log.warning("could not store system/KEY in %s yet: %s", store.url, e)

    async def _bootstrap(self) -> None:
        if DEFAULT_TENANT not in self.system.tenants:
            await self._log(
                "create_tenant", self._new_tenant_args(DEFAULT_TENANT, DEFAULT_TENANT_ID)
            )
        password = self.cfg["auth.superuser_password"] or secrets.token_urlsafe(24)
        if SUPERUSER not in self.system.users:
            await self._log(
                "create_user",
                {
                    "name": SUPERUSER,
                    "tenant": None,
                    "superuser": True,
                    "verifier": make_verifier(password).encode(),
                },
            )
        elif self.cfg["auth.superuser_password"] and not _verifier_matches(
            self.system.users[SUPERUSER]["verifier"], password
        ):
            await self._log(
                "set_password", {"name": SUPERUSER, "verifier": make_verifier(password).encode()}
            )

    def _remove_orphan_dirs(self) -> None:
        """Directories of tenants purged before a crash finished deleting them."""
        root = self.data_dir / "tenants"
        if not root.exists():
            return
        known = {str(t["id"]) for t in self.system.tenants.values()}
        for d in root.iterdir():
            if d.is_dir() and d.name not in known:
                log.warning("removing files of purged tenant id %s", d.name)
                shutil.rmtree(d)

    async def _open_tenant(self, name: str) -> RecoveryReport:
        tenant = self.tenants[name] = self._new_tenant(name)
        try:
            return await self._recover(tenant)
        except Exception as e:
            await self._mark_failed(tenant, e)
            raise

    def _new_tenant(self, name: str) -> Tenant:
        """The tenant the catalog names, not yet recovered."""
        t = self.system.tenants[name]
        return Tenant(
            t["id"],
            name,
            self.data_dir / "tenants" / str(t["id"]),
            keys.unwrap(self.master, t["wrapped_key"]),
            self.fs,
            self.settings,
            self.cfg["checkpoint.wal_bytes"],
            self.retention_ms,
            self.storage,
        )

    async def _recover(self, tenant: Tenant) -> RecoveryReport:
        name = tenant.name
        report = await tenant.open()
        log.info(
            "tenant %s (id %d): checkpoint LSN %d, %d records replayed, %d bytes discarded, "
            "now at LSN %d, %.3fs",
            name,
            tenant.id,
            report.checkpoint_lsn,
            report.replayed,
            report.discarded_bytes,
            report.last_lsn,
            report.seconds,
        )
        return report

    async def close(self, checkpoint: bool = True) -> None:
        for tenant in list(self.tenants.values()):
            await tenant.close(checkpoint=checkpoint)
        if self.store is not None:
            if checkpoint and self.store.broken is None:
                try:
                    await self.store.checkpoint()
                except DiskFull as e:  # its WAL keeps everything; the next start replays it
                    log.error("system catalog: checkpoint at shutdown failed: %s", e.message)
            await self.store.close()
        if self.storage is not None:
            await self.storage.close()
            self.storage = None
        if self._dir_lock >= 0:
            unlock_data_dir(self._dir_lock)
            self._dir_lock = -1

    async def checkpoint_all(self) -> None:
        for tenant in list(self.tenants.values()):
            await tenant.checkpoint()
        if self.store is not None:
            await self.store.checkpoint()

    # ---- the system WAL --------------------------------------------------------------

    async def _log(self, action: str, args: dict[str, Any]) -> None:
        assert self.store is not None
        if self.store.wal is None:
            await self._reopen_system_wal()
        assert self.store.wal is not None
        _, fut = self.store.wal.append(RecordKind.CATALOG, codec.pack([action, args]))
        self.system.apply_action(action, args)
        await fut

    async def _reopen_system_wal(self) -> None:
        """The server started on a full disk: try again for a segment to log into."""
        assert self.store is not None
        try:
            await self.store.open_wal()
        except OSError as e:
            if disk_full(e):
                raise DiskFull("could not open a WAL segment: no space left on device") from None
            raise StorageFailure(f"could not open a WAL segment: {e.strerror}") from None

    def _new_tenant_args(self, name: str, tenant_id: int) -> dict[str, Any]:
        return {
            "name": name,
            "id": tenant_id,
            "wrapped_key": keys.wrap(self.master, keys.new_key()),
            "key_id": self.master_key_id,
            "created_ms": int(time.time() * 1000),
        }

    # ---- lookups ---------------------------------------------------------------------

    def tenant_for_database(self, database: str) -> Tenant:
        name = DEFAULT_TENANT if database in DEFAULT_DATABASES else database
        tenant = self.tenants.get(name)
        if tenant is None or self.system.tenants.get(name, {}).get("status") != "active":
            raise InvalidCatalogName(f'database "{database}" does not exist')
        return tenant

    def user(self, name: str) -> dict[str, Any] | None:
        return self.system.users.get(name)

    @staticmethod
    def tenant_name(name: str) -> str:
        """The tenant a name given in SQL means: the database names of the default tenant
        name it too (BACKUP TENANT nodedb)."""
        return DEFAULT_TENANT if name in DEFAULT_DATABASES else name

    def has_grant(self, user: str, privilege: str, tenant: str) -> bool:
        return [privilege, self.tenant_name(tenant)] in self.system.grants.get(user, [])

    def check_access(self, user: dict[str, Any], tenant: Tenant) -> None:
        if not user["superuser"] and user["tenant"] != tenant.name:
            raise InsufficientPrivilege(
                f'user "{user["name"]}" may not connect to database "{tenant.name}"'
            )

    # ---- statements --------------------------------------------------------------------

    async def create_tenant(self, name: str) -> Tenant:
        if name.startswith("_"):  # _system names the system catalog in _system.wal
            raise DBError(
                f'tenant name "{name}" is reserved: a name starting with "_" is the system\'s',
                "42939",
            )
        async with self._lock:
            if name in self.system.tenants or name in DEFAULT_DATABASES:
                raise DuplicateObject(f'tenant "{name}" already exists')
            if name in self._restoring:
                raise ObjectInUse(f'tenant "{name}" is being restored')
            args = self._new_tenant_args(name, self.reserve_tenant_id())
            await self._log("create_tenant", args)
            await self._open_tenant(name)
            return self.tenants[name]

    def retention_ms(self) -> int:
        """How long a dropped collection can be undropped before it is purged."""
        days = self.system.settings.get("deactivated_collection_retention_days", RETENTION_DAYS)
        return int(float(days) * 86_400_000)

    async def set_setting(self, name: str, value: Any) -> None:
        async with self._lock:
            await self._log("set", {"name": name, "value": value})

    def tenant_dir(self, tenant_id: int) -> Path:
        """Where a tenant's WAL, checkpoints and quarantine live."""
        return self.data_dir / "tenants" / str(tenant_id)

    def reserve_tenant_id(self) -> int:
        """An id no tenant has nor is about to have (a new tenant, or a restore staging
        its directory before its record commits it)."""
        self._reserved_id = max(self._reserved_id, self.system.next_tenant_id) + 1
        return self._reserved_id - 1

    async def begin_restore(self, name: str, keep_pid: int) -> Tenant | None:
        """Before a restore stages anything: the tenant stops taking statements, so the
        LSN and tombstones the restore continues from are final. Its other sessions end
        (57P01) and new connections get 57P03 until ``commit_restore`` or
        ``abort_restore``. Returns the tenant being replaced, if there is one."""
        async with self._lock:
            if name in self._restoring:
                raise ObjectInUse(f'a restore of tenant "{name}" is already running')
            old = self.tenants.get(name)
            if old is not None and old.status not in ("online", "failed"):
                raise ObjectInUse(f'tenant "{name}" is not available ({old.status})')
            self._restoring.add(name)
            if old is not None:
                old.status = "restoring"
                self.end_sessions(name, keep_pid)
            return old

    def abort_restore(self, name: str, old: Tenant | None) -> None:
        """A restore failed before its switch: the tenant serves again, as it was."""
        self._restoring.discard(name)
        if old is not None and old.status == "restoring" and self.tenants.get(name) is old:
            old.status = "failed" if old.failure else "online"

    async def commit_restore(
        self, name: str, tenant_id: int, tenant_key: bytes, catalog: dict[str, Any], keep_pid: int
    ) -> Tenant:
        """Switch ``name`` to the restored directory: one system record is the commit."""
        async with self._lock:
            try:
                return await self._switch(name, tenant_id, tenant_key, catalog, keep_pid)
            finally:
                self._restoring.discard(name)

    async def _switch(
        self, name: str, tenant_id: int, tenant_key: bytes, catalog: dict[str, Any], keep_pid: int
    ) -> Tenant:
        old = self.tenants.get(name)
        if old is not None:
            self.end_sessions(name, keep_pid)
            await old.close(checkpoint=False)
            held = old.drop_state()
            await asyncio.get_running_loop().run_in_executor(None, held.clear)
        try:
            await self._log(
                "restore_tenant",
                {
                    "name": name,
                    "id": tenant_id,
                    "wrapped_key": keys.wrap(self.master, tenant_key),
                    "key_id": self.master_key_id,
                    "created_ms": int(time.time() * 1000),
                    "users": catalog.get("users", []),
                    "grants": catalog.get("grants", {}),
                },
            )
        except BaseException:
            # The switch record was not written: the catalog still names the old
            # directory, which is untouched. Serve it again (or mark it failed again,
            # if it was); the error answered is the switch's.
            if old is not None:
                with contextlib.suppress(Exception):
                    await self._open_tenant(name)
            raise
        await self._open_tenant(name)
        if old is not None:
            path = self.data_dir / "tenants" / str(old.id)
            await asyncio.get_running_loop().run_in_executor(None, _erase, self.fs, path)
        return self.tenants[name]

    async def drop_tenant(self, name: str) -> Tenant:
        name = self.tenant_name(name)
        async with self._lock:
            if name in self._restoring:
                raise ObjectInUse(f'tenant "{name}" is being restored')
            if name == DEFAULT_TENANT:
                raise InsufficientPrivilege('the "default" tenant cannot be dropped')
            t = self.system.tenants.get(name)
            if t is None or t["status"] != "active":
                raise UndefinedObject(f'tenant "{name}" does not exist')
            self._refuse_if_recovering(name)
            await self._log("drop_tenant", {"name": name})
            tenant = self.tenants.pop(name)
            await tenant.close()
            return tenant

    async def purge_tenant(self, name: str) -> bool:
        """Erase every byte of the tenant; returns False when there was nothing to purge."""
        name = self.tenant_name(name)
        async with self._lock:
            if name in self._restoring:
                raise ObjectInUse(f'tenant "{name}" is being restored')
            if name == DEFAULT_TENANT:
                raise InsufficientPrivilege('the "default" tenant cannot be purged')
            t = self.system.tenants.get(name)
            if t is None:
                return False
            self._refuse_if_recovering(name)
            tenant = self.tenants.pop(name, None)
            if tenant is not None:
                await tenant.close(checkpoint=False)
            await self._log("purge_tenant", {"name": name})
            path = self.data_dir / "tenants" / str(t["id"])
            await asyncio.get_running_loop().run_in_executor(None, _erase, self.fs, path)
            return True

    def _refuse_if_recovering(self, name: str) -> None:
        tenant = self.tenants.get(name)
        if tenant is not None and tenant.status == "recovering":
            raise ObjectInUse(f'tenant "{name}" is still recovering; try again when it is online')

    async def create_user(
        self, name: str, password: str, tenant: str | None, superuser: bool
    ) -> None:
        tenant = None if tenant is None else self.tenant_name(tenant)
        async with self._lock:
            if name in self.system.users:
                raise DuplicateObject(f'role "{name}" already exists')
            if tenant is not None and self.system.tenants.get(tenant, {}).get("status") != "active":
                raise UndefinedObject(f'tenant "{tenant}" does not exist')
            await self._log(
                "create_user",
                {
                    "name": name,
                    "tenant": tenant,
                    "superuser": superuser,
                    "verifier": make_verifier(password).encode(),
                },
            )

    async def drop_user(self, name: str) -> None:
        async with self._lock:
            if name == SUPERUSER:
                raise InsufficientPrivilege(f'the superuser "{SUPERUSER}" cannot be dropped')
            if name not in self.system.users:
                raise UndefinedObject(f'role "{name}" does not exist')
            await self._log("drop_user", {"name": name})

    async def grant(self, privilege: str, tenant: str, user: str) -> None:
        tenant = self.tenant_name(tenant)
        async with self._lock:
            if user not in self.system.users:
                raise UndefinedObject(f'role "{user}" does not exist')
            if self.system.tenants.get(tenant, {}).get("status") != "active":
                raise UndefinedObject(f'tenant "{tenant}" does not exist')
            if not self.has_grant(user, privilege, tenant):
                await self._log("grant", {"user": user, "privilege": privilege, "tenant": tenant})


def _verifier_matches(verifier: str, password: str) -> bool:
    v = ScramVerifier.decode(verifier)
    return make_verifier(password, v.salt, v.iterations) == v


def _erase(fs: FileIO, path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
        fs.fsync_dir(path.parent)
