"""Object storage on an S3-compatible service (AWS S3, MinIO, SeaweedFS), with aiobotocore.

Keys are stored as ``<prefix>/<key>`` in the section's bucket, addressed
path-style (``<endpoint>/<bucket>/<key>``, which MinIO and SeaweedFS need).

Checksums: every put records the CRC32C of the whole object (google_crc32c,
as local.py computes it) as user metadata ``x-amz-meta-crc32c``, eight hex
digits; ``head`` and every put return it. A read recomputes it as the bytes
arrive and raises ObjectStoreError at the end if the two differ, so a restore
never trusts a copy the store changed.

Uploads: up to ``part_size`` (8 MiB) one PutObject; above, a multipart upload
of ``part_size`` parts, each read from the file on a worker thread, so a big
file is never in memory whole. The CRC is computed first (it travels in the
upload's metadata) and again as the parts are read; if the file changed in
between, or anything fails, the upload is aborted and nothing is stored.

Timeouts and retries: each request has a connect and a read timeout (3 s and
5 s by default). botocore's own retries are off; ``_call`` retries instead, up
to ``attempts`` times (5) with capped exponential backoff and full jitter
(a random sleep in [0, min(max_delay, base_delay * 2**n)], 0.1 s doubling to
2 s), the scheme of the AWS Architecture Blog's "Exponential Backoff And
Jitter". Retried: 5xx, throttling (SlowDown, 429, RequestLimitExceeded...),
connection errors and timeouts. Never retried: other 4xx (NoSuchBucket,
AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch...), which raise
ObjectStoreError(refused=True); still failing after the last attempt raises
ObjectStoreError(refused=False). A read that breaks mid-stream is not resumed:
it raises (refused=False) and the caller starts over.

Credentials come from the section (access_key, secret_key) or else from
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, read here; botocore is given them
explicitly and pointed away from ~/.aws, so it never reads profile files or
instance metadata. Messages name the section and the key, never a credential.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, suppress
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import aiohttp
import google_crc32c
from aiobotocore.session import AioSession
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    ClientError,
    HTTPClientError,
    IncompleteReadError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from nodedb_server.config import Config
from nodedb_server.objectstore.base import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    check_key,
)
from nodedb_server.objectstore.local import PART_SUFFIX, PIECE, _file_crc, _fsync_dir, _makedirs

T = TypeVar("T")
MiB = 1 << 20
# S3's own limits: every part but the last is at least 5 MiB, at most 10,000 parts.
MIN_PART_SIZE = 5 * MiB
MAX_PARTS = 10_000
DEFAULT_REGION = "us-east-1"
CRC_METADATA = "crc32c"  # sent as x-amz-meta-crc32c
# Error codes that mean "slow down, try again" whatever their HTTP status.
THROTTLING = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "TooManyRequests",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
    }
)
NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404"})
# The request did not get an answer: connection refused or reset, timeouts, a
# body cut short. aiohttp and asyncio errors can surface while a body is read.
TRANSIENT = (
    BotoConnectionError,
    HTTPClientError,
    IncompleteReadError,
    aiohttp.ClientError,
    asyncio.TimeoutError,
    ConnectionError,
)


def _crc_hex(crc: int) -> str:
    return f"{crc:08x}"


def _stored_crc(metadata: dict[str, str]) -> int | None:
    value = metadata.get(CRC_METADATA)
    try:
        return int(value, 16) if value else None
    except ValueError:
        return None


def _bytes_crc(data: bytes) -> int:
    return int(google_crc32c.value(data))


def _create(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)


def _write_piece(fd: int, piece: bytes, crc: int) -> int:
    """Write all of ``piece``; the CRC32C so far, extended by it."""
    view = memoryview(piece)
    while view:
        view = view[os.write(fd, view) :]
    return int(google_crc32c.extend(crc, piece))


def _read_with_crc(path: Path) -> tuple[bytes, int]:
    data = path.read_bytes()
    return data, _bytes_crc(data)


class S3Store(ObjectStore):
    def __init__(
        self,
        section: str,
        *,
        endpoint: str,
        bucket: str,
        region: str = DEFAULT_REGION,
        prefix: str = "",
        access_key: str = "",
        secret_key: str = "",
        connect_timeout: float = 3.0,
        read_timeout: float = 5.0,
        attempts: int = 5,
        base_delay: float = 0.1,
        max_delay: float = 2.0,
        part_size: int = 8 * MiB,
    ):
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} (S3's minimum part)")
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.section = section
        self.endpoint = endpoint
        self.bucket = bucket
        self.region = region or DEFAULT_REGION
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}"
        self._access_key = access_key
        self._secret_key = secret_key
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.part_size = part_size
        self._client: Any = None
        self._exit_stack: AsyncExitStack | None = None
        self._client_lock = asyncio.Lock()

    @classmethod
    def from_config(cls, cfg: Config, section: str) -> S3Store:
        def value(name: str) -> str:
            return str(cfg[f"{section}.{name}"] or "")

        return cls(
            section,
            endpoint=value("endpoint"),
            bucket=value("bucket"),
            region=value("region") or os.environ.get("AWS_REGION", ""),
            prefix=value("prefix"),
            access_key=value("access_key") or os.environ.get("AWS_ACCESS_KEY_ID", ""),
            secret_key=value("secret_key") or os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
        )

    # -- plumbing ---------------------------------------------------------

    def _full(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def _error(self, key: str, what: str, reason: str, *, refused: bool) -> ObjectStoreError:
        text = f"[{self.section}] {key}: {what}: {reason}"
        for secret in (self._access_key, self._secret_key):
            if secret:
                text = text.replace(secret, "***")
        return ObjectStoreError(text, refused=refused)

    async def _get_client(self) -> Any:
        """The one client of this store, made on first use inside the running loop."""
        if self._client is not None:
            return self._client
        async with self._client_lock:
            if self._client is None:
                if not (self._access_key and self._secret_key):
                    raise self._error(
                        self.url,
                        "no credentials",
                        "set access_key and secret_key in the section, "
                        "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                        refused=True,
                    )
                session = AioSession()
                # Credentials and region are passed explicitly; no profile files.
                session.set_config_variable("config_file", os.devnull)
                session.set_config_variable("credentials_file", os.devnull)
                session.set_config_variable("profile", None)
                config = BotoConfig(
                    s3={"addressing_style": "path"},
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    connect_timeout=self.connect_timeout,
                    read_timeout=self.read_timeout,
                )
                stack = AsyncExitStack()
                self._client = await stack.enter_async_context(
                    session.create_client(
                        "s3",
                        endpoint_url=self.endpoint,
                        region_name=self.region,
                        aws_access_key_id=self._access_key,
                        aws_secret_access_key=self._secret_key,
                        config=config,
                    )
                )
                self._exit_stack = stack
        return self._client

    async def _call(self, key: str, what: str, request: Callable[[Any], Awaitable[T]]) -> T:
        """One S3 request, retried as the module docstring says."""
        reason = ""
        for attempt in range(self.attempts):
            client = await self._get_client()
            try:
                return await request(client)
            except ClientError as e:
                error = e.response.get("Error", {})
                code = str(error.get("Code", ""))
                status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
                reason = f"{code or status} {error.get('Message', '')}".strip()
                if code in NOT_FOUND:
                    raise ObjectNotFound(f"[{self.section}] {key}: no such object") from None
                if status < 500 and status != 429 and code not in THROTTLING:
                    if status == 403:
                        reason += " (check the section's access_key and secret_key)"
                    raise self._error(key, what, reason, refused=True) from None
            except TRANSIENT as e:
                reason = str(e) or type(e).__name__
            if attempt + 1 < self.attempts:
                ceiling = min(self.max_delay, self.base_delay * 2**attempt)
                await asyncio.sleep(random.uniform(0, ceiling))
        raise self._error(
            key, what, f"no answer after {self.attempts} attempts ({reason})", refused=False
        )

    async def _thread(self, key: str, fn: Callable[..., T], *args: object) -> T:
        """Local file work on a worker thread; its OSError named for the key."""
        try:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        except OSError as e:
            raise self._error(key, "local file", str(e.strerror or e), refused=False) from None

    # -- the interface ----------------------------------------------------

    async def check(self) -> None:
        # One listed key proves the bucket exists and the credentials are accepted, and
        # its error names the cause (NoSuchBucket, SignatureDoesNotMatch...), where
        # head_bucket answers a bare 404 or 403.
        await self._call(
            self.url,
            "check",
            lambda c: c.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1),
        )

    async def put_file(self, key: str, path: Path) -> ObjectInfo:
        full = self._full(key)
        size = (await self._thread(key, os.stat, path)).st_size
        if size <= self.part_size:
            data, crc = await self._thread(key, _read_with_crc, path)
            return await self._put_one(key, full, data, crc)
        _size, crc = await self._thread(key, _file_crc, path)
        # A file too big for 10,000 parts of part_size gets bigger parts.
        part_size = max(self.part_size, -(-size // MAX_PARTS))

        def open_it() -> BinaryIO:
            return open(path, "rb")

        f = await self._thread(key, open_it)
        try:
            return await self._put_parts(key, full, crc, lambda: f.read(part_size))
        finally:
            f.close()

    async def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        full = self._full(key)
        crc = await self._thread(key, _bytes_crc, data)
        if len(data) <= self.part_size:
            return await self._put_one(key, full, data, crc)
        view = memoryview(data)
        offsets = iter(range(0, len(data) + 1, self.part_size))

        def next_part() -> bytes:
            start = next(offsets, len(data))
            return bytes(view[start : start + self.part_size])

        return await self._put_parts(key, full, crc, next_part)

    async def _put_one(self, key: str, full: str, data: bytes, crc: int) -> ObjectInfo:
        await self._call(
            key,
            "put",
            lambda c: c.put_object(
                Bucket=self.bucket, Key=full, Body=data, Metadata={CRC_METADATA: _crc_hex(crc)}
            ),
        )
        return ObjectInfo(key, len(data), crc, time.time())

    async def _put_parts(
        self, key: str, full: str, crc: int, read_part: Callable[[], bytes]
    ) -> ObjectInfo:
        """A multipart upload of what ``read_part()`` returns until b"" (on a thread)."""
        started = await self._call(
            key,
            "start upload",
            lambda c: c.create_multipart_upload(
                Bucket=self.bucket, Key=full, Metadata={CRC_METADATA: _crc_hex(crc)}
            ),
        )
        upload_id = started["UploadId"]
        parts: list[dict[str, Any]] = []
        size = read_crc = 0
        try:
            while data := await self._thread(key, read_part):
                size += len(data)
                read_crc = await self._thread(key, google_crc32c.extend, read_crc, data)
                number = len(parts) + 1

                def upload(c: Any, data: bytes = data, number: int = number) -> Awaitable[Any]:
                    return c.upload_part(
                        Bucket=self.bucket,
                        Key=full,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=data,
                    )

                answer = await self._call(key, f"upload part {number}", upload)
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            if read_crc != crc:
                raise self._error(key, "put", "the file changed while it was read", refused=False)
            await self._call(
                key,
                "finish upload",
                lambda c: c.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                ),
            )
        except BaseException:
            # An unreachable store keeps the parts; its lifecycle rules must reap them.
            with suppress(ObjectStoreError):
                await self._call(
                    key,
                    "abort upload",
                    lambda c: c.abort_multipart_upload(
                        Bucket=self.bucket, Key=full, UploadId=upload_id
                    ),
                )
            raise
        return ObjectInfo(key, size, crc, time.time())

    async def stream(self, key: str) -> AsyncIterator[bytes]:  # type: ignore[override]
        full = self._full(key)
        answer = await self._call(key, "get", lambda c: c.get_object(Bucket=self.bucket, Key=full))
        expected = _stored_crc(answer.get("Metadata", {}))
        body = answer["Body"]
        crc = 0
        try:
            while True:
                try:
                    piece = await body.read(PIECE)
                except TRANSIENT as e:
                    raise self._error(key, "get", f"cut off: {e}", refused=False) from None
                if not piece:
                    break
                crc = await self._thread(key, google_crc32c.extend, crc, piece)
                yield piece
        finally:
            body.close()
        if expected is not None and crc != expected:
            raise self._error(
                key,
                "get",
                f"checksum mismatch: stored crc32c {_crc_hex(expected)}, read {_crc_hex(crc)}",
                refused=False,
            )

    async def get_file(self, key: str, path: Path) -> ObjectInfo:
        # As local.py writes: into <path>.<random>.part, fsync, rename, fsync the
        # directory. Each piece is written on a worker thread of its own call, so
        # no thread sits waiting on the network while the download runs.
        tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}{PART_SUFFIX}")
        await self._thread(key, _makedirs, path.parent)
        fd = await self._thread(key, _create, tmp)
        size = crc = 0
        try:
            try:
                async for piece in self.stream(key):
                    crc = await self._thread(key, _write_piece, fd, piece, crc)
                    size += len(piece)
                await self._thread(key, os.fsync, fd)
            finally:
                os.close(fd)
            await self._thread(key, os.replace, tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        await self._thread(key, _fsync_dir, path.parent)
        return ObjectInfo(key, size, crc, time.time())

    async def head(self, key: str) -> ObjectInfo | None:
        full = self._full(key)
        try:
            answer = await self._call(
                key, "head", lambda c: c.head_object(Bucket=self.bucket, Key=full)
            )
        except ObjectNotFound:
            return None
        return ObjectInfo(
            key,
            int(answer["ContentLength"]),
            _stored_crc(answer.get("Metadata", {})),
            answer["LastModified"].timestamp(),
        )

    async def list(self, prefix: str) -> list[ObjectInfo]:
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        out: list[ObjectInfo] = []
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}

            def one_page(c: Any, extra: dict[str, str] = extra) -> Awaitable[Any]:
                return c.list_objects_v2(Bucket=self.bucket, Prefix=full_prefix, **extra)

            page = await self._call(prefix or "/", "list", one_page)
            for item in page.get("Contents", []):
                out.append(
                    ObjectInfo(
                        self._relative(item["Key"]),
                        int(item["Size"]),
                        None,
                        item["LastModified"].timestamp(),
                    )
                )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return sorted(out, key=lambda o: o.key)

    async def delete(self, key: str) -> None:
        full = self._full(key)
        with suppress(ObjectNotFound):
            await self._call(key, "delete", lambda c: c.delete_object(Bucket=self.bucket, Key=full))

    async def close(self) -> None:
        stack, self._exit_stack, self._client = self._exit_stack, None, None
        if stack is not None:
            await stack.aclose()
