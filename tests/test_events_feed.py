"""``GET /events``: one event per change, committed with it, read in order with a cursor."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx
import pytest

from .conftest import callback_path
from .harness import API_TOKEN, ServerProcess, eventually
from .payloads import dumps, failure, seedance


async def feed(client: httpx.AsyncClient, **params: str) -> dict:
    answer = await client.get("/events", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_each_change_is_one_event_with_the_task_as_get_shows_it(client):
    task_id = str(uuid.uuid4())
    await client.post("/tasks", json={"provider": "seedance", "task_id": task_id})
    start = await feed(client)
    assert start["items"] == [] and isinstance(start["next_cursor"], str)  # registering: none

    await client.post(callback_path("seedance"), content=dumps(seedance(task_id, "running", False)))
    running_view = (await client.get(f"/tasks/{task_id}")).json()
    done = dumps(seedance(task_id))
    await client.post(callback_path("seedance"), content=done)
    await client.post(callback_path("seedance"), content=done)  # a byte-identical repeat: none
    final_view = (await client.get(f"/tasks/{task_id}")).json()

    page = await feed(client, after=start["next_cursor"])
    items = page["items"]
    assert [e["type"] for e in items] == [
        "task.status_changed",
        "task.status_changed",
        "task.succeeded",
    ]
    assert all(set(e) == {"id", "type", "timestamp", "data"} for e in items)
    assert all(re.fullmatch(r"evt_[0-9a-z]{26}", e["id"]) for e in items)
    assert items[0]["data"] == running_view  # the task as it was at that commit
    assert items[1]["data"] == items[2]["data"] == final_view
    assert items[2]["timestamp"].endswith("Z")

    again = await feed(client, after=page["next_cursor"])
    assert again == {"items": [], "next_cursor": page["next_cursor"]}
    first_two = await feed(client, after=start["next_cursor"], limit="2")
    assert [e["id"] for e in first_two["items"]] == [e["id"] for e in items[:2]]
    rest = await feed(client, after=first_two["next_cursor"])
    assert [e["id"] for e in rest["items"]] == [items[2]["id"]]


async def test_types_filter_the_feed(client):
    await client.post(callback_path("seedance"), content=dumps(failure(str(uuid.uuid4()))))
    await client.post(callback_path("seedance"), content=dumps(seedance()))
    page = await feed(client, types="task.failed,task.succeeded")
    assert [e["type"] for e in page["items"]] == ["task.failed", "task.succeeded"]
    assert (await feed(client, types="task.expired"))["items"] == []


@pytest.mark.parametrize(
    "params",
    [
        {"after": "x"},
        {"after": "99999999999999999999999"},
        {"types": "task.nope"},
        {"types": ","},
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "²"},
        {"wait": "61"},
        {"wait": "-1"},
        {"wait": "nan"},
        {"wait": "soon"},
    ],
)
async def test_bad_parameters_are_400(client, params):
    answer = await client.get("/events", params=params)
    assert answer.status_code == 400, params
    assert answer.json()["error"]["code"] in ("invalid_cursor", "invalid_filter")


async def test_the_feed_needs_the_bearer(client):
    answer = await client.get("/events", headers={"Authorization": "Bearer wrong"})
    assert answer.status_code == 401


async def test_a_long_poll_is_woken_by_the_commit(client, app):
    start = (await feed(client))["next_cursor"]
    signals = app.state.taskhook.store._signals
    polling = asyncio.ensure_future(
        client.get("/events", params={"after": start, "wait": "60"}, timeout=90)
    )
    await eventually(lambda: signals.waiting("events") == 1, what="the poll to wait")
    assert not polling.done()
    task_id = str(uuid.uuid4())
    await client.post(callback_path("seedance"), content=dumps(failure(task_id)))
    answer = await polling
    # Woken by the commit: the answer holds the event (a timed-out poll would be empty).
    assert [e["type"] for e in answer.json()["items"]] == ["task.status_changed", "task.failed"]
    assert answer.json()["items"][0]["data"]["task_id"] == task_id


async def test_a_poll_without_events_answers_empty_when_the_wait_is_over(client):
    start = (await feed(client))["next_cursor"]
    answer = await feed(client, after=start, wait="0.2")
    assert answer == {"items": [], "next_cursor": start}


@pytest.mark.e2e
def test_events_survive_kill_9_right_after_the_200_and_the_cursor_holds(tmp_path, database_url):
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    db = tmp_path / "taskhook.db"
    first = ServerProcess(db, database_url=database_url).start()
    try:
        before = httpx.get(f"{first.url}/events", headers=headers).json()
        task_id = str(uuid.uuid4())
        answer = httpx.post(
            first.url + callback_path("seedance"), content=dumps(seedance(task_id)), timeout=10
        )
        assert answer.status_code == 200
    finally:
        first.kill()  # SIGKILL at once: no chance to flush anything after the 200
    second = ServerProcess(db, database_url=database_url).start()
    try:
        after = httpx.get(
            f"{second.url}/events", params={"after": before["next_cursor"]}, headers=headers
        ).json()
        assert [(e["type"], e["data"]["task_id"]) for e in after["items"]] == [
            ("task.status_changed", task_id),
            ("task.succeeded", task_id),
        ]
        assert after["items"][1]["data"]["status"] == "succeeded"
        # The same cursor gives the same events after the restart: no gap, no duplicate.
        again = httpx.get(
            f"{second.url}/events", params={"after": before["next_cursor"]}, headers=headers
        ).json()
        assert again == after
        tail = httpx.get(
            f"{second.url}/events", params={"after": after["next_cursor"]}, headers=headers
        ).json()
        assert tail["items"] == []
    finally:
        second.stop()
