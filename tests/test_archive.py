"""The archive: copies, retries, refusals, /files with Range, never delaying a callback."""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from scripts.fake_upstream import serving
from server.archive.archiver import Archiver
from server.archive.folder import TEMP_PREFIX, FolderStorage, archive_path
from server.core.render import task_json
from server.ingest import receive
from server.store import Store, open_store

from .archive_files import FileServer, content, digest
from .conftest import callback_path, serve_app
from .harness import API_TOKEN, eventually
from .payloads import dumps, seedance, seedream

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def temp_files(folder: str) -> list[Path]:
    return list(Path(folder).rglob(TEMP_PREFIX + "*"))


def stored_files(folder: str) -> list[str]:
    return [p.name for p in Path(folder).rglob("*") if p.is_file()]


def video_callback(url: str, task_id: str | None = None) -> bytes:
    body = seedance(task_id or str(uuid.uuid4()))
    body["data"]["video_url"] = url
    return dumps(body)


def image_callback(url: str) -> bytes:
    body = seedream()
    body["data"][0]["image_url"] = url
    return dumps(body)


@pytest.fixture
async def files() -> AsyncIterator[tuple[FileServer, str]]:
    server = FileServer()
    async with serving(server.app()) as base:
        yield server, base
        server.release.set()  # never leave a held download behind


@pytest.fixture
def archive_settings(settings):
    return replace(settings, archive=True, archive_allow_private=True, archive_concurrency=2)


@contextlib.asynccontextmanager
async def running_archiver(settings, **options: Any) -> AsyncIterator[tuple[Store, Archiver]]:
    async with open_store(settings) as store:
        archiver = Archiver(settings, store, poll_interval=0.05, retry_first=0.01, **options)
        await archiver.start()
        try:
            yield store, archiver
        finally:
            await archiver.stop()


async def result_of(store: Store, task_id: str) -> dict:
    return task_json(await store.get_task(task_id))["results"][0]


# -- through the app ----------------------------------------------------------


async def test_images_and_videos_are_archived_with_their_hashes(archive_settings, files):
    server, base = files
    async with serve_app(archive_settings, **AUTH) as client:
        video = await client.post(
            callback_path("seedance"), content=video_callback(f"{base}/f/a.mp4")
        )
        image = await client.post(
            callback_path("seedream"), content=image_callback(f"{base}/f/b.jpg")
        )
        assert video.status_code == image.status_code == 200

        async def archived(task_id: str) -> dict | None:
            result = (await client.get(f"/tasks/{task_id}")).json()["results"][0]
            return result.get("archived")

        got_video = await eventually(lambda: archived(video.json()["task_id"]), "video copy")
        got_image = await eventually(lambda: archived(image.json()["task_id"]), "image copy")
        assert got_video == {
            "url": f"/files/{digest('a.mp4')}",
            "sha256": digest("a.mp4"),
            "bytes": 20_000,
            "content_type": "video/mp4",
        }
        assert got_image["sha256"] == digest("b.jpg")
        assert got_image["content_type"] == "image/jpeg"
        stored = archive_path(Path(archive_settings.archive_dir), digest("a.mp4"))
        assert stored.read_bytes() == content("a.mp4")
        listed = (await client.get("/tasks?provider=seedream")).json()["tasks"]
        assert listed[0]["results"][0]["archived"] == got_image
        ready = (await client.get("/readyz")).json()
        assert ready["checks"]["archive"]["ok"] is True
        assert ready["checks"]["archive"]["done"] == 2


async def test_files_serves_ranges_and_refuses_the_rest(archive_settings, files):
    server, base = files
    async with serve_app(archive_settings, **AUTH) as client:
        answer = await client.post(
            callback_path("seedance"), content=video_callback(f"{base}/f/r.mp4")
        )

        async def archived() -> bool:
            task = (await client.get(f"/tasks/{answer.json()['task_id']}")).json()
            return "archived" in task["results"][0]

        await eventually(archived, "copy")
        url, body = f"/files/{digest('r.mp4')}", content("r.mp4")

        whole = await client.get(url)
        assert whole.status_code == 200 and whole.content == body
        assert whole.headers["content-type"] == "video/mp4"
        assert whole.headers["accept-ranges"] == "bytes"

        part = await client.get(url, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == body[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{len(body)}"

        tail = await client.get(url, headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == body[-10:]

        beyond = await client.get(url, headers={"Range": f"bytes={len(body) + 5}-"})
        assert beyond.status_code == 416
        assert beyond.headers["content-range"] == f"bytes */{len(body)}"

        assert (await client.get(url.upper().replace("/FILES/", "/files/"))).status_code == 200
        unknown = await client.get("/files/" + "0" * 64)
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
        assert (await client.get("/files/not-a-digest")).status_code == 404
        assert (await client.get("/files/../../taskhook.db")).status_code == 404
        anonymous = await client.get(url, headers={"Authorization": ""})
        assert anonymous.status_code == 401


async def test_a_held_download_never_delays_a_callback_answer(archive_settings, files):
    server, base = files
    server.hold.add("slow.mp4")
    async with serve_app(archive_settings, **AUTH) as client:
        slow = await client.post(
            callback_path("seedance"), content=video_callback(f"{base}/f/slow.mp4")
        )
        assert slow.status_code == 200
        await server.held.wait()  # the download is open and stuck after its first chunk

        other = await client.post(
            callback_path("seedream"), content=image_callback(f"{base}/f/x.jpg")
        )
        assert other.status_code == 200 and other.json()["status"] == "succeeded"
        assert not server.release.is_set()
        slow_task = (await client.get(f"/tasks/{slow.json()['task_id']}")).json()
        assert "archived" not in slow_task["results"][0]

        server.release.set()

        async def archived() -> bool:
            task = (await client.get(f"/tasks/{slow.json()['task_id']}")).json()
            return "archived" in task["results"][0]

        await eventually(archived, "the slow copy")


# -- the Archiver on its own --------------------------------------------------


async def test_a_transient_failure_is_retried(archive_settings, files):
    server, base = files
    server.fail_once.add("flaky.mp4")
    async with running_archiver(archive_settings) as (store, _archiver):
        outcome = await receive(store, "seedance", video_callback(f"{base}/f/flaky.mp4"))

        async def archived() -> dict | None:
            return (await result_of(store, outcome.task_id)).get("archived")

        got = await eventually(archived, "the retried copy")
        assert "archive_error" not in await result_of(store, outcome.task_id)
    assert got["sha256"] == digest("flaky.mp4")
    assert server.requests["flaky.mp4"] == 2


async def test_a_file_too_large_fails_for_good(archive_settings, files):
    server, base = files
    settings = replace(archive_settings, archive_max_bytes=1000)
    async with running_archiver(settings) as (store, _archiver):
        outcome = await receive(store, "seedance", video_callback(f"{base}/f/big.mp4"))

        async def error() -> dict | None:
            return (await result_of(store, outcome.task_id)).get("archive_error")

        got = await eventually(error, "the failure")
        assert got["code"] == "too_large" and got["final"] is True
        assert await store.archive_counts() == {"failed": 1}
    assert server.requests["big.mp4"] == 1
    assert temp_files(settings.archive_dir) == []


async def test_a_file_larger_than_the_storage_takes_fails_as_too_large(archive_settings, files):
    _server, base = files
    small = FolderStorage(archive_settings.archive_dir)
    small.max_file_bytes = 1000  # as a bucket caps files at 5 GiB, whatever ARCHIVE_MAX_BYTES says
    async with running_archiver(archive_settings, storage=small) as (store, _archiver):
        outcome = await receive(store, "seedance", video_callback(f"{base}/f/capped.mp4"))

        async def error() -> dict | None:
            return (await result_of(store, outcome.task_id)).get("archive_error")

        got = await eventually(error, "the failure")
        assert got["code"] == "too_large" and "1000 bytes" in got["message"]


async def test_a_missing_upstream_file_fails_with_its_status(archive_settings, files):
    server, base = files
    async with running_archiver(archive_settings) as (store, _archiver):
        outcome = await receive(store, "seedance", video_callback(f"{base}/f/missing.mp4"))

        async def error() -> dict | None:
            return (await result_of(store, outcome.task_id)).get("archive_error")

        got = await eventually(error, "the failure")
    assert got["code"] == "http_404" and got["final"] is True


async def test_private_addresses_are_refused_unless_allowed(settings, files):
    server, base = files
    refusing = replace(settings, archive=True, archive_allow_private=False)
    async with running_archiver(refusing) as (store, _archiver):
        outcome = await receive(store, "seedance", video_callback(f"{base}/f/p.mp4"))

        async def error() -> dict | None:
            return (await result_of(store, outcome.task_id)).get("archive_error")

        got = await eventually(error, "the refusal")
    assert got["code"] == "private_address" and got["final"] is True
    assert "ARCHIVE_ALLOW_PRIVATE" in got["message"]
    assert server.requests["p.mp4"] == 0


async def test_a_transient_failure_after_expiry_marks_the_copy_expired(archive_settings, files):
    server, base = files
    server.fail_once.add("late.mp4")
    far_future = 4_000_000_000.0  # past any expiry computed today
    async with running_archiver(archive_settings, clock=lambda: far_future) as (store, _a):
        outcome = await receive(store, "seedance", video_callback(f"{base}/f/late.mp4"))

        async def error() -> dict | None:
            return (await result_of(store, outcome.task_id)).get("archive_error")

        got = await eventually(error, "the expiry")
    assert got["code"] == "expired" and got["final"] is True
    assert "http_503" in got["message"] or "503" in got["message"]
    assert server.requests["late.mp4"] == 1


async def test_stop_cancels_a_download_and_gives_its_row_back(archive_settings, files):
    server, base = files
    server.hold.add("stuck.mp4")
    async with running_archiver(archive_settings) as (store, archiver):
        await receive(store, "seedance", video_callback(f"{base}/f/stuck.mp4"))
        await server.held.wait()

        async def partial_file() -> list[Path]:
            return temp_files(archive_settings.archive_dir)

        await eventually(partial_file, "the partial download")
        await archiver.stop()
        assert await store.archive_counts() == {"pending": 1}
        assert temp_files(archive_settings.archive_dir) == []


async def test_status_says_when_the_folder_is_unusable(archive_settings, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the archive folder should be")
    async with open_store(archive_settings) as store:
        archiver = Archiver(replace(archive_settings, archive_dir=str(blocker)), store)
        status = await archiver.status()
    assert status["ok"] is False and "not writable" in status["reason"]


async def test_the_same_bytes_under_two_urls_are_stored_once(archive_settings, files):
    server, base = files
    async with running_archiver(archive_settings) as (store, _archiver):
        first = await receive(store, "seedance", video_callback(f"{base}/f/same.mp4"))
        second = await receive(store, "seedance", video_callback(f"{base}/f/same.mp4?v=2"))

        async def both() -> bool:
            results = [await result_of(store, o.task_id) for o in (first, second)]
            return all("archived" in r for r in results)

        await eventually(both, "both copies")
    stored = stored_files(archive_settings.archive_dir)
    assert stored == [hashlib.sha256(content("same.mp4")).hexdigest()]
