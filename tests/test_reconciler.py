"""The reconcile pass against MockTransport upstreams and a real temporary SQLite store."""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import pytest

from server.core import schedule
from server.ingest import receive
from server.providers.acedata import AceDataClient
from server.providers.seedance2 import Seedance2Client
from server.reconcile.health import MAX_PAUSE, HealthBoard, PauseRules
from server.reconcile.reconciler import SETTLE_BEHIND, run_pass
from server.settings import Settings
from server.store import Registration, Store, open_store

from . import payloads
from .harness import eventually

ACE = "https://ace.test"
S2 = "https://s2.test"
TOKEN = "sk-unit-token"


def seedance_item(task_id: str, status: str = "succeeded") -> dict[str, Any]:
    data: dict[str, Any] = {"task_id": "cgt-1", "status": status, "model": "m"}
    if status == "succeeded":
        data["video_url"] = f"https://cdn.test/{task_id}.mp4"
    return {
        "id": task_id,
        "response": {"success": True, "task_id": task_id, "data": data},
    }


def s2_body(task_id: str, status: str = "SUCCESS") -> dict[str, Any]:
    data: dict[str, Any] = {"task_id": task_id, "status": status}
    if status == "SUCCESS":
        data["result_url"] = f"https://tos.test/{task_id}.mp4?X-Tos-Signature=abc"
    return {"code": "success", "message": "", "data": data}


class FakeAce:
    """A retrieve_batch endpoint: finished tasks answer, others are missing; faults on demand."""

    def __init__(self) -> None:
        self.finished: set[str] = set()
        self.batches: list[list[str]] = []
        self.faults: list[httpx.Response] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body["action"] == "retrieve_batch"
        self.batches.append(body["ids"])
        if self.faults:
            return self.faults.pop(0)
        items = [seedance_item(i) for i in body["ids"] if i in self.finished]
        return httpx.Response(200, json={"items": items, "count": len(items)})


class FakeS2:
    def __init__(self) -> None:
        self.finished: set[str] = set()
        self.asked: list[str] = []
        self.faults: list[httpx.Response] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        task_id = request.url.path.rsplit("/", 1)[-1]
        self.asked.append(task_id)
        if self.faults:
            return self.faults.pop(0)
        if task_id in self.finished:
            return httpx.Response(200, json=s2_body(task_id))
        return httpx.Response(200, json=s2_body(task_id, "IN_PROGRESS"))


def make_settings(tmp_path, **kw: Any) -> Settings:
    values: dict[str, Any] = dict(
        database_url=f"sqlite:///{tmp_path}/t.db",
        reconcile_grace=0.0,
        reconcile_batch_size=10,
        reconciler="off",
        archive=False,
    )
    values.update(kw)
    return Settings(**values)


@pytest.fixture
async def store(tmp_path, database_url):
    async with open_store(make_settings(tmp_path, database_url=database_url)) as s:
        yield s


@pytest.fixture
def fake_ace() -> FakeAce:
    return FakeAce()


@pytest.fixture
def fake_s2() -> FakeS2:
    return FakeS2()


@pytest.fixture
async def clients(fake_ace, fake_s2):
    def route(request: httpx.Request) -> httpx.Response:
        if request.url.host == "ace.test":
            return fake_ace.handler(request)
        return fake_s2.handler(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(route)) as http:
        yield {
            "seedance": AceDataClient("seedance", ACE, TOKEN, http),
            "seedance2": Seedance2Client(S2, TOKEN, http),
        }


async def register(store: Store, provider: str, n: int) -> list[str]:
    ids = [str(uuid.uuid4()) if provider != "seedance2" else f"asyntask_{i}" for i in range(n)]
    await store.register([Registration(provider, t) for t in ids])
    return ids


Pass = Callable[..., Any]


@pytest.fixture
def run(store, clients):
    async def go(**kw: Any):
        kw.setdefault("now", time.time() + 1)
        return await run_pass(store, clients, store.settings, **kw)

    return go


# -- schedule ---------------------------------------------------------------


@pytest.mark.parametrize("checks", [0, 1, 2, 3, 5, 10, 50])
def test_backoff_stays_within_half_and_full_base(checks):
    base = min(schedule.MAX_BACKOFF, schedule.FIRST_BACKOFF * 2 ** max(0, checks - 1))
    rng = random.Random(checks)
    waits = [schedule.backoff(checks, rng) for _ in range(200)]
    assert min(waits) >= base / 2
    assert max(waits) <= base
    assert max(waits) <= schedule.MAX_BACKOFF


# -- the pass ---------------------------------------------------------------


async def test_one_batch_call_per_batch_size_and_answers_merged(store, fake_ace, run):
    ids = await register(store, "seedance", 25)
    fake_ace.finished = set(ids[:7])
    report = await run(providers=["seedance"])
    assert len(fake_ace.batches) == math.ceil(25 / 10)
    assert sorted(i for b in fake_ace.batches for i in b) == sorted(ids)
    rep = report.providers["seedance"]
    assert (rep.checked, rep.completed, rep.waiting) == (25, 7, 18)
    done = await store.get_task(ids[0])
    assert done.state.status == "succeeded"
    assert done.state.results[0].url == f"https://cdn.test/{ids[0]}.mp4"
    assert done.last_source == "reconcile"
    assert (await store.deliveries(ids[0]))[0].source == "reconcile"


async def test_not_yet_advances_checks_and_pushes_next_check(store, run):
    ids = await register(store, "seedance", 3)
    before = time.time()
    await run(providers=["seedance"])
    task = await store.get_task(ids[0])
    assert task.checks == 1
    assert task.state.status == "pending"
    assert task.next_check_at >= before + schedule.FIRST_BACKOFF / 2
    assert await store.deliveries(ids[0]) == []


async def test_final_tasks_are_never_polled(store, fake_ace, run):
    ids = await register(store, "seedance", 4)
    body = json.dumps(seedance_item(ids[0])["response"]).encode()
    await receive(store, "seedance", body)  # a callback finished it
    await run(providers=["seedance"], ignore_schedule=True)
    asked = [i for b in fake_ace.batches for i in b]
    assert ids[0] not in asked
    assert sorted(asked) == sorted(ids[1:])


async def test_seedance2_single_calls_with_answers_merged(store, fake_s2, run):
    ids = await register(store, "seedance2", 5)
    fake_s2.finished = {ids[1]}
    report = await run(providers=["seedance2"])
    assert sorted(fake_s2.asked) == sorted(ids)
    assert report.providers["seedance2"].calls == 5
    assert (await store.get_task(ids[1])).state.status == "succeeded"
    assert (await store.get_task(ids[0])).state.status == "running"


async def test_429_pauses_only_that_provider_for_retry_after(store, fake_ace, fake_s2, run):
    ace_ids = await register(store, "seedance", 3)
    s2_ids = await register(store, "seedance2", 2)
    fake_s2.finished = set(s2_ids)
    fake_ace.faults = [httpx.Response(429, headers={"Retry-After": "7"}, json={})]
    health = HealthBoard()
    now = time.time() + 1
    report = await run(providers=["seedance", "seedance2"], health=health, now=now)
    assert report.providers["seedance"].errors == {"rate_limited": 1}
    assert health["seedance"].paused_until == pytest.approx(now + 7)
    assert report.providers["seedance2"].completed == 2
    assert (await store.get_task(ace_ids[0])).checks == 0  # left for a later pass
    calls = len(fake_ace.batches)
    await run(providers=["seedance"], health=health, now=now + 6)
    assert len(fake_ace.batches) == calls  # still paused
    await run(providers=["seedance"], health=health, now=now + 7.5)
    assert len(fake_ace.batches) == calls + 1
    assert health["seedance"].trouble is None


@pytest.mark.parametrize("retry_after", ["1e12", "1e999", "inf", "nan", "99999999999999999999"])
async def test_a_huge_retry_after_pauses_one_hour_at_most(store, fake_ace, run, retry_after):
    await register(store, "seedance", 2)
    fake_ace.faults = [httpx.Response(429, headers={"Retry-After": retry_after}, json={})]
    health = HealthBoard()
    now = time.time() + 1
    report = await run(providers=["seedance"], health=health, now=now)
    assert report.providers["seedance"].errors == {"rate_limited": 1}
    assert now < health["seedance"].paused_until <= now + MAX_PAUSE
    shown = health.to_json(now)["seedance"]  # raised "year out of range" before the cap
    assert shown["state"] == "rate_limited"
    assert datetime.fromisoformat(shown["paused_until"]).timestamp() <= now + MAX_PAUSE + 1
    await run(providers=["seedance"], health=health, now=now + MAX_PAUSE + 1)
    assert len(fake_ace.batches) == 2  # asked again once the hour was over
    assert health["seedance"].trouble is None


def test_every_pause_is_capped_at_one_hour():
    rules = PauseRules(failure_first=1000, failure_max=10**9, auth_first=5000, auth_max=10**9)
    health = HealthBoard(rules)["seedance"]
    for _ in range(3000):  # 2 ** 3000 would overflow a float
        health.failed(0.0, "down")
    assert health.paused_until == MAX_PAUSE
    for _ in range(5):
        health.unauthorized(0.0, "bad token")
        assert health.paused_until <= MAX_PAUSE
    health.rate_limited(0.0, -5.0, "negative")
    assert health.paused_until == 0.0


async def test_401_pauses_with_a_doubling_probe_delay(store, fake_ace, run):
    await register(store, "seedance", 2)
    health = HealthBoard()
    now = time.time() + 1
    fake_ace.faults = [httpx.Response(401, json={"error": {"code": "invalid_token"}})] * 2
    report = await run(providers=["seedance"], health=health, now=now)
    assert report.upstream_failed
    assert health["seedance"].trouble == "unauthorized"
    assert health["seedance"].paused_until == pytest.approx(now + 60)
    await run(providers=["seedance"], health=health, now=now + 30)
    assert len(fake_ace.batches) == 1  # no call before the probe is due
    await run(providers=["seedance"], health=health, now=now + 61)
    assert len(fake_ace.batches) == 2
    assert health["seedance"].paused_until == pytest.approx(now + 61 + 120)
    await run(providers=["seedance"], health=health, now=now + 200)  # the probe succeeds
    assert health["seedance"].trouble is None


async def test_5xx_backs_off_with_growing_delay(store, fake_ace, run):
    await register(store, "seedance", 25)
    health = HealthBoard(PauseRules(failure_first=5, failure_max=100))
    fake_ace.faults = [httpx.Response(500, json={})] * 2
    now = time.time() + 1
    report = await run(providers=["seedance"], health=health, now=now)
    assert len(fake_ace.batches) == 1  # the rest of the provider's batches wait
    assert report.providers["seedance"].errors == {"server_error": 1}
    assert health["seedance"].paused_until == pytest.approx(now + 5)
    await run(providers=["seedance"], health=health, now=now + 6)
    assert health["seedance"].paused_until == pytest.approx(now + 6 + 10)


async def test_bad_answer_is_quarantined_not_raised(store, fake_ace, run):
    await register(store, "seedance", 2)
    fake_ace.faults = [httpx.Response(200, text="<html>502 Bad Gateway</html>")]
    report = await run(providers=["seedance"])
    assert report.providers["seedance"].errors == {"bad_answer": 1}
    kept, _ = await store.list_quarantine()
    assert kept[0].reason == "bad_upstream_answer"
    assert b"502 Bad Gateway" in kept[0].body


async def test_expiry_after_max_age_and_a_later_callback_still_wins(store, run):
    ids = await register(store, "seedance", 2)
    late = time.time() + store.settings.reconcile_max_age + 5
    report = await run(providers=["seedance"], now=late)
    assert report.providers["seedance"].expired == 2
    task = await store.get_task(ids[0])
    assert task.state.status == "expired"
    assert task.next_check_at is None
    body = json.dumps(seedance_item(ids[0])["response"]).encode()
    outcome = await receive(store, "seedance", body)
    assert outcome.status == "succeeded"


async def test_dry_run_reports_changes_without_writing(store, fake_ace, run):
    ids = await register(store, "seedance", 3)
    fake_ace.finished = {ids[2]}
    report = await run(providers=["seedance"], dry_run=True)
    rep = report.providers["seedance"]
    assert rep.completed == 1
    assert [(c.task_id, c.before, c.after) for c in rep.changes] == [
        (ids[2], "pending", "succeeded")
    ]
    task = await store.get_task(ids[2])
    assert (task.state.status, task.checks) == ("pending", 0)
    assert await store.deliveries(ids[2]) == []


async def test_a_real_pass_reports_each_change_from_its_previous_status(store, fake_ace, run):
    ids = await register(store, "seedance", 3)
    fake_ace.finished = {ids[1]}
    rep = (await run(providers=["seedance"])).providers["seedance"]
    assert [(c.task_id, c.before, c.after) for c in rep.changes] == [
        (ids[1], "pending", "succeeded")
    ]
    assert (await store.get_task(ids[1])).state.status == "succeeded"
    running = payloads.dumps(payloads.seedance(ids[0], "running", video=False))
    assert (await receive(store, "seedance", running)).status == "running"
    fake_ace.finished = set(ids)  # the others finish; ask again now, as a manual pass does
    rep = (await run(providers=["seedance"], ignore_schedule=True)).providers["seedance"]
    assert sorted((c.task_id, c.before, c.after) for c in rep.changes) == sorted(
        [(ids[0], "running", "succeeded"), (ids[2], "pending", "succeeded")]
    )


async def test_provider_without_client_is_skipped(store, run):
    await register(store, "dreamina", 1)
    report = await run(providers=["dreamina"])
    assert report.providers["dreamina"].skipped == "no token; set ACEDATA_API_TOKEN"
    assert not report.upstream_failed


async def test_a_partly_filled_batch_is_topped_up_with_tasks_due_soon(store, fake_ace, run):
    await register(store, "seedance", 12)
    now = time.time() + 1
    await run(providers=["seedance"], now=now)  # every task checked; next checks 7.5-15 s away
    assert [len(b) for b in fake_ace.batches] == [10, 2]
    await register(store, "seedance", 1)
    await run(providers=["seedance"], now=now + 1)
    assert [len(b) for b in fake_ace.batches[2:]] == [10]  # one call, not one per due task


# -- pipelining -------------------------------------------------------------


class SlowSettle:
    """The real store, but each ``ingest_many`` waits until upstream has seen ``ahead`` more calls.

    The settle of call n waits for call n + ``ahead`` (or the last call): it can
    only finish if that call goes out while call n is still being settled.
    """

    def __init__(self, store, fake: FakeAce, calls: int, ahead: int) -> None:
        self._store, self._fake = store, fake
        self.calls, self.ahead = calls, ahead
        self.waited: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def ingest_many(self, items):
        settling = len(self.waited) + 1  # the answers of call n are being settled
        needed = min(settling + self.ahead, self.calls)
        # 10 s only stops a hang.
        await eventually(
            lambda: len(self._fake.batches) >= needed,
            what=f"call {needed} sent while call {settling} is settled",
            within=10,
        )
        self.waited.append(len(self._fake.batches))
        return await self._store.ingest_many(items)


@pytest.mark.parametrize("ahead", [1, SETTLE_BEHIND])
async def test_the_next_calls_go_out_while_the_previous_answers_are_settled(
    store, fake_ace, clients, ahead
):
    ids = await register(store, "seedance", 45)  # 5 calls of 10, 10, 10, 10, 5
    fake_ace.finished = set(ids)
    slow = SlowSettle(store, fake_ace, calls=5, ahead=ahead)
    report = await run_pass(slow, clients, store.settings, now=time.time() + 1)
    # Call n + ahead was out before call n was settled ...
    assert all(sent >= min(n + ahead, 5) for n, sent in enumerate(slow.waited, 1))
    assert len(fake_ace.batches) == 5  # ... and still exactly ceil(45 / 10) calls
    assert report.providers["seedance"].completed == 45


class HeldSettle:
    """The real store, but the first ``ingest_many`` waits until ``release`` is set."""

    def __init__(self, store) -> None:
        self._store = store
        self.release = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def ingest_many(self, items):
        await self.release.wait()
        return await self._store.ingest_many(items)


async def test_answers_waiting_to_be_settled_are_bounded(store, fake_ace, clients):
    ids = await register(store, "seedance", 45)  # 5 calls
    fake_ace.finished = set(ids)
    held = HeldSettle(store)
    passing = asyncio.create_task(run_pass(held, clients, store.settings, now=time.time() + 1))
    bound = SETTLE_BEHIND + 1  # answered chunks waiting, and the call in flight
    await eventually(lambda: len(fake_ace.batches) >= bound, what=f"{bound} calls")
    for _ in range(200):  # the in-process upstream answers within a few loop turns
        await asyncio.sleep(0)
    assert len(fake_ace.batches) == bound  # no more while the first answers are not settled
    held.release.set()
    report = await passing
    assert len(fake_ace.batches) == 5
    assert report.providers["seedance"].completed == 45


async def test_no_call_is_sent_after_an_error_even_when_pipelined(store, fake_ace, run):
    await register(store, "seedance", 45)  # 5 calls if all went well
    fake_ace.faults = [httpx.Response(200, json={"items": [], "count": 0})] + [
        httpx.Response(500, json={})
    ] * 4
    report = await run(providers=["seedance"])
    assert len(fake_ace.batches) == 2  # the second failed, so no third was sent
    assert report.providers["seedance"].errors == {"server_error": 1}
    assert report.providers["seedance"].checked == 10
