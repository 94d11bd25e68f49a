"""GET /metrics: counters move by exactly what was done; task gauges come from the database."""

from __future__ import annotations

import uuid

from prometheus_client.parser import text_string_to_metric_families

from server.observe import metrics

from .conftest import callback_path
from .payloads import dumps, seedance


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


async def scrape(client) -> dict:
    answer = await client.get("/metrics", headers={"Authorization": ""})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return samples(answer.text)


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_callback_counters_move_by_what_was_posted(client):
    before = await scrape(client)
    for _ in range(3):
        assert (await client.post(callback_path("seedance"), content=dumps(seedance()))).is_success
    repeat = dumps(seedance())
    await client.post(callback_path("seedream"), content=repeat)
    assert (await client.post(callback_path("seedream"), content=repeat)).json()["duplicate"]
    assert (await client.post("/callbacks/seedance/wrong", content=b"{}")).status_code == 401
    assert (await client.post(callback_path("dreamina"), content=b"not json")).status_code == 400
    after = await scrape(client)

    counted = "taskhook_callbacks_received_total"
    assert delta(before, after, counted, provider="seedance", outcome="accepted") == 3
    assert delta(before, after, counted, provider="seedream", outcome="accepted") == 1
    assert delta(before, after, counted, provider="seedream", outcome="duplicate") == 1
    assert delta(before, after, counted, provider="seedance", outcome="unauthorized") == 1
    assert delta(before, after, counted, provider="dreamina", outcome="quarantined") == 1
    assert (
        delta(
            before,
            after,
            "taskhook_deliveries_quarantined_total",
            provider="dreamina",
            reason="not_json",
        )
        == 1
    )
    # Four distinct bodies were committed, in however many groups the writer made.
    assert delta(before, after, "taskhook_write_batch_size_sum") >= 4
    assert delta(before, after, "taskhook_commit_seconds_count") >= 1


async def test_task_gauges_count_by_status_from_the_database(client, app):
    for _ in range(2):
        await client.post(callback_path("seedance"), content=dumps(seedance()))
    await client.post("/tasks", json={"provider": "seedance", "task_id": str(uuid.uuid4())})
    await client.post(
        callback_path("seedance"), content=dumps(seedance(status="running", video=False))
    )
    found = await scrape(client)
    assert found[("taskhook_tasks", (("status", "succeeded"),))] == 2
    assert found[("taskhook_tasks", (("status", "pending"),))] == 1
    assert found[("taskhook_tasks", (("status", "running"),))] == 1
    assert found[("taskhook_tasks", (("status", "failed"),))] == 0
    assert found[("taskhook_unfinished_tasks", ())] == 2
    assert found[("taskhook_oldest_unfinished_task_age_seconds", ())] >= 0


async def test_snapshot_is_shared_within_its_max_age(app):
    store = app.state.taskhook.store
    calls = 0
    real = store.count_by_status

    async def counting():
        nonlocal calls
        calls += 1
        return await real()

    store.count_by_status = counting
    first = await metrics.task_snapshot(store)
    second = await metrics.task_snapshot(store)
    assert second is first and calls == 1
    third = await metrics.task_snapshot(store, max_age=0)
    assert third is not first and calls == 2


async def test_metrics_is_in_openapi_and_the_dashboard_is_not(client):
    schema = (await client.get("/openapi.json")).json()
    assert "/metrics" in schema["paths"]
    assert not any(path.startswith("/dashboard") for path in schema["paths"])
