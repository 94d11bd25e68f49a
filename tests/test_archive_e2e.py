"""The archive in real processes: a SIGKILL mid-download, restart, and the archive command."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
import uuid
from pathlib import Path

import httpx
import pytest

from server.archive.folder import TEMP_PREFIX, archive_path
from server.ingest import receive
from server.settings import Settings
from server.store import open_store

from .archive_files import CHUNK, QuietHandler, ThreadedServer, content, digest
from .conftest import callback_path
from .harness import API_TOKEN, ROOT, ServerProcess, run_cli, wait_until
from .payloads import dumps, seedance

pytestmark = pytest.mark.e2e


class ThreadedFiles(ThreadedServer):
    """A file server on its own threads, for tests that are not async themselves."""

    def __init__(self) -> None:
        self.hold: set[str] = set()
        self.held = threading.Event()
        files = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                name = self.path.rsplit("/", 1)[-1]
                if name.startswith("missing"):
                    self.send_error(404)
                    return
                body = content(name)
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the client may be killed meanwhile
                    self.wfile.write(body[:CHUNK])
                    self.wfile.flush()
                    if name in files.hold:
                        files.held.set()
                        files.release.wait(30)
                    self.wfile.write(body[CHUNK:])

        super().__init__(Handler)


def video_callback(url: str) -> tuple[str, bytes]:
    task_id = str(uuid.uuid4())
    body = seedance(task_id)
    body["data"]["video_url"] = url
    return task_id, dumps(body)


def archive_env(tmp_path: Path) -> dict[str, str]:
    return {
        "ARCHIVE": "on",
        "ARCHIVE_ALLOW_PRIVATE": "on",
        "ARCHIVE_DIR": str(tmp_path / "files"),
    }


def temp_files(folder: Path) -> list[Path]:
    return list(folder.glob(TEMP_PREFIX + "*"))


def test_a_download_killed_midway_completes_after_a_restart(tmp_path):
    files_dir = tmp_path / "files"
    with ThreadedFiles().running() as files:
        files.hold.add("killed.mp4")
        first = ServerProcess(tmp_path / "taskhook.db", env=archive_env(tmp_path)).start()
        try:
            task_id, body = video_callback(f"{files.base}/f/killed.mp4")
            answer = httpx.post(first.url + callback_path("seedance"), content=body, timeout=10)
            assert answer.status_code == 200
            wait_until(files.held.is_set, what="the download to start")
            wait_until(lambda: temp_files(files_dir), what="a partial file")
        finally:
            first.kill()
        assert temp_files(files_dir), "SIGKILL leaves the partial file behind"

        files.hold.clear()
        second = ServerProcess(tmp_path / "taskhook.db", env=archive_env(tmp_path)).start()
        try:
            headers = {"Authorization": f"Bearer {API_TOKEN}"}

            def archived() -> dict | None:
                task = httpx.get(f"{second.url}/tasks/{task_id}", headers=headers).json()
                return task["results"][0].get("archived")

            # The killed process's claim lapses (CLAIM_LEASE), then the new one copies.
            got = wait_until(archived, timeout=60, what="the resumed copy")
            assert got["sha256"] == digest("killed.mp4")
            served = httpx.get(second.url + got["url"], headers=headers)
            assert served.content == content("killed.mp4")
        finally:
            assert second.stop() in (0, -15), second.logs()  # uvicorn re-raises SIGTERM
    assert temp_files(files_dir) == []
    assert archive_path(files_dir, digest("killed.mp4")).is_file()


def prepare_database(tmp_path: Path, urls: list[str]) -> list[str]:
    """Tasks that succeeded while ARCHIVE was off: nothing queued, nothing copied."""
    settings = Settings(database_url=f"sqlite:///{tmp_path}/taskhook.db", archive=False)

    async def fill() -> list[str]:
        async with open_store(settings) as store:
            ids = []
            for url in urls:
                task_id, body = video_callback(url)
                await receive(store, "seedance", body)
                ids.append(task_id)
            return ids

    return asyncio.run(fill())


def run_archive_command(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # The environment a server would get, without serving.
    environment = ServerProcess(tmp_path / "taskhook.db").env()
    environment.update(archive_env(tmp_path), **env)
    return run_cli("archive", env=environment, cwd=ROOT)


def test_archive_command_copies_what_is_missing(tmp_path):
    with ThreadedFiles().running() as files:
        prepare_database(tmp_path, [f"{files.base}/f/old-1.mp4", f"{files.base}/f/old-2.mp4"])
        done = run_archive_command(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("archived ") == 2
    assert "copied 2 file(s)" in done.stdout and "failed 0" in done.stdout
    for name in ("old-1.mp4", "old-2.mp4"):
        assert archive_path(tmp_path / "files", digest(name)).is_file()


def test_archive_command_exits_1_when_a_copy_fails(tmp_path):
    with ThreadedFiles().running() as files:
        prepare_database(tmp_path, [f"{files.base}/f/missing.mp4"])
        failed = run_archive_command(tmp_path)
    assert failed.returncode == 1, failed.stderr
    assert "http_404" in failed.stdout and "failed 1" in failed.stdout


def test_archive_command_needs_archive_on(tmp_path):
    refused = run_archive_command(tmp_path, ARCHIVE="off")
    assert refused.returncode == 2
    assert "ARCHIVE=on" in refused.stderr
