"""A callback naming a task held under another provider: 409, quarantined, task unchanged."""

from __future__ import annotations

import uuid

from .conftest import callback_path
from .payloads import dumps, seedance, seedream


async def test_a_callback_for_another_providers_task_is_refused_and_quarantined(client):
    task_id = str(uuid.uuid4())
    registered = await client.post("/tasks", json={"provider": "seedance", "task_id": task_id})
    assert registered.status_code == 201
    before = (await client.get(f"/tasks/{task_id}")).json()

    body = dumps(seedream(task_id))  # a seedream body, posted to the seedream URL
    answer = await client.post(callback_path("seedream"), content=body)

    assert answer.status_code == 409, answer.text
    error = answer.json()["error"]
    assert error["code"] == "provider_mismatch"
    assert "seedance" in error["message"] and "quarantine id" in error["message"]
    after = (await client.get(f"/tasks/{task_id}")).json()
    assert after == before  # unchanged: still pending, no delivery counted
    assert (await client.get(f"/tasks/{task_id}/deliveries")).json()["deliveries"] == []
    [kept] = (await client.get("/quarantine")).json()["items"]
    assert kept["reason"] == "provider_mismatch" and kept["provider"] == "seedream"
    assert kept["body"] == body.decode()

    # The real provider's callback still merges normally afterwards.
    real = await client.post(callback_path("seedance"), content=dumps(seedance(task_id)))
    assert real.status_code == 200 and real.json()["status"] == "succeeded"
    assert (await client.get(f"/tasks/{task_id}")).json().get("conflicts") is None


async def test_replaying_a_mismatched_body_is_refused_again_and_kept(client):
    task_id = str(uuid.uuid4())
    await client.post(callback_path("seedance"), content=dumps(seedance(task_id)))
    assert (
        await client.post(callback_path("seedream"), content=dumps(seedream(task_id)))
    ).status_code == 409
    [kept] = (await client.get("/quarantine")).json()["items"]
    replay = await client.post(f"/quarantine/{kept['id']}/replay")
    assert replay.status_code == 409
    assert replay.json()["error"]["code"] == "provider_mismatch"
    assert [i["id"] for i in (await client.get("/quarantine")).json()["items"]] == [kept["id"]]
