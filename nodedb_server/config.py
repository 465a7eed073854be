"""Server configuration: TOML with NodeDB's key names, NODEDB_* environment overrides.

Every key is declared once in ``KEYS`` with its type, default, environment
variable and check. An unknown key or a bad value stops start-up with a
message naming the key; config/nodedb.toml documents each one.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodedb_server.errors import ConfigError

MiB = 1024 * 1024


@dataclass(frozen=True)
class Key:
    section: str
    name: str
    type: type
    default: Any
    env: str
    check: Callable[[Any], str | None] = lambda _v: None

    @property
    def path(self) -> str:
        return f"{self.section}.{self.name}"


def _one_of(*allowed: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in allowed else f"must be one of {', '.join(map(repr, allowed))}"


def _at_least(low: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= low else f"must be at least {low}"


def _absolute_paths(v: list[str]) -> str | None:
    bad = [p for p in v if not os.path.isabs(p)]
    return f"{bad[0]!r} is not an absolute path" if bad else None


def _port(v: int) -> str | None:
    return None if 0 <= v <= 65535 else "must be a TCP port (0-65535)"


KEYS: tuple[Key, ...] = (
    Key("server", "host", str, "127.0.0.1", "NODEDB_HOST"),
    Key("server", "data_dir", str, "./data", "NODEDB_DATA_DIR"),
    Key("server", "max_connections", int, 100, "NODEDB_MAX_CONNECTIONS", _at_least(1)),
    # Connections still in startup (not yet authenticated) are bounded apart from
    # max_connections, so that idle sockets cannot take the slots of real sessions.
    Key(
        "server",
        "max_startup_connections",
        int,
        256,
        "NODEDB_MAX_STARTUP_CONNECTIONS",
        _at_least(1),
    ),
    Key("server", "log_format", str, "text", "NODEDB_LOG_FORMAT", _one_of("text", "json")),
    Key(
        "server",
        "log_level",
        str,
        "info",
        "NODEDB_LOG_LEVEL",
        _one_of("debug", "info", "warning", "error"),
    ),
    Key("server", "shutdown_grace_ms", int, 5000, "NODEDB_SHUTDOWN_GRACE_MS", _at_least(0)),
    Key("server.ports", "pgwire", int, 6432, "NODEDB_PORT_PGWIRE", _port),
    Key("wal", "segment_bytes", int, 64 * MiB, "NODEDB_WAL_SEGMENT_BYTES", _at_least(4096)),
    Key("wal", "fsync", str, "always", "NODEDB_WAL_FSYNC", _one_of("always", "batch", "off")),
    Key("wal", "batch_ms", int, 10, "NODEDB_WAL_BATCH_MS", _at_least(1)),
    Key(
        "checkpoint",
        "interval_seconds",
        int,
        300,
        "NODEDB_CHECKPOINT_INTERVAL_SECONDS",
        _at_least(0),
    ),
    Key("checkpoint", "wal_bytes", int, 256 * MiB, "NODEDB_CHECKPOINT_WAL_BYTES", _at_least(0)),
    Key("auth", "mode", str, "trust", "NODEDB_AUTH_MODE", _one_of("trust", "scram")),
    Key("auth", "superuser_password", str, "", "NODEDB_SUPERUSER_PASSWORD"),
    # As PostgreSQL's authentication_timeout: a connection must finish startup by then.
    Key(
        "auth",
        "authentication_timeout_ms",
        int,
        60_000,
        "NODEDB_AUTH_AUTHENTICATION_TIMEOUT_MS",
        _at_least(1),
    ),
    Key("encryption", "master_key_file", str, "", "NODEDB_MASTER_KEY_FILE"),
    Key("limits", "max_message_bytes", int, 64 * MiB, "NODEDB_MAX_MESSAGE_BYTES", _at_least(1024)),
    Key("limits", "statement_timeout_ms", int, 0, "NODEDB_STATEMENT_TIMEOUT_MS", _at_least(0)),
    # The most WAL kept for change-stream consumer groups beyond what checkpoints need.
    Key(
        "events",
        "max_retained_bytes",
        int,
        1024 * MiB,
        "NODEDB_EVENTS_MAX_RETAINED_BYTES",
        _at_least(0),
    ),
    # Absolute directories BACKUP and RESTORE may touch; empty: <data_dir>/backups.
    # In the environment, separate them with ':'.
    Key("backup", "allowed_dirs", list, [], "NODEDB_BACKUP_ALLOWED_DIRS", _absolute_paths),
    # How often a running BACKUP or RESTORE sends its client a progress NOTICE.
    Key(
        "backup",
        "progress_seconds",
        float,
        2.0,
        "NODEDB_BACKUP_PROGRESS_SECONDS",
        _at_least(0.01),
    ),
)

# Object storage: each section is local (no endpoint; ``path`` or the default
# directory under the data directory) or S3-compatible (endpoint and bucket).
STORAGE_SECTIONS: dict[str, str] = {
    "snapshot_storage": "snapshots",
    "quarantine_storage": "quarantine",
    "wal_archive": "wal_archive",
}
STORAGE_KEYS = ("endpoint", "bucket", "region", "prefix", "access_key", "secret_key", "path")


def _storage_keys() -> tuple[Key, ...]:
    out = []
    for section in STORAGE_SECTIONS:
        for name in STORAGE_KEYS:
            out.append(Key(section, name, str, "", f"NODEDB_{section.upper()}_{name.upper()}"))
    return tuple(out)


KEYS += _storage_keys() + (
    Key("snapshot_storage", "keep", int, 2, "NODEDB_SNAPSHOT_STORAGE_KEEP", _at_least(1)),
    Key("wal_archive", "enabled", bool, False, "NODEDB_WAL_ARCHIVE_ENABLED"),
    # The open segment is rotated and archived this often when it holds new records.
    Key(
        "wal_archive",
        "max_delay_seconds",
        float,
        60.0,
        "NODEDB_WAL_ARCHIVE_MAX_DELAY_SECONDS",
        _at_least(0.05),
    ),
    # Local WAL above this while the archive is unreachable is reported loudly; the
    # segments are kept (writes go on), never deleted unarchived.
    Key(
        "wal_archive",
        "max_local_bytes",
        int,
        1024 * MiB,
        "NODEDB_WAL_ARCHIVE_MAX_LOCAL_BYTES",
        _at_least(0),
    ),
)

SECRET_KEYS = frozenset(
    {"auth.superuser_password"}
    | {f"{s}.{k}" for s in STORAGE_SECTIONS for k in ("access_key", "secret_key")}
)


@dataclass
class Config:
    values: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, path: str) -> Any:
        return self.values[path]

    @property
    def host(self) -> str:
        return str(self.values["server.host"])

    @property
    def port(self) -> int:
        return int(self.values["server.ports.pgwire"])

    @property
    def data_dir(self) -> Path:
        return Path(self.values["server.data_dir"]).resolve()

    @property
    def backup_dirs(self) -> list[Path]:
        dirs = self.values["backup.allowed_dirs"] or [str(self.data_dir / "backups")]
        return [Path(d) for d in dirs]

    def is_loopback(self) -> bool:
        host = self.host
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def describe(self) -> dict[str, Any]:
        """The values, with secrets masked, for logs and SHOW."""
        return {k: ("********" if k in SECRET_KEYS and v else v) for k, v in self.values.items()}


def _coerce(key: Key, raw: Any, origin: str) -> Any:
    if key.type in (int, float):
        what = "an integer" if key.type is int else "a number"
        if isinstance(raw, bool):
            raise ConfigError(f"{key.path} ({origin}): expected {what}, got {raw!r}")
        if isinstance(raw, str):
            try:
                raw = key.type(raw.strip())
            except ValueError:
                raise ConfigError(f"{key.path} ({origin}): expected {what}") from None
        if key.type is float and isinstance(raw, int):
            raw = float(raw)
        if not isinstance(raw, key.type):
            raise ConfigError(f"{key.path} ({origin}): expected {what}")
    elif key.type is bool:
        if isinstance(raw, str) and raw.strip().lower() in ("true", "false", "1", "0", "on", "off"):
            raw = raw.strip().lower() in ("true", "1", "on")
        if not isinstance(raw, bool):
            raise ConfigError(f"{key.path} ({origin}): expected true or false")
    elif key.type is str and not isinstance(raw, str):
        raise ConfigError(f"{key.path} ({origin}): expected a string")
    elif key.type is list:
        if isinstance(raw, str):
            raw = [p for p in raw.split(os.pathsep) if p]
        if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
            raise ConfigError(f"{key.path} ({origin}): expected a list of strings")
    problem = key.check(raw)
    if problem:
        raise ConfigError(f"{key.path} ({origin}): {problem}")
    return raw


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten TOML tables into dotted keys, keeping only leaf values."""
    out: dict[str, Any] = {}
    for name, value in table.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


# NODEDB_* variables read before any setting, not settings themselves:
# NODEDB_PURE_PYTHON runs the hot path as Python (nodedb_server/_hot.py).
PROCESS_ENV = ("NODEDB_PURE_PYTHON",)


def _refuse_unknown_env(environ: Mapping[str, str]) -> None:
    """A misspelt NODEDB_* variable would otherwise be ignored without a word."""
    prefix = "NODEDB_"
    known = [k.env for k in KEYS] + list(PROCESS_ENV)
    unknown = sorted(n for n in environ if n.startswith(prefix) and n not in known)
    if unknown:
        # Compared without the common prefix, which would make every name look close.
        bare = [k.removeprefix(prefix) for k in known]
        close = difflib.get_close_matches(unknown[0].removeprefix(prefix), bare, n=1)
        hint = f"; did you mean {prefix}{close[0]}?" if close else ""
        raise ConfigError(f"unknown environment variable {unknown[0]}{hint}")


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Defaults, then the TOML file, then NODEDB_* variables, then command-line overrides."""
    environ = os.environ if environ is None else environ
    by_path = {k.path: k for k in KEYS}
    values = {k.path: k.default for k in KEYS}
    if path is not None:
        try:
            with open(path, "rb") as f:
                table = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
        for dotted, raw in _flatten(table).items():
            key = by_path.get(dotted)
            if key is None:
                raise ConfigError(f"unknown config key {dotted!r} in {path}")
            values[dotted] = _coerce(key, raw, str(path))
    _refuse_unknown_env(environ)
    for key in KEYS:
        if key.env in environ:
            values[key.path] = _coerce(key, environ[key.env], f"environment {key.env}")
    for dotted, raw in (overrides or {}).items():
        if raw is not None:
            values[dotted] = _coerce(by_path[dotted], raw, "command line")
    cfg = Config(values)
    if cfg["auth.mode"] == "trust" and not cfg.is_loopback():
        raise ConfigError(
            f"auth.mode: 'trust' is allowed only on a loopback address, not {cfg.host!r}; "
            'set auth.mode = "scram" and auth.superuser_password'
        )
    if cfg["auth.mode"] == "scram" and not cfg["auth.superuser_password"]:
        raise ConfigError('auth.superuser_password: required when auth.mode = "scram"')
    for section in STORAGE_SECTIONS:
        _check_storage(cfg, section)
    return cfg


def _check_storage(cfg: Config, section: str) -> None:
    v = {k: cfg[f"{section}.{k}"] for k in STORAGE_KEYS}
    if v["endpoint"]:
        if not v["bucket"]:
            raise ConfigError(f"[{section}]: an endpoint needs a bucket")
        if v["path"]:
            raise ConfigError(
                f"[{section}]: path is for local storage; it cannot go with an endpoint"
            )
        if not v["endpoint"].startswith(("http://", "https://")):
            raise ConfigError(f"[{section}] endpoint: must start with http:// or https://")
    else:
        for k in ("bucket", "region", "access_key", "secret_key"):
            if v[k]:
                raise ConfigError(f"[{section}] {k}: set only with an endpoint (S3 storage)")
        if v["path"] and not os.path.isabs(v["path"]):
            raise ConfigError(f"[{section}] path: {v['path']!r} is not an absolute path")
    prefix = v["prefix"]
    if prefix and (prefix.startswith("/") or any(p in ("", ".", "..") for p in prefix.split("/"))):
        raise ConfigError(f"[{section}] prefix: {prefix!r} is not a relative key prefix")
