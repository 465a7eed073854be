from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.pg import Postgres
from tests.seaweed import SeaweedS3
from tests.serverproc import ServerProcess


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh server subprocess with an empty data directory."""
    srv = ServerProcess(tmp_path / "data").start()
    try:
        yield srv
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.kill9()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for a module of tests that do not disturb each other."""
    srv = ServerProcess(tmp_path_factory.mktemp("shared") / "data").start()
    try:
        yield srv
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A real PostgreSQL cluster on loopback, for answers PostgreSQL defines. Its
    binaries come from Debian's postgresql package (tests/ensure_tools.sh)."""
    pg = Postgres().start()
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One SeaweedFS S3 server for the session; tests that stop it start it again."""
    s3 = SeaweedS3(tmp_path_factory.mktemp("seaweed")).start()
    try:
        yield s3
    finally:
        s3.stop()


@pytest.fixture
def s3_bucket(seaweed: SeaweedS3) -> str:
    """A new empty bucket on the session's S3 server (restarted if a test left it down)."""
    if not seaweed.running:
        seaweed.start()
    return seaweed.create_bucket(f"test-{secrets.token_hex(6)}")
