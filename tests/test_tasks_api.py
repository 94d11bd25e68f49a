"""/tasks, /tasks/{id}, /tasks/{id}/deliveries, /quarantine and replay, /openapi.json."""

from __future__ import annotations

import uuid

from server.web.routes import ROUTES

from .conftest import callback_path
from .harness import run_sql
from .payloads import dumps, seedance, seedream


async def test_register_one_task(client):
    task_id = str(uuid.uuid4())
    answer = await client.post(
        "/tasks", json={"provider": "seedance", "task_id": task_id, "metadata": {"user": 7}}
    )
    assert answer.status_code == 201
    task = answer.json()
    assert task["task_id"] == task_id and task["status"] == "pending"
    assert task["metadata"] == {"user": 7} and task["next_check_at"] is not None


async def test_register_is_idempotent_and_changes_no_state(client):
    task_id = str(uuid.uuid4())
    await client.post(callback_path("seedance"), content=dumps(seedance(task_id)))
    before = (await client.get(f"/tasks/{task_id}")).json()
    again = await client.post(
        "/tasks", json={"provider": "seedance", "task_id": task_id, "metadata": {"x": 1}}
    )
    assert again.status_code == 201
    assert again.json() == before


async def test_register_in_bulk(client):
    ids = [str(uuid.uuid4()) for _ in range(1000)]
    tasks = [{"provider": "seedream", "task_id": i} for i in ids]
    answer = await client.post("/tasks", json={"tasks": tasks})
    assert answer.status_code == 201
    assert [t["task_id"] for t in answer.json()["tasks"]] == ids
    too_many = await client.post("/tasks", json={"tasks": tasks + tasks[:1]})
    assert too_many.status_code == 422 and too_many.json()["error"]["code"] == "too_many_tasks"


async def test_register_rejects_bad_tasks_with_a_clear_message(client):
    for body, needle in (
        ({"provider": "nope", "task_id": "x"}, "provider"),
        ({"provider": "seedance"}, "task_id"),
        ({"tasks": [{"provider": "seedance", "task_id": "a"}, 5]}, "tasks[1]"),
        ({"provider": "seedance", "task_id": "a", "metadata": []}, "metadata"),
    ):
        answer = await client.post("/tasks", json=body)
        assert answer.status_code == 422, body
        assert needle in answer.json()["error"]["message"]
    assert (await client.post("/tasks", content=b"{nope")).status_code == 400


async def test_list_newest_first_with_filters_and_cursor(client):
    ids = [str(uuid.uuid4()) for _ in range(5)]
    for i, task_id in enumerate(ids):
        provider = "seedream" if i % 2 else "seedance"
        await client.post("/tasks", json={"provider": provider, "task_id": task_id})
    await client.post(callback_path("seedance"), content=dumps(seedance(ids[0])))

    page = (await client.get("/tasks", params={"limit": 2})).json()
    assert [t["task_id"] for t in page["tasks"]] == [ids[4], ids[3]]
    seen = [t["task_id"] for t in page["tasks"]]
    while page["next_cursor"]:
        page = (
            await client.get("/tasks", params={"limit": 2, "cursor": page["next_cursor"]})
        ).json()
        seen += [t["task_id"] for t in page["tasks"]]
    assert seen == ids[::-1]

    succeeded = (await client.get("/tasks", params={"status": "succeeded"})).json()["tasks"]
    assert [t["task_id"] for t in succeeded] == [ids[0]]
    seedreams = (await client.get("/tasks", params={"provider": "seedream"})).json()["tasks"]
    assert [t["task_id"] for t in seedreams] == [ids[3], ids[1]]
    both = await client.get("/tasks", params={"provider": "seedance", "status": "pending"})
    assert [t["task_id"] for t in both.json()["tasks"]] == [ids[4], ids[2]]


async def test_list_rejects_bad_filters(client):
    for params in (
        {"status": "done"},
        {"provider": "x"},
        {"limit": "0"},
        {"limit": "abc"},
        {"cursor": "!!"},
    ):
        answer = await client.get("/tasks", params=params)
        assert answer.status_code == 400, params
        assert answer.json()["error"]["code"] in ("invalid_filter", "invalid_cursor")


async def test_deliveries_oldest_first_with_bodies(client):
    task_id = str(uuid.uuid4())
    running = dumps(seedance(task_id, "running", video=False))
    done = dumps(seedance(task_id))
    await client.post(callback_path("seedance"), content=running)
    await client.post(callback_path("seedance"), content=done)
    items = (await client.get(f"/tasks/{task_id}/deliveries")).json()["deliveries"]
    assert [d["body"]["data"]["status"] for d in items] == ["running", "succeeded"]
    assert all(d["source"] == "callback" for d in items)
    assert (await client.get("/tasks/unknown/deliveries")).status_code == 404


async def test_replay_merges_and_removes_from_quarantine(client, settings):
    # A body whose task id cannot be found is quarantined...
    body = dumps({"success": True, "data": [{"image_url": "https://cdn.example/a.jpg"}]})
    assert (await client.post(callback_path("seedream"), content=body)).status_code == 422
    [item] = (await client.get("/quarantine")).json()["items"]
    still = await client.post(f"/quarantine/{item['id']}/replay")
    assert still.status_code == 422
    assert len((await client.get("/quarantine")).json()["items"]) == 1

    # ...and once the row is fixed (here: by hand, standing in for a parser fix), replay merges it.
    fixed = dumps(seedream("11111111-2222-3333-4444-555555555555"))
    run_sql(
        settings.database_url, "UPDATE quarantine SET body = ? WHERE id = ?", (fixed, item["id"])
    )
    replayed = await client.post(f"/quarantine/{item['id']}/replay")
    assert replayed.status_code == 200 and replayed.json()["status"] == "succeeded"
    assert (await client.get("/quarantine")).json()["items"] == []
    task = (await client.get("/tasks/11111111-2222-3333-4444-555555555555")).json()
    assert task["status"] == "succeeded" and task["deliveries"] == 1
    assert (await client.post("/quarantine/999/replay")).status_code == 404


async def test_openapi_lists_every_route(client):
    schema = (await client.get("/openapi.json")).json()
    assert schema["openapi"].startswith("3.")
    for route in ROUTES:
        if not getattr(route, "include_in_schema", True):
            continue
        for method in route.methods - {"HEAD"}:
            operation = schema["paths"][route.path][method.lower()]
            assert operation["summary"] and operation["responses"], route.path


async def test_health(client):
    assert (await client.get("/healthz")).json() == {"ok": True}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"]["ok"] is True


async def test_discard_deletes_a_quarantined_body_for_good(client):
    await client.post(callback_path("seedance"), content=b"<html>never json</html>")
    await client.post(callback_path("seedream"), content=b"{}")
    items = (await client.get("/quarantine")).json()["items"]
    assert len(items) == 2
    gone = await client.delete(f"/quarantine/{items[1]['id']}")
    assert gone.status_code == 200 and gone.json() == {"ok": True, "discarded": items[1]["id"]}
    left = (await client.get("/quarantine")).json()["items"]
    assert [i["id"] for i in left] == [items[0]["id"]]
    again = await client.delete(f"/quarantine/{items[1]['id']}")
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"
    assert (await client.post(f"/quarantine/{items[1]['id']}/replay")).status_code == 404
    unauthorized = await client.delete(
        f"/quarantine/{items[0]['id']}", headers={"authorization": "Bearer nope"}
    )
    assert unauthorized.status_code == 401
    assert len((await client.get("/quarantine")).json()["items"]) == 1
