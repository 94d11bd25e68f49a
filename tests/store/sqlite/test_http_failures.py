"""How the SQLite writer's failures reach HTTP: 503s with Retry-After, /readyz red, no 500."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading

import pytest

from tests.conftest import callback_path
from tests.payloads import dumps, seedance

pytestmark = pytest.mark.sqlite_only("the SQLite writer thread, its queue, PRAGMA max_page_count")


def writer_of(app):
    return app.state.taskhook.store._writer


async def test_a_full_disk_answers_503_storage_full(client, app):
    assert (await client.post(callback_path("seedance"), content=dumps(seedance()))).is_success
    store = app.state.taskhook.store
    pages = (await store._fetchone("PRAGMA page_count"))[0]
    await writer_of(app).run(lambda c: c.execute(f"PRAGMA max_page_count={pages}"))
    body = dumps({**seedance(), "padding": "x" * 50_000})
    answer = await client.post(callback_path("seedance"), content=body)
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "storage_full"
    assert answer.headers["retry-after"] == "60"


async def test_a_full_writer_queue_answers_503_overloaded(client, app):
    writer = writer_of(app)
    release = threading.Event()
    held = asyncio.ensure_future(writer.run(lambda conn: release.wait(10)))
    await asyncio.sleep(0)
    writer.max_jobs = 1  # the held job fills the queue
    try:
        answer = await client.post(callback_path("seedance"), content=dumps(seedance()))
    finally:
        release.set()
        await held
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "overloaded"
    assert answer.headers["retry-after"] == "1"


class Fatal(BaseException):
    pass


async def test_a_dead_writer_turns_readyz_red_and_writes_fail_fast(client, app):
    def die(conn: sqlite3.Connection) -> None:
        raise Fatal("simulated")

    with contextlib.suppress(Exception):
        await writer_of(app).run(die)
    answer = await client.post(callback_path("seedance"), content=dumps(seedance()))
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "store_unavailable"
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert any("writer stopped (Fatal: simulated)" in r for r in ready.json()["reasons"])
