"""The Delivery service against a real receiving app on loopback (in-process store)."""

from __future__ import annotations

import collections
import contextlib
import random
from collections.abc import AsyncIterator

import pytest

from server.delivery.worker import Delivery
from server.settings import Settings
from server.store import Store, open_store
from tests.harness import eventually

from .outbox import add_events
from .receiver import HangFirst, Receiver

S, OK = "task.status_changed", "task.succeeded"


@contextlib.asynccontextmanager
async def running(tmp_path, **overrides) -> AsyncIterator[tuple[Store, Delivery]]:
    values = dict(
        database_url=f"sqlite:///{tmp_path}/taskhook.db",
        reconciler="off",
        archive=False,
        delivery_retry_schedule="0,0.2,0.2",
        delivery_timeout=2.0,
    )
    values.update(overrides)
    settings = Settings(**values)
    async with open_store(settings) as store:
        delivery = Delivery(settings, store, poll_interval=0.5)
        await delivery.start()
        try:
            yield store, delivery
        finally:
            await delivery.stop()


@pytest.fixture
def receiver():
    with Receiver().serve() as r:
        yield r


async def subscribe(store: Store, receiver: Receiver, events=None):
    ep = await store.create_endpoint(receiver.url, events, None, _secret())
    receiver.secrets.append(ep.secret)
    return ep


def _secret() -> str:
    from server.delivery.signing import new_secret

    return new_secret()


async def test_every_event_arrives_once_verified(tmp_path, receiver):
    async with running(tmp_path) as (store, _):
        await subscribe(store, receiver)
        ids = await add_events(store, *[(S, f"t{i}") for i in range(30)])
        await eventually(lambda: len(receiver.accepted()) >= 30, "30 deliveries")
    got = receiver.all()
    assert sorted(d.event_id for d in got) == sorted(ids)
    assert all(d.verified_by == (0,) for d in got)
    assert all(d.event["type"] == S for d in got)


async def test_retries_keep_the_webhook_id_and_every_attempt_is_recorded(tmp_path, receiver):
    seen: collections.Counter[str] = collections.Counter()

    def fail_twice(delivery):
        seen[delivery.event_id] += 1
        return 503 if seen[delivery.event_id] <= 2 else None

    receiver.rule = fail_twice
    async with running(tmp_path) as (store, _):
        ep = await subscribe(store, receiver)
        (eid,) = await add_events(store, (OK, "a"))
        await eventually(lambda: receiver.accepted(), "the third attempt")
        attempts = await eventually(lambda: _attempts(store, ep.id, 3), "three recorded attempts")
    assert [d.event_id for d in receiver.all()] == [eid] * 3
    assert len({d.timestamp for d in receiver.all()}) >= 1
    assert [(a.attempt, a.outcome, a.response_status) for a in reversed(attempts)] == [
        (1, "retrying", 503),
        (2, "retrying", 503),
        (3, "delivered", 204),
    ]
    assert attempts[-1].response == "told to answer 503"


async def _attempts(store, endpoint_id, count):
    items, _ = await store.list_attempts(endpoint_id)
    return items if len(items) >= count else None


async def test_after_the_last_attempt_of_the_schedule_the_event_fails(tmp_path, receiver):
    receiver.rule = lambda d: 500
    async with running(tmp_path) as (store, _):
        ep = await subscribe(store, receiver)
        await add_events(store, (OK, "a"))
        attempts = await eventually(lambda: _attempts(store, ep.id, 3), "three attempts")
        (backlog,) = await store.webhook_backlog()
        # Nothing more comes: the message is failed, not pending.
        assert backlog.pending == 0
    assert [a.outcome for a in reversed(attempts)] == ["retrying", "retrying", "failed"]
    assert len(receiver.all()) == 3


async def test_a_hanging_endpoint_times_out_and_is_retried(tmp_path, receiver):
    receiver.rule = HangFirst()
    async with running(tmp_path, delivery_timeout=0.3) as (store, _):
        ep = await subscribe(store, receiver)
        await add_events(store, (OK, "a"))
        attempts = await eventually(lambda: _attempts(store, ep.id, 2), "two attempts")
    first, second = reversed(attempts)
    assert first.outcome == "retrying" and first.response_status is None
    assert "timeout" in first.error
    assert second.outcome == "delivered"


async def test_a_refused_connection_is_retried_with_the_reason(tmp_path):
    from tests.harness import free_port

    async with running(tmp_path) as (store, _):
        ep = await store.create_endpoint(f"http://127.0.0.1:{free_port()}/", None, None, _secret())
        await add_events(store, (OK, "a"))
        attempts = await eventually(lambda: _attempts(store, ep.id, 3), "three attempts")
    assert all(a.response_status is None and "connection failed" in a.error for a in attempts)
    assert attempts[0].outcome == "failed"


async def test_410_disables_the_endpoint(tmp_path, receiver):
    receiver.rule = lambda d: 410
    async with running(tmp_path) as (store, delivery):
        ep = await subscribe(store, receiver)
        await add_events(store, (OK, "a"))
        await eventually(lambda: _disabled(store, ep.id), "the endpoint to be disabled")
        await add_events(store, (OK, "b"))
        status = await delivery.status()
    assert len(receiver.all()) == 1
    assert status["disabled"] == [{"endpoint": ep.id, "reason": "the endpoint answered 410 Gone"}]


async def _disabled(store, endpoint_id):
    found = await store.get_endpoint(endpoint_id)
    return found is not None and found.disabled


async def test_order_per_task_holds_while_attempts_fail_at_random(tmp_path, receiver):
    rng = random.Random(7)
    receiver.rule = lambda d: 500 if rng.random() < 0.3 else None
    tasks = [f"t{i}" for i in range(20)]
    async with running(
        tmp_path, delivery_retry_schedule="0,0.05,0.05,0.05,0.05,0.05,0.05,0.05"
    ) as (
        store,
        _,
    ):
        await subscribe(store, receiver)
        committed: dict[str, list[str]] = {t: [] for t in tasks}
        for _round in range(4):
            order = tasks[:]
            rng.shuffle(order)
            ids = await add_events(store, *[(S, t) for t in order])
            for task, eid in zip(order, ids, strict=True):
                committed[task].append(eid)
        await eventually(lambda: len({d.event_id for d in receiver.accepted()}) >= 80, "80")
    for task in tasks:
        accepted = [d.event_id for d in receiver.accepted() if d.task_id == task]
        assert accepted == committed[task], f"task {task} arrived out of order"
        # No event was even attempted before the previous one was accepted.
        attempted = [d.event_id for d in receiver.all() if d.task_id == task]
        assert list(dict.fromkeys(attempted)) == committed[task]
