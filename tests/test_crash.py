"""Durability of the real server: SIGKILL mid-load, a kill/restart loop, graceful SIGTERM.

The promise under test: a callback answered 200 is committed. Whatever happens
to the process afterwards, a restart on the same database finds it; a SQLite
file passes ``PRAGMA integrity_check``. Each test runs on both backends
(``[sqlite]``: a file; ``[postgres]``: the session's PostgreSQL test database).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from server.core.ids import task_key

from .conftest import callback_path
from .harness import API_TOKEN, ServerProcess, run_sql, wait_until
from .payloads import dumps, seedance

pytestmark = pytest.mark.e2e

CONCURRENCY = 32
#: Shut down by SIGTERM, uvicorn finishes in-flight requests within this (see server/cli.py).
GRACEFUL_BOUND = 25.0


def stored_keys(database_url: str) -> set[str]:
    tasks = {row[0] for row in run_sql(database_url, "SELECT key FROM tasks")}
    delivered = {
        row[0] for row in run_sql(database_url, "SELECT DISTINCT task_key FROM deliveries")
    }
    return tasks & delivered


def integrity(database_url: str) -> str:
    """SQLite's own check of the file; PostgreSQL keeps its files itself (a killed client
    cannot corrupt them), so there it is the answer of a query that reads every table."""
    if database_url.startswith("sqlite:///"):
        return str(run_sql(database_url, "PRAGMA integrity_check")[0][0])
    for table in ("tasks", "deliveries", "events", "quarantine"):
        run_sql(database_url, f"SELECT count(*) FROM {table}")
    return "ok"


async def post_until_stopped(
    url: str, count: int, acked: list[str], enough: asyncio.Event, enough_at: int
) -> int:
    """Post ``count`` distinct callbacks, ``CONCURRENCY`` at a time; returns how many failed."""
    ids = iter([str(uuid.uuid4()) for _ in range(count)])
    failed = 0
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal failed
            for task_id in ids:
                try:
                    answer = await client.post(
                        callback_path("seedance"), content=dumps(seedance(task_id))
                    )
                except httpx.HTTPError:
                    failed += 1
                    continue
                if answer.status_code == 200:
                    acked.append(task_id)
                    if len(acked) >= enough_at:
                        enough.set()
                else:
                    failed += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return failed


async def kill_when(event: asyncio.Event, server: ServerProcess) -> None:
    await event.wait()
    await asyncio.to_thread(server.kill)


async def assert_serves(server: ServerProcess, task_ids: list[str]) -> None:
    headers = {"authorization": f"Bearer {API_TOKEN}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=10) as client:
        fresh = await client.post(callback_path("seedance"), content=dumps(seedance()))
        assert fresh.status_code == 200
        for task_id in task_ids[:: max(1, len(task_ids) // 20)]:
            task = await client.get(f"/tasks/{task_id}")
            assert task.status_code == 200 and task.json()["status"] == "succeeded"


@contextlib.asynccontextmanager
async def running(folder: Path, database_url: str) -> AsyncIterator[ServerProcess]:
    process = ServerProcess(folder / "taskhook.db", database_url=database_url)
    server = await asyncio.to_thread(process.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.kill)


async def test_sigkill_mid_load_loses_no_acknowledged_callback(tmp_path, database_url):
    db = database_url
    acked: list[str] = []
    async with running(tmp_path, db) as server:
        enough = asyncio.Event()
        failed, _ = await asyncio.gather(
            post_until_stopped(server.url, 3000, acked, enough, enough_at=800),
            kill_when(enough, server),
        )
    assert 800 <= len(acked) < 3000 and failed > 0, "the kill did not land mid-load"
    assert integrity(db) == "ok"
    assert {task_key(t) for t in acked} <= stored_keys(db)
    async with running(tmp_path, db) as again:
        await assert_serves(again, acked)


async def test_kill_restart_loop_keeps_every_acknowledged_callback(tmp_path, database_url):
    db = database_url
    acked: list[str] = []
    for _ in range(3):
        async with running(tmp_path, db) as server:
            enough = asyncio.Event()
            await asyncio.gather(
                post_until_stopped(server.url, 1500, acked, enough, enough_at=len(acked) + 200),
                kill_when(enough, server),
            )
        assert integrity(db) == "ok"
        assert {task_key(t) for t in acked} <= stored_keys(db)
    async with running(tmp_path, db) as last:
        await assert_serves(last, acked)


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


async def test_sigterm_finishes_in_flight_requests_then_exits(tmp_path, database_url):
    db = database_url
    process = ServerProcess(tmp_path / "taskhook.db", database_url=database_url)
    server = await asyncio.to_thread(process.start)
    slow_id = str(uuid.uuid4())
    body = dumps(seedance(slow_id))
    rest_may_go = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield body[:100]
        await rest_may_go.wait()
        yield body[100:]

    acked: list[str] = []
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            in_flight = asyncio.create_task(
                client.post(callback_path("seedance"), content=slow_body())
            )
            under_way = asyncio.Event()
            load = asyncio.create_task(
                post_until_stopped(server.url, 2000, acked, under_way, enough_at=100)
            )
            # The server answers later requests, so it has read the slow one's head by now.
            await under_way.wait()
            async with httpx.AsyncClient(base_url=server.url) as other:
                assert (await other.get("/healthz")).status_code == 200
            assert server.proc is not None
            server.proc.terminate()
            await asyncio.to_thread(
                wait_until, lambda: refuses_connections(server.port), 10, what="listener closed"
            )
            rest_may_go.set()  # the body completes only after shutdown has begun
            answer = await in_flight
            await load
        assert answer.status_code == 200 and answer.json()["task_id"] == slow_id
        exit_code = await asyncio.to_thread(server.proc.wait, GRACEFUL_BOUND)
    finally:
        await asyncio.to_thread(server.kill)
    assert exit_code in (0, -15), server.logs()  # uvicorn re-raises SIGTERM after a clean stop
    assert "Application shutdown complete" in server.logs()
    assert integrity(db) == "ok"
    assert {task_key(t) for t in [slow_id, *acked]} <= stored_keys(db)
