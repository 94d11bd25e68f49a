"""The archive storage contract, run against every storage: a local folder and
S3-compatible object storage (moto's S3 server on loopback). Storage-specific
checks (the folder's layout, S3's multipart path and credentials) follow."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from server.archive.folder import TEMP_PREFIX, FolderStorage, archive_path, cleanup_temp_files
from server.archive.s3 import S3Storage, aws_environment
from server.archive.storage import (
    ArchiveStorage,
    FileMissing,
    StorageError,
    parse_archive_url,
    storage_for,
)
from server.errors import ConfigError
from server.settings import Settings

from .moto_s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, MotoS3

PART = 5 * 1024 * 1024  # S3's smallest part: the S3 storage's multipart path in tests
SMALL = random.Random(1).randbytes(70_000)
LARGE = random.Random(2).randbytes(2 * PART + 12_345)  # three parts


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3]:
    server = MotoS3().start()
    yield server
    server.stop()


@dataclass
class Home:
    """One storage under test, and how to look behind its back."""

    storage: ArchiveStorage
    stored: Any  # () -> the digests it holds
    leftovers: Any  # () -> anything an unfinished put left


def s3_storage(moto: MotoS3, bucket: str, **options: Any) -> S3Storage:
    return S3Storage(
        parse_archive_url(f"s3://{bucket}/archive"),
        endpoint=moto.endpoint,
        region=REGION,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        part_size=PART,
        **options,
    )


@pytest.fixture(params=["folder", "s3"])
async def home(request, tmp_path, moto) -> AsyncIterator[Home]:
    if request.param == "folder":
        root = tmp_path / "files"
        storage: ArchiveStorage = FolderStorage(root)

        def folder_files() -> list[str]:
            return sorted(p.name for p in root.glob("??/*"))

        home = Home(storage, folder_files, lambda: sorted(root.glob(TEMP_PREFIX + "*")))
    else:
        bucket = moto.bucket()
        storage = s3_storage(moto, bucket)

        def objects() -> list[str]:
            keys = moto.keys(bucket)
            return sorted(k.rsplit("/", 1)[1] for k in keys if len(k.rsplit("/", 1)[1]) == 64)

        def unfinished() -> list[str]:
            incoming = [k for k in moto.keys(bucket) if "/.incoming/" in k]
            return incoming + moto.unfinished_uploads(bucket)

        home = Home(storage, objects, unfinished)
    await home.storage.open(cleanup=True)
    yield home
    await home.storage.close()


async def chunks(data: bytes, size: int = 65_536) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def read_all(storage: ArchiveStorage, sha: str, start: int, end: int) -> bytes:
    return b"".join([chunk async for chunk in await storage.open_range(sha, start, end)])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the contract, for every storage ---------------------------------------------------


@pytest.mark.parametrize("data", [SMALL, LARGE, b""], ids=["small", "multipart", "empty"])
async def test_put_stores_under_the_digest_and_reads_back(home, data):
    stored = await home.storage.put(chunks(data), "video/mp4")
    assert (stored.sha256, stored.bytes) == (sha(data), len(data))
    assert home.stored() == [sha(data)]
    assert await home.storage.exists(sha(data))
    assert await read_all(home.storage, sha(data), 0, len(data)) == data
    assert home.leftovers() == []


async def test_ranges_read_exactly_the_bytes_asked_for(home):
    digest = (await home.storage.put(chunks(LARGE), "video/mp4")).sha256
    for start, end in [(0, 1), (100, 200), (PART - 3, PART + 3), (len(LARGE) - 5, len(LARGE))]:
        assert await read_all(home.storage, digest, start, end) == LARGE[start:end]


async def test_the_same_bytes_are_stored_once(home):
    first = await home.storage.put(chunks(SMALL), "image/png")
    again = await home.storage.put(chunks(SMALL, 999), "application/octet-stream")
    assert first == again
    assert home.stored() == [sha(SMALL)]


class SourceBroke(Exception):
    pass


@pytest.mark.parametrize("data", [SMALL, LARGE], ids=["small", "multipart"])
async def test_a_failing_source_leaves_nothing_and_its_error_passes_through(home, data):
    async def breaks_midway() -> AsyncIterator[bytes]:
        async for chunk in chunks(data[: len(data) * 3 // 4]):
            yield chunk
        raise SourceBroke("the origin went away")

    with pytest.raises(SourceBroke):
        await home.storage.put(breaks_midway(), "video/mp4")
    assert home.stored() == [] and home.leftovers() == []
    assert not await home.storage.exists(sha(data))


async def test_a_cancelled_put_leaves_nothing(home):
    started, hold = asyncio.Event(), asyncio.Event()

    async def held() -> AsyncIterator[bytes]:
        yield LARGE[: PART + 1]  # past one part: the S3 storage has begun a multipart upload
        started.set()
        await hold.wait()
        yield LARGE[PART + 1 :]

    putting = asyncio.create_task(home.storage.put(held(), "video/mp4"))
    await started.wait()
    putting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await putting
    assert home.stored() == [] and home.leftovers() == []


async def test_a_missing_file_or_a_bad_digest_is_file_missing(home):
    with pytest.raises(FileMissing):
        await home.storage.open_range(sha(b"never stored"), 0, 10)
    with pytest.raises(FileMissing):
        await home.storage.open_range("../" + "a" * 61, 0, 10)
    assert not await home.storage.exists(sha(b"never stored"))


async def test_delete_removes_and_is_idempotent(home):
    digest = (await home.storage.put(chunks(SMALL), "image/png")).sha256
    await home.storage.delete(digest)
    await home.storage.delete(digest)
    assert home.stored() == [] and not await home.storage.exists(digest)


async def test_status_is_none_when_the_storage_takes_files(home):
    assert await home.storage.status() is None
    assert SECRET_ACCESS_KEY not in repr(home.storage) + home.storage.location


# -- the folder ------------------------------------------------------------------------


async def test_folder_layout_is_sharded_by_the_first_two_hex_digits(tmp_path):
    storage = FolderStorage(tmp_path)
    digest = (await storage.put(chunks(SMALL), "image/png")).sha256
    assert (tmp_path / digest[:2] / digest).read_bytes() == SMALL
    assert archive_path(tmp_path, digest) == tmp_path / digest[:2] / digest


async def test_folder_status_says_why_it_cannot_take_files(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    storage = FolderStorage(blocker / "files")
    assert "not writable" in (await storage.status() or "")
    with pytest.raises(StorageError) as caught:
        await storage.put(chunks(SMALL), "image/png")
    assert not caught.value.permanent and caught.value.reason == "storage"
    with pytest.raises(StorageError):
        await storage.open(cleanup=True)


async def test_folder_open_with_cleanup_removes_only_partial_files(tmp_path):
    storage = FolderStorage(tmp_path)
    digest = (await storage.put(chunks(SMALL), "image/png")).sha256
    for name in (".tmp-a1b2", ".tmp-c3d4"):
        (tmp_path / name).write_bytes(b"partial")
    await storage.open(cleanup=False)
    assert len(list(tmp_path.glob(".tmp-*"))) == 2
    await storage.open(cleanup=True)
    assert list(tmp_path.glob(".tmp-*")) == [] and await storage.exists(digest)
    assert cleanup_temp_files(tmp_path / "missing") == 0


@pytest.mark.parametrize("bad", ["../" + "a" * 61, "A" * 64, "a" * 63, ""])
def test_archive_path_accepts_only_digests(tmp_path: Path, bad: str) -> None:
    with pytest.raises(FileMissing):
        archive_path(tmp_path, bad)


# -- S3-compatible object storage ------------------------------------------------------


async def test_s3_keys_are_the_prefix_and_the_digest(moto):
    bucket = moto.bucket()
    storage = s3_storage(moto, bucket)
    small = (await storage.put(chunks(SMALL), "image/png")).sha256
    large = (await storage.put(chunks(LARGE), "video/mp4")).sha256
    assert {f"archive/{small}", f"archive/{large}"} <= set(moto.keys(bucket))
    assert moto.read(bucket, f"archive/{large}") == LARGE
    head = moto.client().head_object(Bucket=bucket, Key=f"archive/{small}")
    assert head["ContentType"] == "image/png"


async def test_s3_failures_are_storage_errors_without_credentials(moto):
    storage = s3_storage(moto, "no-such-bucket-here", retry_timeout=0.5)
    with pytest.raises(StorageError) as caught:
        await storage.put(chunks(SMALL), "image/png")
    reason = await storage.status()
    assert reason is not None and "s3://no-such-bucket-here/archive" in reason
    for text in (caught.value.message, reason, repr(storage)):
        assert SECRET_ACCESS_KEY not in text and ACCESS_KEY_ID not in text


async def test_s3_unreachable_is_a_storage_error_and_a_status_reason(moto):
    bucket = moto.bucket()
    storage = s3_storage(moto, bucket, retry_timeout=0.5)
    with moto.outage() as down:
        with pytest.raises(StorageError) as caught:
            await storage.put(chunks(SMALL), "image/png")
        reason = await storage.status()
        assert down.requests  # it did ask, and was answered 503
    assert not caught.value.permanent
    assert reason is not None and f"s3://{bucket}/archive" in reason
    assert SECRET_ACCESS_KEY not in caught.value.message + reason
    assert await storage.status() is None  # back


async def test_s3_cleanup_removes_stale_incoming_objects(moto):
    bucket = moto.bucket()
    moto.client().put_object(Bucket=bucket, Key="archive/.incoming/left-by-a-crash", Body=b"x")
    assert await s3_storage(moto, bucket).remove_stale_incoming() == 0  # not an hour old
    assert await s3_storage(moto, bucket, stale_after=0.0).remove_stale_incoming() == 1
    assert moto.keys(bucket) == []


def test_settings_choose_the_storage(tmp_path):
    assert isinstance(storage_for(Settings(archive_dir=str(tmp_path))), FolderStorage)
    settings = Settings.from_env({"ARCHIVE_URL": "s3://bucket/some/prefix/"}, dotenv=None)
    assert isinstance(storage_for(settings), S3Storage)
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }
    s3 = S3Storage.from_settings(settings, environ=env)
    assert s3.location == "s3://bucket/some/prefix" and s3.endpoint == "http://127.0.0.1:9"
    assert SECRET_ACCESS_KEY not in repr(s3) and ACCESS_KEY_ID not in repr(s3)
    assert SECRET_ACCESS_KEY not in repr(settings)


def test_aws_variables_come_from_the_environment_over_dotenv(tmp_path, monkeypatch):
    dotenv = tmp_path / ".env"
    dotenv.write_text("AWS_REGION=eu-west-1\nAWS_ENDPOINT_URL=http://from-dotenv:9000\nOTHER=x\n")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://from-environment:9000")
    env = aws_environment(dotenv)
    assert env["AWS_REGION"] == "eu-west-1"
    assert env["AWS_ENDPOINT_URL"] == "http://from-environment:9000"
    assert "OTHER" not in env


@pytest.mark.parametrize(
    "url",
    [
        "bucket/prefix",
        "https://bucket/prefix",
        "s3://",
        "s3://AKIA:secret@bucket/prefix",
        "s3://bucket:9000/prefix",
        "s3://bucket/prefix?x=1",
    ],
)
def test_a_bad_archive_url_is_a_config_error_without_credentials(url):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"ARCHIVE_URL": url}, dotenv=None)
    assert "ARCHIVE_URL" in str(caught.value) and "secret" not in str(caught.value)
    with pytest.raises(ConfigError):
        parse_archive_url(url)


def test_a_bucket_takes_files_of_at_most_five_gib(moto):
    assert s3_storage(moto, "any").max_file_bytes == 5 * 1024**3
