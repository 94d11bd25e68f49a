"""What the PostgreSQL backend adds to the contract: replicas, commit order, a lost server.

Several ``PostgresStore``s on one database stand for several replicas; a
``TcpProxy`` between a store and the server stands for the network (or the
server) going away and coming back.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from server.core.types import Observation, Status
from server.errors import StoreUnavailable
from server.settings import Settings
from server.store import Incoming, Store, open_store
from server.store.postgres import events as outbox
from tests.harness import eventually
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.asyncio

Replica = Callable[..., Awaitable[Store]]


def item(task_id: str, status: Status, note: str = "", provider: str = "seedance") -> Incoming:
    obs = Observation(provider, task_id, status, upstream_status=status.value)
    body = json.dumps([task_id, status.value, note]).encode()
    return Incoming(provider, task_id, "callback", body, obs)


@pytest.fixture
async def replicas(postgres_url: str, tmp_path) -> AsyncIterator[Replica]:
    """``await replicas(url=...)``: one more opened store (a replica) on the database."""
    opened: list[Store] = []

    async def make(url: str = postgres_url, **overrides: object) -> Store:
        settings = Settings(
            database_url=url,
            reconciler="off",
            archive=True,
            archive_dir=str(tmp_path / "files"),
            database_pool_size=4,
        )
        store = open_store(replace(settings, **overrides))
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in reversed(opened):
        await store.close()


async def backend_waiting_on_a_lock(url: str) -> bool:
    """Whether some taskhook connection of this database waits for a lock now."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'taskhook' AND wait_event_type = 'Lock'"
        )
        row = await cur.fetchone()
        return bool(row and row[0])


# -- the outbox in commit order ------------------------------------------------------------


async def test_an_event_waits_for_the_earlier_writer_to_commit(replicas, postgres_url):
    """A later writer cannot number its event before an earlier one is visible.

    With a plain sequence, the store's event would commit (with a higher
    number) while the held transaction's lower number is not visible yet, and
    a reader would move past it for good.
    """
    store = await replicas()
    held = await psycopg.AsyncConnection.connect(postgres_url, autocommit=True)
    async with held:
        async with held.transaction():
            early = outbox.PendingEvent(
                "evt_early", "task.status_changed", "k", "seedance", 1.0, "{}"
            )
            await outbox.add_events(held, [early])
            later = asyncio.ensure_future(store.ingest(item(str(uuid.uuid4()), Status.RUNNING)))
            await eventually(lambda: backend_waiting_on_a_lock(postgres_url), "the store to wait")
            assert not later.done()
            assert (await store.events_after(None))[0] == []  # nothing visible, nothing skipped
        outcome = await later
    events, cursor = await store.events_after(None)
    assert [e.id for e in events] == ["evt_early", *outcome.events]
    assert cursor == "2"


async def test_replicas_writing_at_once_leave_a_feed_without_gap_or_duplicate(replicas):
    """Three replicas write events while a reader follows the cursor: it sees each once."""
    stores = [await replicas() for _ in range(3)]
    reader = await replicas()
    tasks = [str(uuid.uuid4()) for _ in range(12)]
    done = asyncio.Event()
    seen: list[str] = []

    async def write(store: Store, n: int) -> None:
        rng = random.Random(n)
        for step in range(15):
            task = rng.choice(tasks)
            status = rng.choice([Status.QUEUED, Status.RUNNING, Status.SUCCEEDED])
            await store.ingest_many([item(task, status, f"{n}-{step}")])

    async def follow() -> None:
        cursor = None
        while True:
            finished = done.is_set()
            page, cursor = await reader.events_after(cursor, limit=5)
            seen.extend(e.id for e in page)
            if finished and not page:
                return
            if not page:
                await reader.wait_for_work("events", 0.2)

    follower = asyncio.ensure_future(follow())
    await asyncio.gather(*(write(s, n) for n, s in enumerate(stores * 2)))
    done.set()
    await follower
    everything, _ = await reader.events_after(None, limit=10_000)
    assert seen == [e.id for e in everything]
    assert len(set(seen)) == len(seen) > 0


# -- per-task order and repeats across replicas ------------------------------------------------


async def test_groups_locking_the_same_tasks_in_opposite_orders_do_not_deadlock(replicas):
    a, b = await replicas(), await replicas()
    ids = [str(uuid.uuid4()) for _ in range(20)]

    async def burst(store: Store, order: list[str], note: str) -> None:
        await asyncio.gather(
            *(
                store.ingest_many([item(t, Status.RUNNING, f"{note}{i}")])
                for i, t in enumerate(order)
            ),
            store.ingest_many([item(t, Status.QUEUED, f"{note}-bulk") for t in order]),
        )

    await asyncio.gather(burst(a, ids, "a"), burst(b, list(reversed(ids)), "b"))
    for task_id in ids:
        record = await a.get_task(task_id)
        assert record is not None and record.deliveries == 4


async def test_the_same_body_at_two_replicas_at_once_is_kept_once(replicas):
    a, b = await replicas(), await replicas()
    task_id = str(uuid.uuid4())
    same = item(task_id, Status.RUNNING, "same")
    outcomes = await asyncio.gather(*(s.ingest(same) for s in (a, b, a, b)))
    assert sorted(o.duplicate for o in outcomes) == [False, True, True, True]
    assert len(await a.deliveries(task_id)) == 1


async def test_a_bad_request_fails_alone_in_its_group(replicas):
    store = await replicas()
    good = [item(str(uuid.uuid4()), Status.RUNNING) for _ in range(5)]
    bad = item("surrogate-\ud800", Status.RUNNING)  # no UTF-8 spelling: the driver refuses it
    results = await asyncio.gather(
        *(store.ingest(i) for i in [*good[:2], bad, *good[2:]]), return_exceptions=True
    )
    assert isinstance(results[2], Exception)
    assert all(not isinstance(r, Exception) for r in results[:2] + results[3:])
    for i in good:
        assert await store.get_task(i.task_id) is not None


# -- leases and claims on the server's clock ---------------------------------------------------


async def test_a_lease_is_held_by_one_replica_and_moves_when_it_lapses(replicas):
    a, b = await replicas(), await replicas()
    term = await a.take_lease("reconciler", "a", 0.3)
    assert term is not None
    assert await b.take_lease("reconciler", "b", 0.3) is None
    taken = await eventually(lambda: b.take_lease("reconciler", "b", 30), "the lease to lapse")
    assert taken == term + 1
    assert not await a.renew_lease("reconciler", "a", term, 30)


# -- a server that goes away and comes back ----------------------------------------------------


@pytest.fixture
def proxy(postgres_url: str):
    port = urlsplit(postgres_url).port or 5432
    tcp = TcpProxy(port).start()
    yield tcp
    tcp.stop()


def through(url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")
    host = f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if netloc[1] else host))


async def test_a_lost_server_is_an_error_never_a_success_and_service_resumes(
    replicas, proxy, postgres_url
):
    store = await replicas(url=through(postgres_url, proxy))
    before = item(str(uuid.uuid4()), Status.RUNNING)
    await store.ingest(before)
    proxy.cut()
    lost = item(str(uuid.uuid4()), Status.RUNNING)
    with pytest.raises(StoreUnavailable):
        await store.ingest(lost)
    with pytest.raises(StoreUnavailable):
        await store.check_writable()
    with pytest.raises(StoreUnavailable):
        await store.get_task(before.task_id)
    proxy.restore()

    async def writes_again() -> bool:
        try:
            await store.check_writable()
        except StoreUnavailable:
            return False
        return True

    await eventually(writes_again, "the store to write again", within=30)
    after = item(str(uuid.uuid4()), Status.RUNNING)
    await store.ingest(after)
    direct = await replicas()
    assert await direct.get_task(before.task_id) is not None
    assert await direct.get_task(after.task_id) is not None


async def test_a_lost_listening_connection_misses_no_wake_up(replicas, postgres_url):
    waiter, writer = await replicas(), await replicas()
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'LISTEN %%'"
        )
    mark = waiter.work_mark("events")
    await writer.ingest(item(str(uuid.uuid4()), Status.RUNNING))
    assert await waiter.wait_for_work("events", 30, after=mark)
