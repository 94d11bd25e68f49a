"""The store contract (``server.store.base``), through its methods only, on every backend.

Each test names the guarantee it checks. Several stores opened on one
database stand for several processes (or replicas).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

import pytest

from server.core.decide import ARCHIVED, FAILED, STATUS_CHANGED, SUCCEEDED
from server.core.render import task_json
from server.core.types import ErrorInfo, Observation, Result, Status
from server.errors import BadCursor, ProviderMismatch, StoreClosed
from server.store import CONCERNS, Incoming, Registration, Store

from .conftest import OpenStore

pytestmark = pytest.mark.asyncio


def new_id() -> str:
    return str(uuid.uuid4())


def observed(
    task_id: str,
    status: Status | None,
    *,
    provider: str = "seedance",
    url: str | None = None,
    source: str = "callback",
    check: bool = False,
    body: bytes | None = None,
    note: str = "",
) -> Incoming:
    """An item saying ``status`` about ``task_id``; its body is unique unless given."""
    results = (Result(url or f"https://cdn.example/{task_id}.mp4", "video"),)
    obs = Observation(
        provider,
        task_id,
        status,
        upstream_status=status.value if status else None,
        results=results if status is Status.SUCCEEDED else (),
        error=ErrorInfo("E1", "boom") if status is Status.FAILED else None,
    )
    raw = body if body is not None else json.dumps([task_id, str(status), note]).encode()
    return Incoming(provider, task_id, source, raw, obs, check=check)  # type: ignore[arg-type]


async def all_events(store: Store, types: set[str] | None = None) -> list:
    events, cursor = [], None
    while True:
        page, cursor = await store.events_after(cursor, types, limit=7)
        if not page:
            return events
        events += page


# -- writes: atomic, durable, per-task serial order ---------------------------------------


async def test_an_ingest_creates_the_task_and_keeps_the_body(store: Store) -> None:
    task_id = new_id()
    item = observed(task_id, Status.RUNNING)
    outcome = await store.ingest(item)
    assert (outcome.task_id, outcome.provider, outcome.status) == (task_id, "seedance", "running")
    assert outcome.changed and not outcome.duplicate and outcome.previous == "pending"
    record = await store.get_task(task_id.upper().replace("-", ""))
    assert record is not None and record.state.status is Status.RUNNING
    assert record.deliveries == 1 and record.last_source == "callback"
    [kept] = await store.deliveries(task_id)
    assert kept.body == item.body and kept.source == "callback" and kept.status == "running"
    assert kept.changed and len(kept.sha256) == 64


async def test_a_byte_identical_repeat_is_recognised_and_changes_nothing(store: Store) -> None:
    task_id = new_id()
    item = observed(task_id, Status.SUCCEEDED)
    first = await store.ingest(item)
    before = await store.get_task(task_id)
    again = await store.ingest(item)
    assert again.duplicate and not again.changed and again.status == "succeeded"
    assert await store.get_task(task_id) == before
    assert len(await store.deliveries(task_id)) == 1
    assert not again.events and first.events


async def test_a_repeated_reconciler_answer_counts_as_a_check_only(store: Store) -> None:
    task_id = new_id()
    answer = observed(task_id, Status.RUNNING, source="reconcile", check=True)
    await store.ingest(answer)
    outcome = await store.ingest(answer)
    record = await store.get_task(task_id)
    assert not outcome.duplicate and not outcome.changed
    assert record is not None and record.checks == 2 and record.deliveries == 1


async def test_each_item_of_a_bulk_write_is_applied_in_order(store: Store) -> None:
    task_id = new_id()
    items = [
        observed(task_id, Status.QUEUED),
        observed(task_id, Status.RUNNING),
        observed(task_id, Status.FAILED),
        observed(task_id, Status.RUNNING, note="late"),
    ]
    outcomes = await store.ingest_many(items)
    assert [o.previous for o in outcomes] == ["pending", "queued", "running", "failed"]
    assert [o.status for o in outcomes] == ["queued", "running", "failed", "failed"]
    assert [o.became_final for o in outcomes] == [False, False, True, False]
    record = await store.get_task(task_id)
    assert record is not None and record.deliveries == 4 and record.next_check_at is None


async def test_items_for_one_task_from_several_processes_never_lose_an_update(
    open_stores: OpenStore,
) -> None:
    stores = [await open_stores(), await open_stores()]
    task_id = new_id()
    items = [observed(task_id, Status.RUNNING, note=str(i)) for i in range(60)]
    checks = [
        observed(task_id, None, source="reconcile", check=True, note=f"c{i}") for i in range(20)
    ]
    jobs = [stores[i % 2].ingest(item) for i, item in enumerate(items + checks)]
    await asyncio.gather(*jobs)
    record = await stores[0].get_task(task_id)
    assert record is not None
    assert record.deliveries == 80  # every distinct body counted once, none lost
    assert record.checks == 20
    assert len(await stores[1].deliveries(task_id)) == 80


async def test_a_repeat_is_recognised_across_processes(open_stores: OpenStore) -> None:
    a, b = await open_stores(), await open_stores()
    item = observed(new_id(), Status.SUCCEEDED)
    outcomes = await asyncio.gather(a.ingest(item), b.ingest(item))
    assert sorted(o.duplicate for o in outcomes) == [False, True]
    assert len(await a.deliveries(item.task_id)) == 1


async def test_registering_is_idempotent_and_keeps_a_known_task(store: Store) -> None:
    task_id = new_id()
    [first] = await store.register([Registration("seedance", task_id, "trace", {"k": 1})])
    assert first.state.status is Status.PENDING and dict(first.metadata) == {"k": 1}
    assert first.next_check_at is not None
    await store.ingest(observed(task_id, Status.RUNNING))
    [again] = await store.register([Registration("seedance", task_id, None, {"k": 2})])
    assert again.state.status is Status.RUNNING and dict(again.metadata) == {"k": 1}


async def test_a_task_id_may_hold_any_character_nul_included(store: Store) -> None:
    # PostgreSQL's text refuses NUL; the backend spells such values so it takes them.
    odd = ["z\x00中😀", "\x1bnul:x", "a\\0\x00\\", "\x00"]
    records = await store.register([Registration("seedance", t, t, {t: t}) for t in odd])
    assert [r.state.task_id for r in records] == odd
    for task_id in odd:
        outcome = await store.ingest(observed(task_id, Status.SUCCEEDED))
        assert outcome.task_id == task_id and outcome.changed
        record = await store.get_task(task_id)
        assert record is not None and record.state.task_id == task_id
        assert record.state.trace_id == task_id and dict(record.metadata) == {task_id: task_id}
        assert len(await store.deliveries(task_id)) == 1
    page, _ = await store.list_tasks(limit=10)
    assert sorted(r.state.task_id for r in page) == sorted(odd)


async def test_an_item_for_another_providers_task_is_quarantined_untouched(store: Store) -> None:
    task_id = new_id()
    await store.register([Registration("seedance", task_id)])
    before = await store.get_task(task_id)
    item = observed(task_id, Status.SUCCEEDED, provider="seedream")
    with pytest.raises(ProviderMismatch) as raised:
        await store.ingest(item)
    assert raised.value.http_status == 409 and raised.value.code == "provider_mismatch"
    assert await store.get_task(task_id) == before
    assert await store.deliveries(task_id) == []
    [kept], _ = await store.list_quarantine()
    assert kept.reason == "provider_mismatch" and kept.body == item.body
    [outcome] = await store.ingest_many([item])  # the bulk form reports it instead
    assert outcome.mismatch and outcome.quarantine_id is not None


async def test_a_replay_removes_its_quarantine_row_in_the_same_commit(store: Store) -> None:
    task_id = new_id()
    item = observed(task_id, Status.SUCCEEDED)
    qid = await store.quarantine("seedance", item.body or b"", {"user-agent": "x"}, "r", "m")
    replay = Incoming("seedance", task_id, "replay", item.body, item.observation, quarantine_id=qid)
    await store.ingest(replay)
    assert await store.get_quarantined(qid) is None
    assert (await store.get_task(task_id)) is not None


# -- reads -----------------------------------------------------------------------------


async def test_task_pages_follow_opaque_cursors_newest_first(store: Store) -> None:
    ids = [new_id() for _ in range(7)]
    for task_id in ids:
        await store.register([Registration("seedance", task_id)])
    await store.ingest(observed(ids[3], Status.SUCCEEDED))
    seen, cursor = [], None
    while True:
        page, cursor = await store.list_tasks(limit=3, cursor=cursor)
        seen += [r.state.task_id for r in page]
        if cursor is None:
            break
        assert isinstance(cursor, str)
    assert seen == list(reversed(ids))
    done, none = await store.list_tasks(status="succeeded", provider="seedance")
    assert [r.state.task_id for r in done] == [ids[3]] and none is None


@pytest.mark.parametrize("bad", ["x", "-1", "99999999999999999999999", "1.5", "²", ""])
async def test_a_cursor_the_store_did_not_hand_out_is_refused(store: Store, bad: str) -> None:
    for read in (
        store.list_tasks(cursor=bad or "!"),
        store.list_quarantine(cursor=bad or "!"),
        store.events_after(bad),
    ):
        with pytest.raises(BadCursor) as raised:
            await read
        assert raised.value.http_status == 400


async def test_quarantine_pages_and_lookups(store: Store) -> None:
    ids = [await store.quarantine("seedream", b"<%d>" % i, {}, "not_json", "m") for i in range(5)]
    seen, cursor = [], None
    while True:
        page, cursor = await store.list_quarantine(limit=2, cursor=cursor)
        seen += [q.id for q in page]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    item = await store.get_quarantined(ids[0])
    assert item is not None and item.body == b"<0>" and item.provider == "seedream"
    assert await store.get_quarantined(2**70) is None and await store.get_quarantined(-1) is None


async def test_a_discarded_quarantine_row_is_gone_for_good(store: Store) -> None:
    kept = await store.quarantine("seedance", b"junk", {}, "not_json", "m")
    other = await store.quarantine("seedance", b"more junk", {}, "not_json", "m")
    assert await store.discard_quarantined(kept) is True
    assert await store.get_quarantined(kept) is None
    assert await store.discard_quarantined(kept) is False
    assert await store.discard_quarantined(2**70) is False
    assert await store.discard_quarantined(-1) is False
    page, _ = await store.list_quarantine()
    assert [q.id for q in page] == [other]


async def test_tasks_are_found_by_an_id_prefix_without_case_or_dashes(store: Store) -> None:
    ids = ["0A1B2C3D-aaaa-4000", "0a1b2c3d-BBBB-4000", "0a1b2c3e-cccc-4000", "zz"]
    await store.register([Registration("seedance", task_id) for task_id in ids])
    found = await store.find_tasks("0a1b-2c3d")
    assert sorted(r.state.task_id for r in found) == sorted(ids[:2])
    assert [r.state.task_id for r in await store.find_tasks("0A1B2C3DBBBB")] == [ids[1]]
    assert len(await store.find_tasks("0a1b2c3", limit=2)) == 2
    assert await store.find_tasks("---") == [] and await store.find_tasks("0a1b2c3f") == []


async def test_concerns_count_and_list_conflicts_failing_copies_and_gap_fills(
    store: Store,
) -> None:
    assert await store.count_concerns() == dict.fromkeys(CONCERNS, 0)
    conflicted, gap_filled = new_id(), new_id()
    await store.ingest(observed(conflicted, Status.SUCCEEDED))
    await store.ingest(observed(conflicted, Status.FAILED))  # recorded as a conflict
    await store.ingest(observed(gap_filled, Status.SUCCEEDED, source="reconcile", check=True))
    copy_failed = await succeeded_with_files(store, "https://a/1.mp4")
    jobs = await store.claim_archives("me", limit=50, lease=60)
    (job,) = [j for j in jobs if j.url == "https://a/1.mp4"]
    await store.fail_archive(job, "me", "too_large", "big", retry_at=None)
    await store.release_archives("me")
    await store.ingest(observed(new_id(), Status.SUCCEEDED))  # nothing wrong with this one
    assert await store.count_concerns() == {"conflicts": 1, "archive_failed": 1, "gap_filled": 1}
    for concern, task_id in (
        ("conflicts", conflicted),
        ("archive_failed", copy_failed),
        ("gap_filled", gap_filled),
    ):
        listed, cursor = await store.list_concern(concern)
        assert [r.state.task_id for r in listed] == [task_id] and cursor is None, concern
    with pytest.raises(BadCursor):
        await store.list_concern("conflicts", cursor="not-a-cursor")


async def test_due_overdue_stuck_and_counts(store: Store) -> None:
    old, done = new_id(), new_id()
    await store.register([Registration("seedance", old), Registration("seedream", new_id())])
    await store.ingest(observed(done, Status.SUCCEEDED))
    now = time.time()
    due = await store.due_tasks(now + 3600, 10)
    assert {t.task_id for t in due} >= {old} and done not in {t.task_id for t in due}
    assert [t.provider for t in await store.due_tasks(now + 3600, 10, providers=["seedream"])] == [
        "seedream"
    ]
    assert await store.due_tasks(now - 3600, 10) == []
    assert len(await store.due_tasks(now - 3600, 10, ignore_schedule=True)) == 2
    assert [
        t.task_id
        for t in await store.due_tasks(now, 10, task_ids=[old.upper()], ignore_schedule=True)
    ] == [old]
    assert len(await store.overdue_tasks(now + 1, 10)) == 2
    assert len(await store.stuck_tasks(now + 1)) == 2
    assert await store.overdue_tasks(now - 3600, 10) == []
    assert await store.count_by_status() == {"pending": 2, "succeeded": 1}
    unfinished, oldest = await store.unfinished_summary()
    assert unfinished == 2 and oldest is not None and oldest <= now


# -- small values, counters, secrets ----------------------------------------------------


async def test_values_counters_and_the_health_write(store: Store) -> None:
    assert await store.get_value("k", "default") == "default"
    await store.set_value("k", {"a": [1, 2]})
    assert await store.get_value("k") == {"a": [1, 2]}
    assert await store.counter("quarantine_dropped") == 0
    await store.check_writable()


async def test_the_quarantine_cap_drops_the_oldest_and_counts_them(
    open_stores: OpenStore,
) -> None:
    store = await open_stores(quarantine_max_rows=2)
    ids = [await store.quarantine("seedream", b"x", {}, "not_json", "m") for _ in range(5)]
    page, _ = await store.list_quarantine()
    assert [q.id for q in page] == ids[:-3:-1]
    assert await store.counter("quarantine_dropped") == 3


async def test_a_secret_is_stored_once_whoever_asks_first(open_stores: OpenStore) -> None:
    stores = [await open_stores() for _ in range(3)]
    answers = await asyncio.gather(
        *(s.ensure_secret("api_token", f"candidate-{i}") for i, s in enumerate(stores))
    )
    assert len({value for value, _ in answers}) == 1
    assert sum(stored for _, stored in answers) == 1
    assert await stores[0].get_secret("api_token") == answers[0][0]
    assert await stores[0].get_secret("other") is None


# -- leases with terms -----------------------------------------------------------------


async def test_a_lease_is_exclusive_until_it_lapses_and_terms_rise(store: Store) -> None:
    first = await store.take_lease("reconciler", "a", ttl=30)
    assert first is not None
    assert await store.take_lease("reconciler", "b", ttl=30) is None
    assert await store.take_lease("reconciler", "a", ttl=30) == first  # same holder: same term
    assert await store.renew_lease("reconciler", "a", first, ttl=30)
    assert not await store.renew_lease("reconciler", "b", first, ttl=30)
    assert await store.take_lease("other", "b", ttl=30) is not None  # leases are by name

    lapsing = await store.take_lease("short", "a", ttl=-1)  # already lapsed
    assert lapsing is not None
    taken = await store.take_lease("short", "b", ttl=30)
    assert taken is not None and taken > lapsing
    # The stale holder can never renew, not even by taking its old term's name again.
    assert not await store.renew_lease("short", "a", lapsing, ttl=30)
    assert await store.take_lease("short", "a", ttl=30) is None


async def test_a_lapsed_lease_cannot_be_renewed_even_by_its_holder(store: Store) -> None:
    term = await store.take_lease("l", "a", ttl=-1)
    assert term is not None
    assert not await store.renew_lease("l", "a", term, ttl=30)
    again = await store.take_lease("l", "a", ttl=30)
    assert again is not None and again > term


async def test_releasing_a_lease_lets_another_take_it_with_a_new_term(
    open_stores: OpenStore,
) -> None:
    a, b = await open_stores(), await open_stores()
    term = await a.take_lease("reconciler", "a", ttl=300)
    assert term is not None and await b.take_lease("reconciler", "b", ttl=300) is None
    await a.release_lease("reconciler", "b")  # not b's to release: nothing happens
    assert await b.take_lease("reconciler", "b", ttl=300) is None
    await a.release_lease("reconciler", "a")
    taken = await b.take_lease("reconciler", "b", ttl=300)
    assert taken is not None and taken > term
    assert not await a.renew_lease("reconciler", "a", term, ttl=300)


# -- the archive queue: exclusive claims that lapse ------------------------------------


async def succeeded_with_files(store: Store, *urls: str) -> str:
    task_id = new_id()
    obs = Observation(
        "seedance",
        task_id,
        Status.SUCCEEDED,
        "succeeded",
        results=tuple(Result(u, "video") for u in urls),
    )
    await store.ingest(Incoming("seedance", task_id, "callback", task_id.encode(), obs))
    return task_id


async def test_a_success_queues_one_copy_per_distinct_result_url(store: Store) -> None:
    await succeeded_with_files(store, "https://a/1.mp4", "https://a/2.jpg", "https://a/1.mp4")
    assert await store.archive_counts() == {"pending": 2}
    assert await store.enqueue_missing_archives() == 0


async def test_archive_off_queues_nothing_until_enqueue_missing(open_stores: OpenStore) -> None:
    off = await open_stores(archive=False)
    await succeeded_with_files(off, "https://a/1.mp4")
    assert await off.archive_counts() == {}
    assert await off.enqueue_missing_archives() == 1
    assert await off.archive_counts() == {"pending": 1}


async def test_claims_are_exclusive_across_processes(open_stores: OpenStore) -> None:
    a, b = await open_stores(), await open_stores()
    for i in range(10):
        await succeeded_with_files(a, f"https://a/{i}.mp4")
    claimed = await asyncio.gather(
        *(s.claim_archives(f"h{i}", limit=3, lease=60) for i, s in enumerate([a, b] * 3))
    )
    urls = [job.url for jobs in claimed for job in jobs]
    assert len(urls) == len(set(urls)) == 10


async def test_a_lapsed_claim_is_taken_over_and_a_renewed_one_is_not(store: Store) -> None:
    await succeeded_with_files(store, "https://a/1.mp4")
    await succeeded_with_files(store, "https://a/2.mp4")
    alive = await store.claim_archives("alive", limit=1, lease=0.5)
    jobs = await store.claim_archives("dead", limit=1, lease=-1)  # its holder stopped renewing
    assert {j.url for j in alive + jobs} == {"https://a/1.mp4", "https://a/2.mp4"}
    assert await store.renew_archive_claims("alive", lease=60) == 1
    await asyncio.sleep(0.6)  # past the first lease of "alive": only the renewal holds it
    taken = await store.claim_archives("next", limit=5, lease=60)
    assert [j.url for j in taken] == [j.url for j in jobs]
    # The old holder's outcome no longer counts: the row is the new holder's.
    await store.finish_archive(jobs[0], "dead", "ab" * 32, 1, "video/mp4")
    assert (await store.archive_counts())["running"] == 2


async def test_released_claims_are_due_again_at_once(store: Store) -> None:
    await succeeded_with_files(store, "https://a/1.mp4")
    assert len(await store.claim_archives("me", limit=5, lease=600)) == 1
    assert await store.claim_archives("other", limit=5, lease=600) == []
    assert await store.release_archives("me") == 1
    assert len(await store.claim_archives("other", limit=5, lease=600)) == 1


async def test_archive_outcomes_show_on_the_task(store: Store) -> None:
    task_id = await succeeded_with_files(store, "https://a/1.mp4")
    (job,) = await store.claim_archives("me", limit=5, lease=60)
    record = await store.get_task(task_id)
    assert record is not None and "archived" not in task_json(record)["results"][0]
    await store.fail_archive(job, "me", "timeout", "slow", retry_at=0.0)
    record = await store.get_task(task_id)
    assert record is not None
    assert task_json(record)["results"][0]["archive_error"] == {
        "code": "timeout",
        "message": "slow",
        "attempts": 1,
        "final": False,
    }
    (job,) = await store.claim_archives("me", limit=5, lease=60)
    await store.finish_archive(job, "me", "ab" * 32, 12, "video/mp4")
    listed, _ = await store.list_tasks()
    result = task_json(listed[0])["results"][0]
    assert "archive_error" not in result
    assert result["archived"] == {
        "url": "/files/" + "ab" * 32,
        "sha256": "ab" * 32,
        "bytes": 12,
        "content_type": "video/mp4",
    }
    assert await store.archived_file("ab" * 32) == ("video/mp4", 12)
    assert await store.archived_file("cd" * 32) is None
    assert await store.archive_counts() == {"done": 1}


async def test_a_final_failure_is_not_claimed_again_unless_asked(store: Store) -> None:
    await succeeded_with_files(store, "https://a/1.mp4")
    (job,) = await store.claim_archives("me", limit=5, lease=60)
    await store.fail_archive(job, "me", "too_large", "big", retry_at=None)
    assert await store.claim_archives("me", limit=5, lease=60) == []
    due_by = await store.reschedule_archives(include_failed=True)
    again = await store.claim_archives("me", limit=5, lease=60, due_by=due_by)
    assert [j.url for j in again] == [job.url]


# -- the outbox ------------------------------------------------------------------------


async def test_each_change_commits_its_events_with_the_task_as_rendered(store: Store) -> None:
    task_id = new_id()
    await store.register([Registration("seedance", task_id)])
    assert await all_events(store) == []  # registering is not a change of status
    running = await store.ingest(observed(task_id, Status.RUNNING))
    await store.ingest(observed(task_id, Status.RUNNING, note="same status"))
    done = await store.ingest(observed(task_id, Status.SUCCEEDED))
    events = await all_events(store)
    assert [e.type for e in events] == [STATUS_CHANGED, STATUS_CHANGED, SUCCEEDED]
    assert [e.id for e in events] == [*running.events, *done.events]
    assert all(re.fullmatch(r"evt_[0-9a-z]{26}", e.id) for e in events)
    assert len({e.id for e in events}) == 3
    last = json.loads(events[-1].body)
    assert set(last) == {"type", "timestamp", "data"} and last["type"] == SUCCEEDED
    record = await store.get_task(task_id)
    assert record is not None and last["data"] == task_json(record)
    first = json.loads(events[0].body)["data"]
    assert first["status"] == "running" and first["deliveries"] == 1  # as it was then
    # The two events of the last change carry the same task at the same time.
    changed = json.loads(events[1].body)
    assert changed["type"] == STATUS_CHANGED and changed["data"] == last["data"]
    assert changed["timestamp"] == last["timestamp"]
    [alone] = await all_events(store, {SUCCEEDED})  # read without the event before it
    assert json.loads(alone.body) == last
    assert {e.task_key for e in events} == {task_id.replace("-", "")}
    assert {e.provider for e in events} == {"seedance"}


async def test_no_event_for_a_repeat_a_mismatch_or_a_non_change(store: Store) -> None:
    task_id = new_id()
    item = observed(task_id, Status.FAILED)
    await store.ingest(item)
    await store.ingest(item)
    await store.ingest(observed(task_id, Status.RUNNING, note="late"))
    with pytest.raises(ProviderMismatch):
        await store.ingest(observed(task_id, Status.SUCCEEDED, provider="dreamina"))
    assert [e.type for e in await all_events(store)] == [STATUS_CHANGED, FAILED]


async def test_archived_once_every_copy_is_settled(store: Store) -> None:
    task_id = await succeeded_with_files(store, "https://a/1.mp4", "https://a/2.mp4")
    jobs = await store.claim_archives("me", limit=5, lease=60)
    await store.finish_archive(jobs[0], "me", "ab" * 32, 3, "video/mp4")
    await store.fail_archive(jobs[1], "me", "timeout", "slow", retry_at=time.time() + 60)
    assert ARCHIVED not in [e.type for e in await all_events(store)]
    due_by = await store.reschedule_archives()
    (retry,) = await store.claim_archives("me", limit=5, lease=60, due_by=due_by + 120)
    await store.fail_archive(retry, "me", "http_404", "gone", retry_at=None)
    [archived] = await all_events(store, {ARCHIVED})
    data = json.loads(archived.body)["data"]
    assert data["task_id"] == task_id
    assert data["results"][0]["archived"]["sha256"] == "ab" * 32
    assert data["results"][1]["archive_error"]["final"] is True


async def test_the_feed_reads_in_commit_order_from_any_cursor(open_stores: OpenStore) -> None:
    a, b = await open_stores(), await open_stores()
    ids = [new_id() for _ in range(12)]
    await asyncio.gather(
        *(s.ingest(observed(t, Status.SUCCEEDED)) for s, t in zip([a, b] * 6, ids, strict=True))
    )
    everything, end = await a.events_after(None, limit=1000)
    assert len(everything) == 24
    # Both events of one change are adjacent, and every task's come in its order.
    for first, second in zip(everything[::2], everything[1::2], strict=True):
        assert (first.type, second.type) == (STATUS_CHANGED, SUCCEEDED)
        assert first.task_key == second.task_key
    # Reading again from any cursor gives exactly the rest: no gap, no duplicate.
    cursor = None
    for i in range(len(everything)):
        page, cursor = await b.events_after(cursor, limit=1)
        assert page == [everything[i]]
    assert cursor == end
    page, still = await b.events_after(end)
    assert page == [] and still == end  # no event: the same cursor back
    start_page, start = await b.events_after(None, {"task.nothing"})
    assert start_page == [] and isinstance(start, str)
    assert (await b.events_after(start, limit=1))[0] == everything[:1]


async def test_the_feed_filters_by_type_and_prunes_by_age(store: Store) -> None:
    for status in (Status.SUCCEEDED, Status.FAILED, Status.SUCCEEDED):
        await store.ingest(observed(new_id(), status))
    failed, _ = await store.events_after(None, {FAILED})
    assert [e.type for e in failed] == [FAILED]
    assert len(await all_events(store, {SUCCEEDED, FAILED})) == 3
    assert await store.prune_events(time.time() - 3600) == 0
    remaining, cursor = await store.events_after(None)
    assert await store.prune_events(time.time() + 1) == 6
    assert await store.events_after(cursor) == ([], cursor)
    await store.ingest(observed(new_id(), Status.FAILED))
    after, _ = await store.events_after(cursor)  # a cursor survives pruning: nothing skipped
    assert [e.type for e in after] == [STATUS_CHANGED, FAILED]
    assert len(remaining) == 6


# -- work signals ----------------------------------------------------------------------


async def test_a_commit_wakes_whoever_waits_for_its_kind(store: Store) -> None:
    waiting = asyncio.ensure_future(store.wait_for_work("events", 30))
    archive = asyncio.ensure_future(store.wait_for_work("archive", 30))
    await asyncio.sleep(0)
    assert not waiting.done()
    await store.ingest(observed(new_id(), Status.RUNNING))  # an event, no archive work
    assert await waiting is True
    assert not archive.done()
    await succeeded_with_files(store, "https://a/1.mp4")
    assert await archive is True


async def test_a_signal_between_a_read_and_the_wait_is_not_lost(store: Store) -> None:
    mark = store.work_mark("events")
    await store.ingest(observed(new_id(), Status.RUNNING))  # commits "after the read"
    assert await store.wait_for_work("events", 30, after=mark) is True


async def test_a_wait_with_no_work_times_out(store: Store) -> None:
    assert await store.wait_for_work("events", 0.05) is False


async def test_a_commit_in_another_process_wakes_a_waiter(open_stores: OpenStore) -> None:
    a, b = await open_stores(), await open_stores()
    waiting = asyncio.ensure_future(a.wait_for_work("events", 30))
    await asyncio.sleep(0)
    await b.ingest(observed(new_id(), Status.RUNNING))
    assert await waiting is True  # within about a second, not after 30


async def test_notify_wakes_this_process(store: Store) -> None:
    waiting = asyncio.ensure_future(store.wait_for_work("archive", 30))
    await asyncio.sleep(0)
    store.notify_work("archive")
    assert await waiting is True


# -- closing ---------------------------------------------------------------------------


async def test_close_finishes_queued_writes_then_refuses(open_stores: OpenStore) -> None:
    store = await open_stores()
    ids = [new_id() for _ in range(30)]
    pending = [asyncio.ensure_future(store.ingest(observed(t, Status.RUNNING))) for t in ids]
    await asyncio.sleep(0)
    await store.close()
    await store.close()  # idempotent
    assert all(p.done() and not p.exception() for p in pending)
    with pytest.raises(StoreClosed):
        await store.ingest(observed(new_id(), Status.RUNNING))
    with pytest.raises(StoreClosed):
        await store.count_by_status()
    reopened = await open_stores()
    assert await reopened.count_by_status() == {"running": 30}


async def test_a_bulk_write_that_fails_leaves_nothing_behind(store: Store) -> None:
    good, other = new_id(), new_id()
    broken = observed(new_id(), Status.RUNNING)
    wrong = Incoming(  # an observation of another task: the merge refuses it (a caller's bug)
        "seedance",
        broken.task_id,
        "callback",
        b"wrong",
        observed(other, Status.RUNNING).observation,
    )
    await store.register([Registration("seedance", broken.task_id)])
    with pytest.raises(ValueError):
        await store.ingest_many([observed(good, Status.SUCCEEDED), wrong])
    assert await store.get_task(good) is None
    assert await store.deliveries(broken.task_id) == []
    assert await all_events(store) == []
    assert await store.archive_counts() == {}
    # A failing call does not spoil the calls committed beside it.
    results = await asyncio.gather(
        store.ingest(observed(good, Status.SUCCEEDED)),
        store.ingest_many([wrong]),
        return_exceptions=True,
    )
    assert not isinstance(results[0], BaseException) and isinstance(results[1], ValueError)
    assert (await store.get_task(good)) is not None
