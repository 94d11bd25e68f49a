"""POST /callbacks/{provider}/{token}: keep, merge, answer only once committed."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import replace

import pytest

from server.core.tokens import callback_token

from .conftest import callback_path, serve_app
from .harness import CALLBACK_SECRET
from .payloads import BUILDERS, dumps, failure, seedance, seedance2


@pytest.mark.parametrize("provider", sorted(BUILDERS))
async def test_each_provider_callback_is_kept_and_merged(client, provider):
    body = BUILDERS[provider]()
    answer = await client.post(callback_path(provider), content=dumps(body))
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["ok"] is True and data["status"] == "succeeded"
    task = (await client.get(f"/tasks/{data['task_id']}")).json()
    assert task["provider"] == provider
    assert task["status"] == "succeeded"
    assert task["results"] and task["results"][0]["url"].startswith("https://")
    assert task["deliveries"] == 1 and task["last_source"] == "callback"
    assert task["completed_at"] is not None and task["next_check_at"] is None


async def test_byte_identical_repeat_is_stored_once(client):
    body = dumps(seedance())
    first = await client.post(callback_path("seedance"), content=body)
    again = await client.post(callback_path("seedance"), content=body)
    assert again.status_code == 200
    assert again.json()["duplicate"] is True and first.json()["duplicate"] is False
    task_id = first.json()["task_id"]
    deliveries = (await client.get(f"/tasks/{task_id}/deliveries")).json()["deliveries"]
    assert len(deliveries) == 1
    assert deliveries[0]["sha256"] == hashlib.sha256(body).hexdigest()
    assert (await client.get(f"/tasks/{task_id}")).json()["deliveries"] == 1


async def test_conflicting_final_is_recorded_not_applied(client):
    task_id = str(uuid.uuid4())
    await client.post(callback_path("seedance"), content=dumps(seedance(task_id)))
    late = await client.post(callback_path("seedance"), content=dumps(failure(task_id)))
    assert late.json()["status"] == "succeeded"
    task = (await client.get(f"/tasks/{task_id}")).json()
    assert task["status"] == "succeeded" and task["deliveries"] == 2
    assert task["conflicts"][0]["status"] == "failed"


async def test_status_never_moves_back(client):
    task_id = "asyntask_" + uuid.uuid4().hex
    await client.post(callback_path("seedance2"), content=dumps(seedance2(task_id, "IN_PROGRESS")))
    answer = await client.post(
        callback_path("seedance2"), content=dumps(seedance2(task_id, "QUEUED"))
    )
    assert answer.json()["status"] == "running"


async def test_ids_match_without_case_or_dashes(client):
    task_id = str(uuid.uuid4())
    await client.post(callback_path("seedance"), content=dumps(seedance(task_id)))
    for spelling in (task_id.upper(), task_id.replace("-", "")):
        assert (await client.get(f"/tasks/{spelling}")).json()["status"] == "succeeded"


async def test_wrong_token_is_401_and_stores_nothing(client):
    body = dumps(seedance())
    for path in (
        "/callbacks/seedance/not-the-token",
        f"/callbacks/seedance/{callback_token(CALLBACK_SECRET, 'seedance').upper()}",
        f"/callbacks/seedance/{callback_token(CALLBACK_SECRET, 'seedream')}",
    ):
        answer = await client.post(path, content=body)
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "unauthorized"
    assert (await client.get("/tasks")).json()["tasks"] == []
    assert (await client.get("/quarantine")).json()["items"] == []


async def test_every_rotated_secret_is_accepted(settings):
    rotated = replace(settings, callback_secrets=("new", "old"))
    async with serve_app(rotated) as c:
        for secret in ("new", "old"):
            r = await c.post(callback_path("seedance", secret), content=dumps(seedance()))
            assert r.status_code == 200
        r = await c.post(callback_path("seedance", "retired"), content=dumps(seedance()))
        assert r.status_code == 401


async def test_unknown_provider_is_404(client):
    answer = await client.post("/callbacks/midjourney/whatever", content=b"{}")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"


async def test_not_json_is_400_and_quarantined(client):
    answer = await client.post(
        callback_path("seedance"),
        content=b"\xff\xfe not json",
        headers={"content-type": "text/plain", "authorization": "Bearer x"},
    )
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "not_json"
    items = (await client.get("/quarantine")).json()["items"]
    assert len(items) == 1 and items[0]["reason"] == "not_json"
    assert items[0]["body_encoding"] == "base64"
    assert "authorization" not in items[0]["headers"]
    assert items[0]["headers"]["content-type"] == "text/plain"


async def test_no_task_id_is_422_and_quarantined(client):
    answer = await client.post(callback_path("seedream"), content=b"{}")
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "no_task_id"
    items = (await client.get("/quarantine")).json()["items"]
    assert [i["body"] for i in items] == ["{}"]


async def test_body_limit_is_inclusive(settings):
    body = dumps(seedance())
    async with serve_app(replace(settings, max_body_bytes=len(body))) as c:
        assert (await c.post(callback_path("seedance"), content=body)).status_code == 200
        over = await c.post(callback_path("seedance"), content=body + b" ")
        assert over.status_code == 413
        assert over.json()["error"]["code"] == "body_too_large"


async def test_body_limit_holds_without_content_length(settings):
    async def chunks():
        for _ in range(10):
            yield b" " * 100

    async with serve_app(replace(settings, max_body_bytes=500)) as c:
        answer = await c.post(callback_path("seedance"), content=chunks())
        assert answer.status_code == 413
        assert answer.json()["error"]["code"] == "body_too_large"


async def test_callback_for_unregistered_task_creates_it(client):
    task_id = str(uuid.uuid4())
    assert (await client.get(f"/tasks/{task_id}")).status_code == 404
    body = dumps(seedance(task_id, "running", False))
    await client.post(callback_path("seedance"), content=body)
    task = (await client.get(f"/tasks/{task_id}")).json()
    assert task["status"] == "running" and task["next_check_at"] is not None
