"""The master key and the per-tenant WAL keys it wraps.

The master key is exactly 32 raw bytes in a file. A file readable by group
or others is refused, as ssh refuses a private key and PostgreSQL refuses a
server key with loose permissions. Without a configured file, one is created
with mode 0600 in the data directory on first boot.

Wrapped key layout: nonce (12 bytes) || AES-256-GCM(master, tenant key) (48
bytes), associated data ``WRAP_AAD``. The master key id is the first 8 bytes
of SHA-256 over a fixed label and the key, in hex: it names a key without
revealing it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nodedb_server.errors import ConfigError

KEY_BYTES = 32
WRAP_AAD = b"nodedb-wrapped-key-v1"
MASTER_KEY_NAME = "master.key"


class KeyUnwrapError(Exception):
    """A wrapped key does not open under this master key."""


def load_master_key(configured: str, data_dir: Path) -> tuple[bytes, Path]:
    """Read the master key (creating the default one on first boot)."""
    path = Path(configured) if configured else data_dir / MASTER_KEY_NAME
    if not path.exists():
        if configured:
            raise ConfigError(f"encryption.master_key_file: {path} does not exist")
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        dfd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"encryption.master_key_file: {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(mode):04o}); run chmod 600 on it"
        )
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"encryption.master_key_file: {path} must hold exactly {KEY_BYTES} raw bytes, "
            f"it holds {len(key)}"
        )
    return key, path


def key_id(master: bytes) -> str:
    return hashlib.sha256(b"nodedb-master-key-id:" + master).digest()[:8].hex()


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def wrap(master: bytes, key: bytes) -> bytes:
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(master).encrypt(nonce, key, WRAP_AAD)


def unwrap(master: bytes, wrapped: bytes) -> bytes:
    if len(wrapped) != 12 + KEY_BYTES + 16:
        raise KeyUnwrapError("wrapped key has the wrong length")
    try:
        return AESGCM(master).decrypt(wrapped[:12], wrapped[12:], WRAP_AAD)
    except InvalidTag:
        raise KeyUnwrapError("wrapped key does not open under this master key") from None
