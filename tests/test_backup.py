"""``python -m server backup PATH`` while the server takes callbacks; a server on the copy."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest

from server.core.tokens import callback_token

from .harness import API_TOKEN, CALLBACK_SECRET, ServerProcess, run_cli
from .payloads import dumps, seedance

pytestmark = pytest.mark.e2e

PATH = f"/callbacks/seedance/{callback_token(CALLBACK_SECRET, 'seedance')}"


def backup(env: dict[str, str], cwd: Path, target: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("backup", str(target), env=env, cwd=cwd, timeout=120)


async def tasks(url: str) -> dict[str, dict]:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    found: dict[str, dict] = {}
    cursor = None
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http:
        while True:
            params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            page = (await http.get("/tasks", params=params)).json()
            found.update({t["task_id"]: t for t in page["tasks"]})
            cursor = page.get("next_cursor")
            if not cursor:
                return found


async def test_a_backup_taken_while_serving_is_consistent_and_serves(tmp_path):
    server = ServerProcess(tmp_path / "live.db").start()
    copy_path = tmp_path / "copy.db"
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            for i in range(200):
                assert (await http.post(PATH, content=dumps(seedance(f"before-{i}")))).is_success
            stop = asyncio.Event()

            async def keep_writing() -> int:
                n = 0
                while not stop.is_set():
                    answer = await http.post(PATH, content=dumps(seedance(f"during-{n}")))
                    assert answer.status_code == 200
                    n += 1
                return n

            writer = asyncio.create_task(keep_writing())
            result = await asyncio.to_thread(backup, server.env(), tmp_path, copy_path)
            stop.set()
            written_during = await writer
        assert result.returncode == 0, result.stderr
        assert f"-> {copy_path}" in result.stdout and "tasks" in result.stdout
        assert written_during > 0  # the server really was writing during the copy
        original = await tasks(server.url)
    finally:
        server.stop()

    with sqlite3.connect(copy_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    restored = ServerProcess(copy_path).start()
    try:
        copied = await tasks(restored.url)
    finally:
        restored.stop()
    assert {f"before-{i}" for i in range(200)} <= set(copied)
    for task_id, task in copied.items():
        assert original[task_id] == task  # a prefix of the history, each task whole


def test_backup_refuses_an_existing_file_and_postgresql(tmp_path):
    env = ServerProcess(tmp_path / "t.db").env()
    (tmp_path / "there.db").write_text("keep me")
    refused = backup(env, tmp_path, tmp_path / "there.db")
    assert refused.returncode == 2 and "exists already" in refused.stderr
    assert (tmp_path / "there.db").read_text() == "keep me"
    pg_env = {**env, "DATABASE_URL": "postgresql://u:pw@127.0.0.1:9/x"}
    pg = backup(pg_env, tmp_path, tmp_path / "n")
    assert pg.returncode == 2 and "pg_dump" in pg.stderr and "pw" not in pg.stderr
