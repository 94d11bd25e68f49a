"""The store and its single writer: group commit, isolation of failures, closing, schema."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from server.errors import SchemaTooNew
from server.providers.parse import parse_body
from server.store import Incoming, Registration, Store, StoreClosed
from server.store.sqlite.schema import SCHEMA_VERSION

from .payloads import dumps, seedance


def incoming(body: bytes) -> Incoming:
    obs = parse_body("seedance", body)
    return Incoming("seedance", obs.task_id, "callback", body, obs)


@pytest.fixture
async def store(settings):
    async with Store(settings) as s:
        yield s


async def test_concurrent_writes_share_commits(settings):
    sizes: list[int] = []
    async with Store(settings, on_commit=lambda size, _: sizes.append(size)) as store:
        await asyncio.gather(*(store.ingest(incoming(dumps(seedance()))) for _ in range(200)))
        counts = await store.count_by_status()
    assert counts == {"succeeded": 200}
    assert sum(sizes) >= 200
    assert max(sizes) > 1  # at least one group held several writes


async def test_a_failing_write_does_not_spoil_its_group(store):
    blocker = threading.Event()

    def hold(conn):
        blocker.wait(5)

    def fail(conn):
        conn.execute("INSERT INTO settings (key, value) VALUES ('k', 'v')")
        raise ValueError("boom")

    held = asyncio.ensure_future(store.writer.run(hold))
    await asyncio.sleep(0)  # let the holder reach the writer first
    good = asyncio.ensure_future(store.ingest(incoming(dumps(seedance()))))
    bad = asyncio.ensure_future(store.writer.run(fail))
    blocker.set()
    await held
    assert (await good).status == "succeeded"
    with pytest.raises(ValueError, match="boom"):
        await bad
    assert await store.get_value("k") is None  # the failing job's insert was rolled back


async def test_reads_do_not_wait_behind_writes(store):
    await store.ingest(incoming(dumps(seedance())))
    release = threading.Event()
    held = asyncio.ensure_future(store.writer.run(lambda conn: release.wait(10)))
    try:
        counts = await asyncio.wait_for(store.count_by_status(), 5)
        assert counts == {"succeeded": 1}
    finally:
        release.set()
        await held


async def test_close_finishes_queued_writes_and_then_refuses(settings):
    store = Store(settings)
    await store.open()
    pending = [asyncio.ensure_future(store.ingest(incoming(dumps(seedance())))) for _ in range(50)]
    await asyncio.sleep(0)
    await store.close()
    await store.close()  # idempotent
    assert all(p.done() and not p.exception() for p in pending)
    with pytest.raises(StoreClosed):
        await store.ingest(incoming(dumps(seedance())))
    with pytest.raises(StoreClosed):
        await store.count_by_status()
    async with Store(settings) as reopened:
        assert (await reopened.count_by_status()) == {"succeeded": 50}


async def test_schema_version_and_reopen(settings):
    async with Store(settings) as store:
        await store.register([Registration("seedance", "a-b-c")])
    conn = sqlite3.connect(settings.database_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    async with Store(settings) as store:
        assert (await store.get_task("ABC")).state.task_id == "a-b-c"


async def test_a_newer_schema_is_refused(settings):
    settings.database_path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(settings.database_path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew, match="upgrade taskhook"):
        await Store(settings).open()


async def test_secrets_are_generated_once(settings):
    from dataclasses import replace

    bare = replace(settings, callback_secrets=(), api_token="")
    async with Store(bare) as store:
        first = await store.secrets()
    async with Store(bare) as store:
        second = await store.secrets()
    assert set(first.generated) == {"API_TOKEN", "CALLBACK_SECRETS"}
    assert second.generated == ()
    assert (second.api_token, second.callback_secrets) == (first.api_token, first.callback_secrets)


async def test_due_tasks_use_the_partial_index(store):
    rows = await store._fetchall(
        "EXPLAIN QUERY PLAN SELECT task_id FROM tasks WHERE next_check_at IS NOT NULL"
        " AND next_check_at <= ? ORDER BY next_check_at LIMIT 10",
        (0,),
    )
    plan = " ".join(str(r[-1]) for r in rows)
    assert "tasks_due" in plan and "SCAN tasks" not in plan


async def test_lease_is_exclusive_until_it_lapses(store):
    assert await store.take_lease("reconciler", "a", ttl=30)
    assert not await store.take_lease("reconciler", "b", ttl=30)
    assert await store.take_lease("reconciler", "a", ttl=30)  # renewal
    assert await store.take_lease("other", "b", ttl=30)
    assert await store.take_lease("short", "a", ttl=-1)  # already lapsed
    assert await store.take_lease("short", "b", ttl=30)


async def test_due_tasks_of_one_provider_use_their_partial_index(store):
    await store.register([Registration("seedance", f"t{i}") for i in range(20)])
    await store.writer.run(lambda c: c.execute("ANALYZE"))
    rows = await store._fetchall(
        "EXPLAIN QUERY PLAN SELECT task_id FROM tasks WHERE next_check_at IS NOT NULL"
        " AND next_check_at <= ? AND provider IN (?) ORDER BY next_check_at LIMIT 10",
        (0, "seedance"),
    )
    plan = " ".join(str(r[-1]) for r in rows)
    assert "tasks_due_provider" in plan and "SCAN tasks" not in plan, plan
