"""The archive on object storage end to end: the real server (``python -m server``),
the fake upstream serving result files and sending callbacks, and moto's S3 server
on loopback, in memory."""

from __future__ import annotations

import contextlib
import hashlib
import random
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from scripts.fake_upstream_payloads import file_content

from .archive_files import QuietHandler, ThreadedServer
from .conftest import callback_path
from .harness import API_TOKEN, ServerProcess, fake_upstream, wait_until
from .moto_s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY, MotoS3
from .payloads import dumps, seedance
from .test_archive_e2e import prepare_database, run_archive_command

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
FILE_BYTES = 300_000
#: The database backends two replicas can share: one SQLite file (one host), or one
#: PostgreSQL database (any hosts).
DATABASES = ["sqlite", "postgres"]


@pytest.fixture
def s3() -> Iterator[MotoS3]:
    server = MotoS3().start()
    yield server
    server.stop()


@pytest.fixture
def fake() -> Iterator[str]:
    """``scripts/fake_upstream.py`` in its own process; yields its base URL."""
    with fake_upstream(f"--file-bytes={FILE_BYTES}", "--finish-after=0.2", "--tick=0.05") as url:
        yield url


def start_server(tmp_path: Path, s3: MotoS3, bucket: str, **env: str) -> ServerProcess:
    """A replica with its own ARCHIVE_DIR, which ARCHIVE_URL must leave untouched."""
    folder = tmp_path / f"replica-{uuid.uuid4().hex[:6]}"
    settings = {
        **s3.env(bucket, "archive"),
        "ARCHIVE": "on",
        "ARCHIVE_ALLOW_PRIVATE": "on",
        "ARCHIVE_DIR": str(folder / "files"),
    }
    settings.update(env)
    server = ServerProcess(tmp_path / "taskhook.db", env=settings)
    return server.start()


def local_files(tmp_path: Path) -> list[Path]:
    return list(tmp_path.glob("replica-*/files")) + list(tmp_path.glob("data/files"))


def archived(server: ServerProcess, task_id: str) -> dict | None:
    task = httpx.get(f"{server.url}/tasks/{task_id}", headers=AUTH).json()
    results = task.get("results") or [{}]
    return results[0].get("archived")


def fake_task(fake: str, server: ServerProcess, provider: str = "seedance") -> str:
    """A task on the fake upstream that calls taskhook back when it finishes."""
    spec = {"provider": provider, "callback_url": server.url + callback_path(provider)}
    created = httpx.post(f"{fake}/_fake/tasks", json=spec)
    assert created.status_code == 201, created.text
    return str(created.json()["task_id"])


def test_results_land_as_objects_and_are_served_with_ranges(tmp_path, s3, fake):
    bucket = s3.bucket()
    server = start_server(tmp_path, s3, bucket)
    try:
        task_ids = [fake_task(fake, server, "seedance"), fake_task(fake, server, "seedream")]
        copies = [wait_until(lambda t=t: archived(server, t), what="a copy") for t in task_ids]
        for task_id, copy in zip(task_ids, copies, strict=True):
            task = httpx.get(f"{server.url}/tasks/{task_id}", headers=AUTH).json()
            name = urlsplit(task["results"][0]["url"]).path.rsplit("/", 1)[1]
            expected = file_content(name, FILE_BYTES)
            assert copy["sha256"] == hashlib.sha256(expected).hexdigest()
            assert s3.read(bucket, f"archive/{copy['sha256']}") == expected

            whole = httpx.get(server.url + copy["url"], headers=AUTH)
            assert whole.status_code == 200 and whole.content == expected
            part = httpx.get(server.url + copy["url"], headers={**AUTH, "Range": "bytes=-1000"})
            assert part.status_code == 206 and part.content == expected[-1000:]
            assert (
                part.headers["content-range"]
                == f"bytes {FILE_BYTES - 1000}-{FILE_BYTES - 1}/{FILE_BYTES}"
            )

        ready = httpx.get(f"{server.url}/readyz")
        assert ready.json()["checks"]["archive"]["storage"] == f"s3://{bucket}/archive"
        assert ready.json()["checks"]["archive"]["done"] == 2
    finally:
        server.stop()
    logs = server.logs() + ready.text
    assert SECRET_ACCESS_KEY not in logs and ACCESS_KEY_ID not in logs
    assert local_files(tmp_path) == []  # nothing went to a local ARCHIVE_DIR


def test_the_same_bytes_under_two_urls_are_one_object(tmp_path, s3, fake):
    bucket = s3.bucket()
    server = start_server(tmp_path, s3, bucket)
    try:
        task_ids = []
        for copy in (1, 2):  # two signed URLs of one file
            body = seedance(str(uuid.uuid4()))
            body["data"]["video_url"] = f"{fake}/files/shared.mp4?copy={copy}"
            answer = httpx.post(server.url + callback_path("seedance"), content=dumps(body))
            task_ids.append(answer.json()["task_id"])
        copies = [wait_until(lambda t=t: archived(server, t), what="a copy") for t in task_ids]
    finally:
        server.stop()
    digest = hashlib.sha256(file_content("shared.mp4", FILE_BYTES)).hexdigest()
    assert [c["sha256"] for c in copies] == [digest, digest]
    assert [k for k in s3.keys(bucket) if not k.endswith(".taskhook-probe")] == [
        f"archive/{digest}"
    ]


class HeldFile(ThreadedServer):
    """One large result file, sent up to ``hold_at`` bytes, then held until ``release``."""

    def __init__(self, size: int, hold_at: int) -> None:
        self.body = random.Random(size).randbytes(size)
        self.digest = hashlib.sha256(self.body).hexdigest()
        self.held, self.sent = threading.Event(), threading.Event()
        held = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(size))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(held.body[:hold_at])
                    self.wfile.flush()
                    if not held.release.is_set():
                        held.held.set()
                        held.release.wait(60)
                    self.wfile.write(held.body[hold_at:])
                    self.wfile.flush()
                    held.sent.set()

        super().__init__(Handler)
        self.url = f"{self.base}/held.mp4"


def test_a_copy_in_flight_when_s3_goes_away_completes_after_it_returns(tmp_path, s3):
    bucket = s3.bucket()
    # 12 MiB, held after 9: a multipart upload has begun when the bucket goes away.
    held = HeldFile(size=12 * 1024 * 1024, hold_at=9 * 1024 * 1024)
    with held.running():
        server = start_server(tmp_path, s3, bucket)
        try:
            body = seedance(str(uuid.uuid4()))
            body["data"]["video_url"] = held.url
            answer = httpx.post(server.url + callback_path("seedance"), content=dumps(body))
            task_id = answer.json()["task_id"]
            wait_until(held.held.is_set, what="the download to be under way")
            wait_until(lambda: s3.unfinished_uploads(bucket), what="a multipart upload")

            with s3.outage() as down:

                def not_ready() -> httpx.Response | None:
                    ready = httpx.get(f"{server.url}/readyz", timeout=10)
                    return ready if ready.status_code == 503 else None

                ready = wait_until(not_ready, what="/readyz to report the bucket")
                reasons = " ".join(ready.json()["reasons"])
                assert f"s3://{bucket}/archive" in reasons
                assert SECRET_ACCESS_KEY not in ready.text

                held.release.set()  # the rest of the file arrives while S3 is down
                wait_until(held.sent.is_set, what="the whole file to be sent")
                wait_until(lambda: down.seen("/.incoming/"), what="the upload to meet the outage")
                assert archived(server, task_id) is None

            copy = wait_until(lambda: archived(server, task_id), timeout=60, what="the copy")
            assert copy["sha256"] == held.digest and copy["bytes"] == len(held.body)
            assert s3.read(bucket, f"archive/{held.digest}") == held.body
            assert s3.unfinished_uploads(bucket) == []
            assert [k for k in s3.keys(bucket) if ".incoming/" in k] == []
            part = httpx.get(server.url + copy["url"], headers={**AUTH, "Range": "bytes=10-19"})
            assert part.content == held.body[10:20]
            assert httpx.get(f"{server.url}/readyz").status_code == 200
        finally:
            server.stop()
    assert SECRET_ACCESS_KEY not in server.logs()


@pytest.fixture(params=DATABASES)
def shared_database(request) -> dict[str, str]:
    """The settings that put two replicas on one database: none for SQLite (the harness
    gives both the same file), ``DATABASE_URL`` of a scratch database for PostgreSQL."""
    if request.param == "sqlite":
        return {}
    return {"DATABASE_URL": request.getfixturevalue("pg_databases").fresh()}


def test_replicas_share_the_bucket(tmp_path, s3, fake, shared_database):
    """A replica that archives and one that does not: the second serves the first's files
    from the bucket, each with its own working directory and ARCHIVE_DIR."""
    bucket = s3.bucket()
    copier = start_server(tmp_path, s3, bucket, **shared_database)
    reader = start_server(tmp_path, s3, bucket, ARCHIVE="off", **shared_database)
    try:
        task_id = fake_task(fake, copier)
        copy = wait_until(lambda: archived(copier, task_id), what="the copy")
        served = httpx.get(reader.url + copy["url"], headers={**AUTH, "Range": "bytes=0-99"})
        assert served.status_code == 206
        assert (
            hashlib.sha256(s3.read(bucket, f"archive/{copy['sha256']}")).hexdigest()
            == copy["sha256"]
        )
        whole = httpx.get(reader.url + copy["url"], headers=AUTH)
        assert hashlib.sha256(whole.content).hexdigest() == copy["sha256"]
        assert whole.content[:100] == served.content
    finally:
        reader.stop()
        copier.stop()
    assert local_files(tmp_path) == []


def test_the_archive_command_copies_into_the_bucket(tmp_path, s3, fake):
    bucket = s3.bucket()
    urls = [f"{fake}/files/old-1.mp4", f"{fake}/files/old-2.mp4"]
    prepare_database(tmp_path, urls)
    done = run_archive_command(tmp_path, **s3.env(bucket, "archive"))
    assert done.returncode == 0, done.stderr
    assert "copied 2 file(s)" in done.stdout and "failed 0" in done.stdout
    for name in ("old-1.mp4", "old-2.mp4"):
        expected = file_content(name, FILE_BYTES)
        assert s3.read(bucket, f"archive/{hashlib.sha256(expected).hexdigest()}") == expected
    assert SECRET_ACCESS_KEY not in done.stdout + done.stderr
    assert not (tmp_path / "files").exists()
