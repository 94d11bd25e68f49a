"""The webhook side of the store, on every backend: fan-out, order per task, claims, settling."""

from __future__ import annotations

import asyncio
import time

import pytest

from server.core.delivery_schedule import LOST_ATTEMPT, Answer, after_attempt
from server.errors import BadCursor
from server.settings import Settings
from server.store import open_store
from server.store.webhooks import Attempt, Claim

from .outbox import add_events

S = "task.status_changed"
OK = "task.succeeded"
SCHEDULE = "0,10,10"


def make_settings(database_url, **overrides) -> Settings:
    values = dict(
        database_url=database_url,
        reconciler="off",
        archive=False,
        delivery_retry_schedule=SCHEDULE,
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def store(database_url):
    async with open_store(make_settings(database_url)) as s:
        yield s


async def claim(store, holder="h1", limit=50, per_endpoint=50, lease=60.0) -> list[Claim]:
    return (await store.claim_messages(holder, limit, per_endpoint, lease)).items


async def settle(store, item: Claim, status: int | None, holder="h1", schedule=(0.0, 10.0, 10.0)):
    answer = Answer(status, None if status else "connection failed")
    nxt = after_attempt(
        answer,
        schedule=schedule,
        scheduled=item.scheduled,
        manual=item.manual,
        resume_at=item.resume_at,
        now=time.time(),
    )
    record = Attempt(
        item.event_id, item.attempt, time.time(), nxt.outcome, status, 5, "ok", answer.error
    )
    return await store.finish_message(item, holder, record, nxt)


async def endpoint(store, events=None, url="http://127.0.0.1:9/hook"):
    return await store.create_endpoint(url, events, None, "whsec_" + "QUFB" * 8)


async def test_an_endpoint_gets_only_the_events_committed_after_it_was_created(store):
    await add_events(store, (S, "a"))
    ep = await endpoint(store)
    later = await add_events(store, (S, "b"), (OK, "b"))
    claimed = await claim(store)
    assert [c.event_id for c in claimed] == [later[0]]  # b's second waits for its first
    assert claimed[0].endpoint_id == ep.id and claimed[0].attempt == 1
    assert claimed[0].body.startswith('{"type": "task.status_changed"')


async def test_an_endpoint_gets_only_its_subscribed_types(store):
    await endpoint(store, events=[OK])
    ids = await add_events(store, (S, "a"), (OK, "a"), (S, "b"))
    assert [c.event_id for c in await claim(store)] == [ids[1]]


async def test_events_of_one_task_go_one_at_a_time_in_commit_order(store):
    await endpoint(store)
    a1, b1, a2, a3 = await add_events(store, (S, "a"), (S, "b"), (S, "a"), (OK, "a"))
    first = await claim(store)
    assert [c.event_id for c in first] == [a1, b1]
    assert await claim(store) == []  # a2 waits for a1 even though it is due
    await settle(store, first[0], 200)
    second = await claim(store)
    assert [c.event_id for c in second] == [a2]
    outcome = await settle(store, second[0], 500)  # retrying: a3 still waits
    assert outcome.outcome == "retrying"
    assert await claim(store) == []


async def test_a_later_event_goes_once_the_earlier_failed_for_good(store):
    await endpoint(store)
    a1, a2 = await add_events(store, (S, "a"), (OK, "a"))
    item = (await claim(store))[0]
    settled = await settle(store, item, 500, schedule=(0.0,))
    assert settled.outcome == "failed"
    assert [c.event_id for c in await claim(store)] == [a2]


async def test_a_claimed_message_is_not_claimed_by_another_holder(store):
    await endpoint(store)
    await add_events(store, (S, "a"), (S, "b"))
    mine = await claim(store, "h1", limit=1)
    theirs = await claim(store, "h2")
    assert len(mine) == len(theirs) == 1
    assert mine[0].message_id != theirs[0].message_id
    assert await claim(store, "h3") == []


async def test_two_stores_on_one_database_claim_disjoint_messages(database_url):
    settings = make_settings(database_url)
    async with open_store(settings) as one, open_store(settings) as two:
        await endpoint(one)
        await add_events(one, *[(S, f"t{i}") for i in range(40)])
        got = await asyncio.gather(
            *(claim(s, f"h{i}", limit=5) for i in range(8) for s in (one, two))
        )
    ids = [c.message_id for batch in got for c in batch]
    assert len(ids) == 40 and len(set(ids)) == 40


async def test_a_lapsed_claim_is_taken_over_and_its_lost_attempt_recorded(store):
    ep = await endpoint(store)
    await add_events(store, (S, "a"))
    dead = (await claim(store, "dead", lease=0.0))[0]  # lapses at once
    taken = (await claim(store, "alive"))[0]
    assert taken.message_id == dead.message_id and taken.attempt == 2
    late = await settle(store, dead, 200, holder="dead")
    assert not late.owned
    assert await claim(store, "third") == []  # still alive's
    attempts, _ = await store.list_attempts(ep.id)
    assert [(a.attempt, a.outcome, a.error) for a in attempts][-1] == (1, "retrying", LOST_ATTEMPT)
    assert (await settle(store, taken, 200, holder="alive")).owned


async def test_no_endpoint_gets_more_live_claims_than_its_bound(store):
    await endpoint(store)
    await add_events(store, *[(S, f"t{i}") for i in range(5)])
    first = await claim(store, per_endpoint=2)
    assert len(first) == 2
    assert await claim(store, "h2", per_endpoint=2) == []
    await settle(store, first[0], 200)
    assert len(await claim(store, "h2", per_endpoint=2)) == 1


async def test_endpoints_take_turns_so_one_backlog_does_not_starve_another(store):
    one, two = await endpoint(store), await endpoint(store)
    await add_events(store, *[(S, f"t{i}") for i in range(10)])
    got = await claim(store, limit=4)
    assert sorted(c.endpoint_id for c in got) == sorted([one.id, one.id, two.id, two.id])


async def test_410_disables_the_endpoint_and_fails_what_waits_for_it(store):
    ep = await endpoint(store)
    await add_events(store, (S, "a"), (S, "b"), (OK, "a"))
    first = await claim(store, limit=1)
    settled = await settle(store, first[0], 410)
    assert settled.disabled and "410" in settled.disabled and settled.outcome == "failed"
    after = await store.get_endpoint(ep.id)
    assert after.disabled and "410" in after.disabled_reason
    await add_events(store, (S, "c"))
    assert await claim(store) == []
    backlog = {b.endpoint_id: b for b in await store.webhook_backlog()}
    assert backlog[ep.id].pending == 0
    # Re-enabled: only what commits from now on.
    await store.enable_endpoint(ep.id)
    fresh = await add_events(store, (S, "d"))
    assert [c.event_id for c in await claim(store)] == fresh


async def test_an_endpoint_failing_longer_than_disable_after_is_disabled(database_url):
    async with open_store(make_settings(database_url, delivery_disable_after=0.001)) as store:
        ep = await endpoint(store)
        await add_events(store, (S, "a"), (S, "b"))
        a, b = await claim(store)
        first = await settle(store, a, 500)
        assert first.disabled is None and first.outcome == "retrying"
        assert (await store.get_endpoint(ep.id)).failing_since is not None
        await asyncio.sleep(0.01)  # let DELIVERY_DISABLE_AFTER (1 ms) pass since that failure
        second = await settle(store, b, 500)
        assert second.disabled and "DELIVERY_DISABLE_AFTER" in second.disabled
        assert second.outcome == "failed"
        assert (await store.get_endpoint(ep.id)).disabled


async def test_a_delivery_ends_the_failing_run(store):
    ep = await endpoint(store)
    await add_events(store, (S, "a"), (S, "b"))
    a, b = await claim(store)
    await settle(store, a, 500)
    await settle(store, b, 200)
    assert (await store.get_endpoint(ep.id)).failing_since is None


async def test_redelivery_is_one_more_attempt_outside_the_schedule(store):
    ep = await endpoint(store)
    (eid,) = await add_events(store, (S, "a"))
    item = (await claim(store))[0]
    await settle(store, item, 200)
    queued = await store.redeliver_event(eid, None)
    assert queued.endpoints == [ep.id] and queued.event_type == S
    again = (await claim(store))[0]
    assert (again.event_id, again.attempt, again.manual, again.scheduled) == (eid, 2, True, 1)
    assert (await settle(store, again, 500)).outcome == "failed"
    assert await claim(store) == []
    assert await store.redeliver_event("evt_unknown", None) is None


async def test_redelivery_to_a_named_endpoint_that_never_had_it(store):
    (eid,) = await add_events(store, (S, "a"))
    ep = await endpoint(store)
    only_final = await endpoint(store, events=[OK])
    assert (await store.redeliver_event(eid, only_final.id)).endpoints == []
    assert (await store.redeliver_event(eid, ep.id)).endpoints == [ep.id]
    assert [(c.endpoint_id, c.event_id) for c in await claim(store)] == [(ep.id, eid)]


async def test_a_failed_redelivery_of_a_waiting_message_returns_to_its_schedule(store):
    await endpoint(store)
    (eid,) = await add_events(store, (S, "a"))
    item = (await claim(store))[0]
    await settle(store, item, 500)  # next scheduled attempt in 10 s
    await store.redeliver_event(eid, None)
    manual = (await claim(store))[0]
    assert manual.manual and manual.resume_at is not None
    settled = await settle(store, manual, 500)
    assert settled.outcome == "retrying"
    assert await claim(store) == []  # back on its schedule, not due yet
    assert (await store.claim_messages("h", 5, 5, 60)).next_due == pytest.approx(manual.resume_at)


async def test_recover_requeues_what_failed_since_a_time(store):
    ep = await endpoint(store)
    ids = await add_events(store, (S, "a"), (S, "b"))
    for item in await claim(store):
        await settle(store, item, 500, schedule=(0.0,))
    assert await store.recover_endpoint(ep.id, 1e12) == 0
    assert await store.recover_endpoint(ep.id, 0) == 2
    assert sorted(c.event_id for c in await claim(store)) == sorted(ids)


async def test_released_claims_are_claimable_again_with_the_same_attempt_number(store):
    await endpoint(store)
    await add_events(store, (S, "a"))
    first = (await claim(store, "h1"))[0]
    assert await store.release_messages("h1") == 1
    again = (await claim(store, "h2"))[0]
    assert (again.message_id, again.attempt) == (first.message_id, 1)


async def test_rotation_signs_with_both_secrets_until_the_overlap_ends(store):
    ep = await endpoint(store)
    rotated = await store.rotate_endpoint_secret(ep.id, "whsec_" + "QkJC" * 8, 3600)
    await add_events(store, (S, "a"))
    assert (await claim(store))[0].secrets == (rotated.secret, ep.secret)
    await store.rotate_endpoint_secret(ep.id, "whsec_" + "Q0ND" * 8, 0)
    await add_events(store, (S, "b"))
    assert (await claim(store))[0].secrets == ("whsec_" + "Q0ND" * 8,)
    assert "whsec" not in repr(rotated)


async def test_attempts_read_newest_first_by_outcome_with_a_cursor(store):
    ep = await endpoint(store)
    await add_events(store, *[(S, f"t{i}") for i in range(5)])
    for i, item in enumerate(await claim(store)):
        await settle(store, item, 200 if i % 2 else 500)
    page, cursor = await store.list_attempts(ep.id, limit=3)
    rest, end = await store.list_attempts(ep.id, limit=3, cursor=cursor)
    assert len(page) == 3 and len(rest) == 2 and end is None
    numbers = [a.event_id for a in page + rest]
    assert len(set(numbers)) == 5
    failed, _ = await store.list_attempts(ep.id, outcome="retrying")
    assert len(failed) == 3 and all(a.response_status == 500 for a in failed)
    with pytest.raises(BadCursor):
        await store.list_attempts(ep.id, cursor="abc")


async def test_removing_an_endpoint_removes_its_messages_and_attempts(store):
    ep = await endpoint(store)
    await add_events(store, (S, "a"))
    item = (await claim(store))[0]
    assert await store.delete_endpoint(ep.id)
    assert not await store.delete_endpoint(ep.id)
    late = await settle(store, item, 200)
    assert not late.owned
    assert await store.list_attempts(ep.id) == ([], None)
    assert await store.webhook_backlog() == []


async def test_the_backlog_names_each_endpoints_oldest_undelivered_event(store):
    ep = await endpoint(store)
    await add_events(store, (S, "a"), (S, "a"), (S, "b"))
    await claim(store)  # fan out
    (row,) = await store.webhook_backlog()
    assert (row.endpoint_id, row.pending) == (ep.id, 3) and row.oldest_pending > 0


async def test_pruning_drops_old_attempts_and_finished_messages_but_no_pending_one(store):
    ep = await endpoint(store)
    await add_events(store, (S, "a"), (S, "b"), (S, "c"))
    a, b, c = await claim(store)
    await settle(store, a, 200)  # delivered
    await settle(store, b, 500, schedule=(0.0,))  # failed for good
    await settle(store, c, 500)  # still pending: retried later
    assert await store.prune_webhooks(time.time() - 3600) == 0
    assert await store.prune_webhooks(time.time() + 1) == 3 + 2  # 3 attempts, 2 messages
    assert await store.list_attempts(ep.id) == ([], None)
    (backlog,) = await store.webhook_backlog()
    assert backlog.pending == 1
    assert await store.recover_endpoint(ep.id, 0) == 0  # the failed one is gone
