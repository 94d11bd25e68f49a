"""The archive on S3-compatible object storage, in process: the app and the archiver
against moto's S3 server on loopback (the end-to-end tests run the real server)."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import anyio
import pytest

from scripts.fake_upstream import serving
from server.archive.archiver import Archiver
from server.archive.s3 import S3Storage
from server.archive.storage import parse_archive_url
from server.core.render import task_json
from server.ingest import receive
from server.store import Store, open_store

from .archive_files import FileServer, content, digest
from .conftest import callback_path, serve_app
from .harness import API_TOKEN, eventually
from .moto_s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, MotoS3
from .payloads import dumps, seedance

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
def moto() -> Iterator[MotoS3]:
    server = MotoS3().start()
    yield server
    server.stop()


@pytest.fixture
async def files() -> AsyncIterator[tuple[FileServer, str]]:
    server = FileServer()
    async with serving(server.app()) as base:
        yield server, base
        server.release.set()


@pytest.fixture
def bucket_settings(settings, moto, monkeypatch):
    """Settings that keep the archive in a new bucket (AWS_* in this process's environment)."""

    def make(bucket: str) -> Any:
        env = moto.env(bucket, "results")
        for name, value in env.items():
            if name.startswith("AWS_"):
                monkeypatch.setenv(name, value)
        return replace(
            settings, archive=True, archive_allow_private=True, archive_url=env["ARCHIVE_URL"]
        )

    return make


def video_callback(url: str) -> bytes:
    body = seedance(str(uuid.uuid4()))
    body["data"]["video_url"] = url
    return dumps(body)


async def test_results_land_in_the_bucket_and_are_served_from_it(
    settings, moto, files, bucket_settings
):
    _server, base = files
    bucket = moto.bucket()
    async with serve_app(bucket_settings(bucket), **AUTH) as client:
        answer = await client.post(
            callback_path("seedance"), content=video_callback(f"{base}/f/a.mp4")
        )
        task_id = answer.json()["task_id"]

        async def archived() -> dict | None:
            return (await client.get(f"/tasks/{task_id}")).json()["results"][0].get("archived")

        copy = await eventually(archived, "the copy")
        assert copy == {
            "url": f"/files/{digest('a.mp4')}",
            "sha256": digest("a.mp4"),
            "bytes": 20_000,
            "content_type": "video/mp4",
        }
        assert moto.read(bucket, f"results/{digest('a.mp4')}") == content("a.mp4")

        whole = await client.get(copy["url"])
        assert whole.content == content("a.mp4")
        assert whole.headers["content-type"] == "video/mp4"
        part = await client.get(copy["url"], headers={"Range": "bytes=1000-1999"})
        assert part.status_code == 206 and part.content == content("a.mp4")[1000:2000]
        assert part.headers["content-range"] == "bytes 1000-1999/20000"

        ready = await client.get("/readyz")
        check = ready.json()["checks"]["archive"]
        assert ready.status_code == 200 and check["ok"] is True
        assert check["storage"] == f"s3://{bucket}/results"
        assert SECRET_ACCESS_KEY not in ready.text and ACCESS_KEY_ID not in ready.text
    assert not await anyio.Path(settings.archive_dir).exists()  # nothing on local disk


async def test_a_file_recorded_but_gone_from_the_bucket_is_404(moto, files, bucket_settings):
    _server, base = files
    bucket = moto.bucket()
    async with serve_app(bucket_settings(bucket), **AUTH) as client:
        answer = await client.post(
            callback_path("seedance"), content=video_callback(f"{base}/f/g.mp4")
        )
        task_id = answer.json()["task_id"]

        async def archived() -> dict | None:
            return (await client.get(f"/tasks/{task_id}")).json()["results"][0].get("archived")

        copy = await eventually(archived, "the copy")
        moto.client().delete_object(Bucket=bucket, Key=f"results/{copy['sha256']}")
        gone = await client.get(copy["url"])
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"


@contextlib.asynccontextmanager
async def archiver_on(settings: Any, storage: S3Storage) -> AsyncIterator[tuple[Store, Archiver]]:
    async with open_store(settings) as store:
        archiver = Archiver(
            settings, store, poll_interval=0.05, retry_first=0.05, retry_max=0.2, storage=storage
        )
        await archiver.start()
        try:
            yield store, archiver
        finally:
            await archiver.stop()


async def test_an_outage_longer_than_the_client_retries_shows_and_is_retried(
    moto, files, bucket_settings
):
    server, base = files
    bucket = moto.bucket()
    storage = S3Storage(
        parse_archive_url(f"s3://{bucket}/results"),
        endpoint=moto.endpoint,
        region=REGION,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        retry_timeout=0.3,  # give up on one attempt quickly; the archive's backoff retries
    )
    on = bucket_settings(bucket)
    async with archiver_on(on, storage) as (store, archiver):
        with moto.outage() as down:
            # The callback is answered while the bucket is down: it never waits for a copy.
            outcome = await receive(store, "seedance", video_callback(f"{base}/f/o.mp4"))
            assert outcome.status == "succeeded"

            async def failed() -> dict | None:
                result = task_json(await store.get_task(outcome.task_id))["results"][0]
                return result.get("archive_error")

            error = await eventually(failed, "the failed attempt to show on the task")
            assert error["code"] == "storage" and error["final"] is False
            assert f"s3://{bucket}/results" in error["message"]
            status = await archiver.status()
            assert status["ok"] is False and f"s3://{bucket}/results" in status["reason"]
            assert down.seen(digest("o.mp4"))
            text = json.dumps([error, status])
            assert SECRET_ACCESS_KEY not in text and ACCESS_KEY_ID not in text

        async def archived() -> dict | None:
            result = task_json(await store.get_task(outcome.task_id))["results"][0]
            return result.get("archived")

        copy = await eventually(archived, "the copy once the bucket is back")
        assert copy["sha256"] == digest("o.mp4")
        assert moto.read(bucket, f"results/{digest('o.mp4')}") == content("o.mp4")
        assert (await archiver.status())["ok"] is True
        assert server.requests["o.mp4"] >= 2  # downloaded again for the retry


async def test_files_are_served_from_the_bucket_with_archive_off(moto, files, bucket_settings):
    """``/files`` does not depend on the archiver: a replica with ARCHIVE=off serves too."""
    _server, base = files
    bucket = moto.bucket()
    on = bucket_settings(bucket)
    async with serve_app(on, **AUTH) as client:
        answer = await client.post(
            callback_path("seedance"), content=video_callback(f"{base}/f/s.mp4")
        )
        task_id = answer.json()["task_id"]

        async def archived() -> dict | None:
            return (await client.get(f"/tasks/{task_id}")).json()["results"][0].get("archived")

        copy = await eventually(archived, "the copy")
    async with serve_app(replace(on, archive=False), **AUTH) as reader:
        served = await reader.get(copy["url"], headers={"Range": "bytes=0-9"})
        assert served.status_code == 206 and served.content == content("s.mp4")[:10]
        assert "archive" not in (await reader.get("/readyz")).json()["checks"]
