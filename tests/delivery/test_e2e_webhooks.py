"""Webhooks end to end: the real server (uvicorn; on each backend) and a receiving app on loopback.

Callbacks go in over HTTP; events come out as signed POSTs that the receiver
verifies with ``standardwebhooks.Webhook.verify``; what was committed is read
back from the server's own feed, ``GET /events``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.core.delivery_schedule import LOST_ATTEMPT
from tests.conftest import callback_path
from tests.harness import API_TOKEN, ServerProcess, eventually
from tests.payloads import dumps, seedance

from .receiver import HangFirst, Receiver

pytestmark = pytest.mark.e2e

BEARER = {"Authorization": f"Bearer {API_TOKEN}"}
# A generous timeout: on a loaded machine a short one would time out answered attempts,
# and their (correct, at-least-once) repeats would blur what a test counts.
SHORT = {"DELIVERY": "on", "DELIVERY_RETRY_SCHEDULE": "0,0.2,0.2", "DELIVERY_TIMEOUT": "10"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver().serve() as r:
        yield r


def start(db: Path, database_url: str, **env: str) -> ServerProcess:
    return ServerProcess(db, {**SHORT, **env}, database_url=database_url).start()


@pytest.fixture
def server(tmp_path, database_url) -> Iterator[ServerProcess]:
    process = start(tmp_path / "taskhook.db", database_url)
    yield process
    process.stop()


def api(server: ServerProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, headers=BEARER, timeout=30)


async def add_endpoint(client: httpx.AsyncClient, receiver: Receiver, **body: object) -> dict:
    answer = await client.post("/endpoints", json={"url": receiver.url, **body})
    assert answer.status_code == 201, answer.text
    created = answer.json()
    receiver.secrets.append(created["secret"])
    return created


async def callback(client: httpx.AsyncClient, task_id: str, status: str) -> None:
    answer = await client.post(
        callback_path("seedance"), content=dumps(seedance(task_id, status=status))
    )
    assert answer.status_code == 200, answer.text


async def feed(client: httpx.AsyncClient) -> list[dict]:
    """Every event the server committed, in commit order."""
    items, cursor = [], None
    while True:
        page = (await client.get("/events", params={"after": cursor, "limit": 1000})).json()
        items += page["items"]
        if not page["items"]:
            return items
        cursor = page["next_cursor"]


async def attempts(client: httpx.AsyncClient, endpoint_id: str, **query: str) -> list[dict]:
    answer = await client.get(f"/endpoints/{endpoint_id}/attempts", params=query)
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


def by_task(events: list[dict]) -> dict[str, list[str]]:
    order: dict[str, list[str]] = collections.defaultdict(list)
    for e in events:
        order[e["data"]["task_id"]].append(e["id"])
    return order


async def test_every_event_arrives_verified_as_committed(server, receiver):
    async with api(server) as client:
        await add_endpoint(client, receiver)
        tasks = [str(uuid.uuid4()) for _ in range(10)]
        for task_id in tasks:
            await callback(client, task_id, "running")
            await callback(client, task_id, "succeeded")
        committed = await feed(client)
        assert len(committed) == 30  # per task: to running, to succeeded, succeeded
        await eventually(lambda: len(receiver.accepted()) >= 30, "30 deliveries")
    got = {d.event_id: d for d in receiver.all()}
    assert set(got) == {e["id"] for e in committed}
    for e in committed:
        delivery = got[e["id"]]
        assert delivery.verified_by == (0,)
        assert json.loads(delivery.body) == {k: e[k] for k in ("type", "timestamp", "data")}
    assert len(receiver.all()) == 30  # each once: nothing failed, nothing repeated


async def test_retries_keep_the_id_and_the_event_fails_after_the_schedule(server, receiver):
    doomed = str(uuid.uuid4())
    receiver.rule = lambda d: 500 if d.task_id == doomed else None
    async with api(server) as client:
        endpoint = await add_endpoint(client, receiver)
        await callback(client, doomed, "running")  # one event: status_changed
        await callback(client, doomed, "succeeded")  # two more, behind the first
        first, second, third = (e["id"] for e in await feed(client))

        async def all_failed() -> list[dict] | None:
            items = await attempts(client, endpoint["id"], outcome="failed")
            return items if len(items) == 3 else None

        await eventually(all_failed, "every event of the task to fail for good")
        tried = await attempts(client, endpoint["id"], limit="50")
    seen = [d.event_id for d in receiver.all()]
    # Three attempts each (the schedule has three numbers), same webhook-id every time,
    # and a later event of the task only after the earlier one failed for good.
    assert seen == [first] * 3 + [second] * 3 + [third] * 3
    assert all(d.verified_by == (0,) for d in receiver.all())
    mine = [a for a in reversed(tried) if a["event_id"] == first]
    assert [(a["attempt"], a["outcome"], a["response_status"]) for a in mine] == [
        (1, "retrying", 500),
        (2, "retrying", 500),
        (3, "failed", 500),
    ]
    assert mine[0]["response"] == "told to answer 500" and mine[0]["duration_ms"] >= 0


async def test_order_per_task_under_concurrent_callbacks(tmp_path, database_url, receiver):
    rng, lock = random.Random(14), threading.Lock()

    def flaky(delivery):
        with lock:
            return 503 if rng.random() < 0.25 else None

    receiver.rule = flaky
    schedule = ",".join(["0"] + ["0.05"] * 15)
    server = start(tmp_path / "taskhook.db", database_url, DELIVERY_RETRY_SCHEDULE=schedule)
    try:
        async with api(server) as client:
            await add_endpoint(client, receiver)
            tasks = [str(uuid.uuid4()) for _ in range(40)]

            async def life(task_id: str) -> None:
                for status in ("queued", "running", "succeeded"):
                    await callback(client, task_id, status)

            await asyncio.gather(*(life(t) for t in tasks))
            committed = await feed(client)
            assert len(committed) == 40 * 4
            await eventually(
                lambda: len({d.event_id for d in receiver.accepted()}) >= len(committed),
                "every event accepted",
                within=60,
            )
    finally:
        server.stop()
    expected = by_task(committed)
    accepted = by_task([{"id": d.event_id, **d.event} for d in receiver.accepted()])
    attempted: dict[str, list[str]] = collections.defaultdict(list)
    for d in receiver.all():
        if d.event_id not in attempted[d.task_id]:
            attempted[d.task_id].append(d.event_id)
    for task_id in tasks:
        # At least once: an answered attempt that timed out is repeated, so an event may be
        # accepted twice in a row, but never after a later event of its task.
        runs = [e for i, e in enumerate(accepted[task_id]) if accepted[task_id][i - 1 : i] != [e]]
        assert runs == expected[task_id], f"{task_id} accepted out of order"
        assert attempted[task_id] == expected[task_id], f"{task_id} attempted out of order"


async def test_kill_9_with_undelivered_events_then_restart_delivers_them_all(
    tmp_path, database_url, receiver
):
    receiver.rule = lambda d: 503  # the application is down
    schedule = ",".join(["0"] + ["0.5"] * 60)
    db = tmp_path / "taskhook.db"
    server = start(db, database_url, DELIVERY_RETRY_SCHEDULE=schedule)
    try:
        async with api(server) as client:
            await add_endpoint(client, receiver)
            for task_id in [str(uuid.uuid4()) for _ in range(8)]:
                await callback(client, task_id, "succeeded")
            committed = await feed(client)
            await eventually(lambda: len(receiver.all()) >= 5, "some attempts to fail")
        server.kill()
        assert not receiver.accepted()
        receiver.rule = None  # the application is back
        server = start(db, database_url, DELIVERY_RETRY_SCHEDULE=schedule)
        await eventually(
            lambda: {d.event_id for d in receiver.accepted()} >= {e["id"] for e in committed},
            "every event after the restart",
            within=60,
        )
    finally:
        server.stop()
    assert len(committed) == 16
    assert all(d.verified_by == (0,) for d in receiver.all())


async def test_an_attempt_in_flight_at_kill_9_is_made_again_and_recorded(
    tmp_path, database_url, receiver
):
    receiver.rule = rule = HangFirst()
    db = tmp_path / "taskhook.db"
    server = start(db, database_url, DELIVERY_TIMEOUT="3")
    try:
        async with api(server) as client:
            endpoint = await add_endpoint(client, receiver)
            await callback(client, str(uuid.uuid4()), "succeeded")
            (first, second) = await feed(client)
            await eventually(lambda: rule.calls, "the first attempt to be in flight")
        server.kill()
        # The dead process's claim lapses (DELIVERY_TIMEOUT + 10 s after it was taken);
        # the restarted process then takes the message over.
        server = start(db, database_url, DELIVERY_TIMEOUT="3")
        async with api(server) as client:
            await eventually(
                lambda: len(receiver.accepted()) >= 2, "both events after the takeover", 90
            )
            tried = await attempts(client, endpoint["id"])
    finally:
        server.stop()
    assert [d.event_id for d in receiver.accepted()] == [first["id"], second["id"]]
    lost = [a for a in tried if a["error"] == LOST_ATTEMPT]
    assert [(a["event_id"], a["attempt"], a["outcome"]) for a in lost] == [
        (first["id"], 1, "retrying")
    ]


async def test_rotation_signs_with_both_secrets(server, receiver):
    async with api(server) as client:
        endpoint = await add_endpoint(client, receiver)
        rotated = (await client.post(f"/endpoints/{endpoint['id']}/rotate-secret")).json()
        receiver.secrets.append(rotated["secret"])
        await callback(client, str(uuid.uuid4()), "succeeded")
        await eventually(lambda: len(receiver.accepted()) >= 2, "two deliveries")
    assert {d.verified_by for d in receiver.all()} == {(0, 1)}
    assert all(len(d.signature.split(" ")) == 2 for d in receiver.all())


async def test_410_disables_the_endpoint_and_says_so(server, receiver):
    with Receiver().serve() as healthy:
        receiver.rule = lambda d: 410
        async with api(server) as client:
            gone = await add_endpoint(client, receiver)
            witness = await add_endpoint(client, healthy)
            await callback(client, str(uuid.uuid4()), "running")

            async def disabled() -> bool:
                return (await client.get(f"/endpoints/{gone['id']}")).json()["disabled"]

            await eventually(disabled, "the endpoint to be disabled")
            await callback(client, str(uuid.uuid4()), "running")
            await eventually(lambda: len(healthy.accepted()) >= 2, "the witness to get both")
            shown = (await client.get(f"/endpoints/{gone['id']}")).json()
            ready = (await client.get("/readyz")).json()
            metrics = (await client.get("/metrics")).text
        assert witness["id"] != gone["id"]
    assert len(receiver.all()) == 1  # nothing after the 410
    assert "410" in shown["disabled_reason"] and shown["disabled_at"]
    assert ready["ok"] is True
    assert ready["checks"]["delivery"]["disabled"] == [
        {"endpoint": gone["id"], "reason": shown["disabled_reason"]}
    ]
    assert f'taskhook_webhook_endpoint_disabled{{endpoint="{gone["id"]}"}} 1.0' in metrics
    assert server.logs().count("webhook_endpoint_disabled") == 1


async def test_a_hanging_endpoint_delays_no_other_endpoint(tmp_path, database_url, receiver):
    receiver.rule = lambda d: "hang"
    server = start(tmp_path / "taskhook.db", database_url, DELIVERY_TIMEOUT="60")
    try:
        with Receiver().serve() as fast:
            async with api(server) as client:
                stuck = await add_endpoint(client, receiver)
                await add_endpoint(client, fast)
                for _ in range(12):
                    await callback(client, str(uuid.uuid4()), "running")
                await eventually(lambda: len(fast.accepted()) >= 12, "the fast endpoint's 12")
                # Meanwhile not one attempt to the hanging endpoint has ended, and it holds
                # no more than DELIVERY_ENDPOINT_CONCURRENCY (8) requests.
                assert await attempts(client, stuck["id"]) == []
                assert 1 <= len(receiver.all()) <= 8
    finally:
        server.stop()
