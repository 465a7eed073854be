"""Configuration: TOML, environment overrides, and start-up refusals that name the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodedb_server.config import load_config
from nodedb_server.errors import ConfigError
from nodedb_server.tenants.keys import load_master_key


def test_defaults_then_toml_then_environment(tmp_path: Path) -> None:
    cfg_file = tmp_path / "n.toml"
    cfg_file.write_text(
        '[server]\nmax_connections = 7\n[server.ports]\npgwire = 7000\n[wal]\nfsync = "batch"\n'
    )
    cfg = load_config(cfg_file, environ={"NODEDB_PORT_PGWIRE": "7100"})
    assert cfg["server.max_connections"] == 7 and cfg.port == 7100 and cfg["wal.fsync"] == "batch"
    assert load_config(None, environ={}).port == 6432


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("[server]\nmax_conections = 5\n", {}, "server.max_conections"),
        ('[wal]\nfsync = "sometimes"\n', {}, "wal.fsync"),
        ('[server.ports]\npgwire = "x"\n', {}, "server.ports.pgwire"),
        ("", {"NODEDB_MAX_CONNECTIONS": "many"}, "server.max_connections"),
        ('[server]\nhost = "0.0.0.0"\n', {}, "auth.mode"),
        ('[auth]\nmode = "scram"\n', {}, "auth.superuser_password"),
        ("[server\n", {}, "not valid TOML"),
        ("[backup]\nprogress_seconds = true\n", {}, "backup.progress_seconds"),
        ("", {"NODEDB_BACKUP_PROGRESS_SECONDS": "soon"}, "backup.progress_seconds"),
        ("[backup]\nprogress_seconds = 0\n", {}, "backup.progress_seconds"),
        ("", {"NODEDB_PORTT": "1"}, "unknown environment variable NODEDB_PORTT"),
        ("", {"NODEDB_WAL_FSYNCC": "off"}, "NODEDB_WAL_FSYNCC; did you mean NODEDB_WAL_FSYNC"),
    ],
)
def test_bad_configuration_names_the_key(
    tmp_path: Path, toml: str, env: dict[str, str], message: str
) -> None:
    cfg_file = tmp_path / "n.toml"
    cfg_file.write_text(toml)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(cfg_file, environ=env)


def test_secrets_are_masked_in_the_description() -> None:
    cfg = load_config(None, environ={"NODEDB_SUPERUSER_PASSWORD": "hunter2"})
    assert "hunter2" not in repr(cfg.describe())


def test_master_key_created_0600_and_loose_permissions_refused(tmp_path: Path) -> None:
    key, path = load_master_key("", tmp_path)
    assert len(key) == 32 and (path.stat().st_mode & 0o777) == 0o600
    assert load_master_key("", tmp_path)[0] == key
    os.chmod(path, 0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_master_key("", tmp_path)
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 31)
    os.chmod(short, 0o600)
    with pytest.raises(ConfigError, match="exactly 32"):
        load_master_key(str(short), tmp_path)


def test_shipped_config_documents_every_key_with_its_default() -> None:
    from nodedb_server.config import KEYS

    shipped = Path(__file__).resolve().parents[2] / "config" / "nodedb.toml"
    cfg = load_config(shipped, environ={})
    text = shipped.read_text()
    for key in KEYS:
        assert cfg[key.path] == key.default, key.path
        assert f"[{key.env}]" in text, key.env
