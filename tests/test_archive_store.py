"""The archive's store part: enqueue on success, claims, outcomes shown on the task."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from server.ingest import receive
from server.store import Store

from .payloads import dumps, failure, seedance, seedance2, seedream


@pytest.fixture
async def store(settings):
    async with Store(replace(settings, archive=True)) as s:
        yield s


async def rows(store: Store) -> list[tuple]:
    return [
        tuple(r)
        for r in await store._fetchall(
            "SELECT task_key, url, status, attempts FROM archives ORDER BY url"
        )
    ]


async def test_a_succeeded_task_queues_one_row_per_result_url(store):
    body = seedance()
    body["data"]["last_frame_url"] = "https://cdn.example/frame.jpg"
    outcome = await receive(store, "seedance", dumps(body))
    assert outcome.status == "succeeded" and outcome.archive_queued >= 1
    queued = await rows(store)
    record = await store.get_task(outcome.task_id)
    assert {r[1] for r in queued} == {r.url for r in record.state.results}
    assert all(r[2] == "pending" and r[3] == 0 for r in queued)
    assert store.archive_wakeup.is_set()


async def test_a_failed_or_unfinished_task_queues_nothing(store):
    task_id = str(uuid.uuid4())
    await receive(store, "seedance", dumps(seedance(task_id, status="running", video=False)))
    await receive(store, "seedance", dumps(failure(task_id)))
    assert (await store.get_task(task_id)).state.status == "failed"
    assert await rows(store) == []
    assert not store.archive_wakeup.is_set()


async def test_enqueue_is_idempotent(store):
    body = dumps(seedream())
    await receive(store, "seedream", body)
    await receive(store, "seedream", body)  # byte-identical repeat
    first = await rows(store)
    assert len(first) == 1
    assert await store.enqueue_missing_archives() == 0
    assert await rows(store) == first


async def test_archive_off_queues_nothing_until_enqueue_missing(settings):
    async with Store(settings) as off:  # the conftest settings have ARCHIVE off
        await receive(off, "seedance2", dumps(seedance2()))
        assert await rows(off) == []
        assert await off.enqueue_missing_archives() == 1
        assert [r[2] for r in await rows(off)] == ["pending"]


async def test_claims_are_exclusive_and_lapse(store):
    await receive(store, "seedream", dumps(seedream()))
    first = await store.claim_archives("a", limit=5, lease=60)
    assert len(first) == 1
    assert await store.claim_archives("b", limit=5, lease=60) == []
    assert await store.release_archives(["a"]) == 1
    lapsed = await store.claim_archives("b", limit=5, lease=-1)  # a claim already over
    assert [j.url for j in lapsed] == [first[0].url]
    assert [j.url for j in await store.claim_archives("c", limit=5, lease=60)] == [first[0].url]


async def test_outcomes_show_on_the_task(store):
    outcome = await receive(store, "seedance", dumps(seedance()))
    (job,) = await store.claim_archives("me", limit=5, lease=60)
    # Before any outcome the result carries neither key.
    assert "archived" not in (await store.get_task(outcome.task_id)).to_json()["results"][0]
    await store.fail_archive(job, "me", "timeout", "slow", retry_at=0.0)
    result = (await store.get_task(outcome.task_id)).to_json()["results"][0]
    assert result["archive_error"] == {
        "code": "timeout",
        "message": "slow",
        "attempts": 1,
        "final": False,
    }
    (job,) = await store.claim_archives("me", limit=5, lease=60)
    await store.finish_archive(job, "me", "ab" * 32, 12, "video/mp4")
    listed, _ = await store.list_tasks()
    result = listed[0].to_json()["results"][0]
    assert "archive_error" not in result
    assert result["archived"] == {
        "url": "/files/" + "ab" * 32,
        "sha256": "ab" * 32,
        "bytes": 12,
        "content_type": "video/mp4",
    }
    assert await store.archived_file("ab" * 32) == ("video/mp4", 12)
    assert await store.archive_counts() == {"done": 1}


async def test_a_final_failure_is_not_claimed_again_unless_asked(store):
    await receive(store, "seedream", dumps(seedream()))
    (job,) = await store.claim_archives("me", limit=5, lease=60)
    await store.fail_archive(job, "me", "too_large", "big", retry_at=None)
    assert await store.claim_archives("me", limit=5, lease=60) == []
    due_by = await store.reschedule_archives(include_failed=True)
    again = await store.claim_archives("me", limit=5, lease=60, due_by=due_by)
    assert [j.url for j in again] == [job.url]
