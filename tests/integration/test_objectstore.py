"""The object-storage interface against the real things: a directory (LocalStore)
and a SeaweedFS S3 server (S3Store). One behaviour suite runs on both; the
S3-only tests cover what only S3 has: stored checksums, credentials, buckets,
an endpoint that goes away and comes back."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import google_crc32c
import pytest
from aiobotocore.session import AioSession
from botocore.config import Config as BotoConfig

from nodedb_server.config import load_config
from nodedb_server.objectstore.base import ObjectNotFound, ObjectStore, ObjectStoreError
from nodedb_server.objectstore.factory import open_store
from nodedb_server.objectstore.local import LocalStore
from nodedb_server.objectstore.s3 import MIN_PART_SIZE, S3Store
from tests.seaweed import ACCESS_KEY, REGION, SECRET_KEY, SeaweedS3
from tests.serverproc import free_port

SECTION = "wal_archive"
# Small enough that a retry test is quick, large enough to see a retry happen.
FAST_RETRIES = {"attempts": 2, "base_delay": 0.01, "max_delay": 0.05}
MakeStore = Callable[[str], ObjectStore]


def crc(data: bytes) -> int:
    return int(google_crc32c.value(data))


def s3_store(seaweed: SeaweedS3, bucket: str, prefix: str = "", **kwargs: object) -> S3Store:
    options: dict[str, object] = {
        "endpoint": seaweed.endpoint,
        "bucket": bucket,
        "prefix": prefix,
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "part_size": MIN_PART_SIZE,
        **kwargs,
    }
    return S3Store(SECTION, **options)  # type: ignore[arg-type]


@pytest.fixture(params=["local", "s3"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    """make_store(prefix): a store of the parametrized kind; prefixes share one root/bucket."""
    opened: list[ObjectStore] = []
    if request.param == "local":

        def make(prefix: str) -> ObjectStore:
            store: ObjectStore = LocalStore(SECTION, tmp_path / "store" / prefix)
            opened.append(store)
            return store
    else:
        seaweed: SeaweedS3 = request.getfixturevalue("seaweed")
        bucket: str = request.getfixturevalue("s3_bucket")

        def make(prefix: str) -> ObjectStore:
            store: ObjectStore = s3_store(seaweed, bucket, prefix)
            opened.append(store)
            return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def s3(seaweed: SeaweedS3, s3_bucket: str) -> AsyncIterator[S3Store]:
    store = s3_store(seaweed, s3_bucket, "p", **FAST_RETRIES)
    yield store
    await store.close()


async def raw_put(seaweed: SeaweedS3, bucket: str, key: str, body: bytes, crc_hex: str) -> None:
    """Write an object behind the store's back, with metadata of our choosing."""
    config = BotoConfig(s3={"addressing_style": "path"})
    async with AioSession().create_client(
        "s3",
        endpoint_url=seaweed.endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=config,
    ) as client:
        await client.put_object(Bucket=bucket, Key=key, Body=body, Metadata={"crc32c": crc_hex})


# -- the behaviour suite, on both stores -------------------------------------


async def test_put_bytes_reads_back_with_its_checksum(make_store: MakeStore) -> None:
    store = make_store("p")
    await store.check()
    data = os.urandom(100_000)
    info = await store.put_bytes("tenants/1/wal/0001.wal", data)
    assert (info.key, info.size, info.crc32c) == ("tenants/1/wal/0001.wal", len(data), crc(data))
    assert await store.get_bytes("tenants/1/wal/0001.wal") == data
    head = await store.head("tenants/1/wal/0001.wal")
    assert head is not None and (head.size, head.crc32c) == (len(data), crc(data))


async def test_put_file_then_get_file_is_a_whole_copy(
    make_store: MakeStore, tmp_path: Path
) -> None:
    store = make_store("p")
    source = tmp_path / "segment"
    source.write_bytes(os.urandom(300_000))
    info = await store.put_file("snap/1", source)
    assert info.crc32c == crc(source.read_bytes())
    target = tmp_path / "restored" / "copy"
    got = await store.get_file("snap/1", target)
    assert target.read_bytes() == source.read_bytes()
    assert (got.size, got.crc32c) == (info.size, info.crc32c)
    assert [p.name for p in target.parent.iterdir()] == ["copy"]  # no .part left behind


async def test_object_larger_than_a_part_round_trips(make_store: MakeStore, tmp_path: Path) -> None:
    store = make_store("p")
    data = os.urandom(2 * MIN_PART_SIZE + 12_345)
    source = tmp_path / "big"
    source.write_bytes(data)
    from_file = await store.put_file("big/file", source)
    from_bytes = await store.put_bytes("big/bytes", data)
    assert from_file.crc32c == from_bytes.crc32c == crc(data)
    assert b"".join([piece async for piece in store.stream("big/file")]) == data
    assert await store.get_bytes("big/bytes") == data
    head = await store.head("big/file")
    assert head is not None and (head.size, head.crc32c) == (len(data), crc(data))


async def test_list_gives_keys_under_a_prefix_in_order(make_store: MakeStore) -> None:
    store = make_store("p")
    for key in ("x/2", "x/10", "x/1", "y/1"):
        await store.put_bytes(key, key.encode())
    assert [o.key for o in await store.list("x/")] == ["x/1", "x/10", "x/2"]
    listed = await store.list("")
    assert [(o.key, o.size) for o in listed] == [("x/1", 3), ("x/10", 4), ("x/2", 3), ("y/1", 3)]
    assert await store.list("z/") == []


async def test_stores_with_different_prefixes_do_not_see_each_other(
    make_store: MakeStore,
) -> None:
    one, two = make_store("one"), make_store("two")
    await one.put_bytes("k", b"from one")
    await two.put_bytes("k", b"from two")
    await two.put_bytes("only-two", b"2")
    assert await one.get_bytes("k") == b"from one"
    assert [o.key for o in await one.list("")] == ["k"]
    assert [o.key for o in await two.list("")] == ["k", "only-two"]
    await one.delete("k")
    assert await two.get_bytes("k") == b"from two"


async def test_missing_object_is_not_found_and_delete_is_idempotent(
    make_store: MakeStore, tmp_path: Path
) -> None:
    store = make_store("p")
    await store.put_bytes("gone", b"x")
    await store.delete("gone")
    await store.delete("gone")
    assert await store.head("gone") is None
    with pytest.raises(ObjectNotFound):
        await store.get_bytes("gone")
    with pytest.raises(ObjectNotFound):
        await store.get_file("gone", tmp_path / "out" / "gone")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


async def test_put_replaces_an_object(make_store: MakeStore) -> None:
    store = make_store("p")
    await store.put_bytes("k", b"first")
    await store.put_bytes("k", b"second!")
    assert await store.get_bytes("k") == b"second!"
    head = await store.head("k")
    assert head is not None and (head.size, head.crc32c) == (7, crc(b"second!"))


# -- S3 only -------------------------------------------------------------------


async def test_s3_read_of_changed_bytes_fails_its_checksum(
    s3: S3Store, seaweed: SeaweedS3, s3_bucket: str, tmp_path: Path
) -> None:
    info = await s3.put_bytes("wal/1", b"the original bytes")
    assert info.crc32c is not None
    await raw_put(seaweed, s3_bucket, "p/wal/1", b"the tampered bytes", f"{info.crc32c:08x}")
    with pytest.raises(ObjectStoreError, match=r"\[wal_archive\] wal/1: get: checksum mismatch"):
        await s3.get_bytes("wal/1")
    target = tmp_path / "restore" / "wal1"
    with pytest.raises(ObjectStoreError, match="checksum mismatch"):
        await s3.get_file("wal/1", target)
    assert list(target.parent.iterdir()) == []  # the partial download was removed


async def test_s3_object_above_part_size_is_uploaded_in_parts(
    s3: S3Store, seaweed: SeaweedS3, s3_bucket: str
) -> None:
    data = os.urandom(2 * MIN_PART_SIZE + 1)
    await s3.put_bytes("big", data)
    # A multipart object's ETag is "<md5 of the part md5s>-<number of parts>".
    etag = seaweed.client().head_object(Bucket=s3_bucket, Key="p/big")["ETag"]
    assert etag.strip('"').endswith("-3")


async def test_s3_check_accepts_good_credentials(s3: S3Store) -> None:
    await s3.check()
    assert s3.url == "s3://" + s3.bucket + "/p"


async def test_s3_check_refuses_wrong_secret_without_naming_it(
    seaweed: SeaweedS3, s3_bucket: str
) -> None:
    secret = "wrong-secret-1234567890"
    store = s3_store(seaweed, s3_bucket, "p", secret_key=secret, **FAST_RETRIES)
    try:
        with pytest.raises(ObjectStoreError) as refused:
            await store.check()
        assert refused.value.refused
        message = str(refused.value)
        assert message.startswith("[wal_archive] ")
        assert secret not in message and ACCESS_KEY not in message and SECRET_KEY not in message
        with pytest.raises(ObjectStoreError) as put_refused:
            await store.put_bytes("k", b"x")
        assert put_refused.value.refused and secret not in str(put_refused.value)
    finally:
        await store.close()


async def test_s3_check_refuses_unknown_access_key(seaweed: SeaweedS3, s3_bucket: str) -> None:
    store = s3_store(seaweed, s3_bucket, access_key="NOSUCHKEY12345", **FAST_RETRIES)
    try:
        with pytest.raises(ObjectStoreError) as refused:
            await store.check()
        assert refused.value.refused and "NOSUCHKEY12345" not in str(refused.value)
    finally:
        await store.close()


async def test_s3_check_refuses_a_missing_bucket(seaweed: SeaweedS3) -> None:
    store = s3_store(seaweed, "no-such-bucket-here", **FAST_RETRIES)
    try:
        with pytest.raises(ObjectStoreError, match="NoSuchBucket") as refused:
            await store.check()
        assert refused.value.refused
    finally:
        await store.close()


async def test_s3_check_with_nothing_listening_is_unreachable_quickly() -> None:
    store = S3Store(
        SECTION,
        endpoint=f"http://127.0.0.1:{free_port()}",
        bucket="nodedb",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        connect_timeout=1.0,
        read_timeout=1.0,
        **FAST_RETRIES,  # type: ignore[arg-type]
    )
    began = time.monotonic()
    try:
        with pytest.raises(ObjectStoreError, match="no answer after 2 attempts") as unreachable:
            await store.check()
    finally:
        await store.close()
    assert not unreachable.value.refused
    assert time.monotonic() - began < 5


async def test_s3_credentials_come_from_the_environment(
    seaweed: SeaweedS3, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(
        overrides={f"{SECTION}.endpoint": seaweed.endpoint, f"{SECTION}.bucket": s3_bucket},
        environ={},
    )
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    bare = open_store(cfg, SECTION)
    try:
        with pytest.raises(ObjectStoreError, match="no credentials") as refused:
            await bare.check()
        assert refused.value.refused
    finally:
        await bare.close()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    store = open_store(cfg, SECTION)
    try:
        await store.check()
        assert store.url == f"s3://{s3_bucket}/"
        await store.put_bytes("k", b"v")
        assert await store.get_bytes("k") == b"v"
    finally:
        await store.close()


async def test_s3_put_during_an_outage_fails_then_works_after_restart(
    s3: S3Store, seaweed: SeaweedS3
) -> None:
    await s3.put_bytes("before", b"kept")
    seaweed.stop()
    try:
        began = time.monotonic()
        with pytest.raises(ObjectStoreError) as unreachable:
            await s3.put_bytes("during", b"lost")
        assert not unreachable.value.refused
        assert time.monotonic() - began < 5
    finally:
        seaweed.start()
    await s3.put_bytes("after", b"stored")
    assert await s3.get_bytes("after") == b"stored"
    assert await s3.get_bytes("before") == b"kept"
    assert await s3.head("during") is None


async def test_s3_put_retries_through_a_short_outage(seaweed: SeaweedS3, s3_bucket: str) -> None:
    # 30 attempts of up to 0.5 s: some 7 s of backoff, well past weed's ~2 s restart.
    store = s3_store(seaweed, s3_bucket, attempts=30, base_delay=0.1, max_delay=0.5)
    try:
        seaweed.stop()
        put = asyncio.create_task(store.put_bytes("k", b"through the outage"))
        try:
            await asyncio.sleep(0.3)
            assert not put.done()  # it is retrying, not failed
        finally:
            await asyncio.to_thread(seaweed.start)
        await put
        assert await store.get_bytes("k") == b"through the outage"
    finally:
        await store.close()
