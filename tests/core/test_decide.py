"""``decide``: what one item does to a task, as properties over generated tasks and items."""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from server.core import schedule
from server.core.decide import (
    EXPIRED,
    FAILED,
    STATUS_CHANGED,
    SUCCEEDED,
    Decision,
    Incoming,
    decide,
)
from server.core.merge import merge
from server.core.types import ErrorInfo, Observation, Result, Status, TaskRecord, TaskState

TASK = "9462ca25-468b-45a5-9e75-6f516dedcc80"
NOW = 1_800_000_000.0
GRACE = 60.0

RESULTS = st.lists(
    st.builds(
        Result,
        st.sampled_from(["https://a/1", "https://a/1?sig=2", "https://a/2"]),
        st.sampled_from(["image", "video"]),
    ),
    max_size=2,
).map(tuple)
OBSERVATIONS = st.builds(
    Observation,
    provider=st.just("seedance"),
    task_id=st.sampled_from([TASK, TASK.upper(), TASK.replace("-", "")]),
    status=st.none() | st.sampled_from(Status),
    upstream_status=st.none() | st.sampled_from(["a", "b"]),
    results=RESULTS,
    error=st.none() | st.builds(ErrorInfo, st.none() | st.just("c"), st.just("m")),
)
STATES = st.lists(OBSERVATIONS, max_size=4).map(
    lambda observations: _fold(TaskState(TASK, "seedance"), observations)
)


def _fold(state: TaskState, observations: list[Observation]) -> TaskState:
    for obs in observations:
        state = merge(state, obs)
    return state


@st.composite
def records(draw: st.DrawFn) -> TaskRecord | None:
    if draw(st.booleans()):
        return None
    state = draw(STATES)
    created = NOW - draw(st.floats(0, 86400))
    return TaskRecord(
        state=state,
        metadata=draw(st.dictionaries(st.sampled_from(["k", "j"]), st.integers(), max_size=2)),
        created_at=created,
        updated_at=created,
        completed_at=created if state.is_final else None,
        deliveries=draw(st.integers(0, 5)),
        checks=draw(st.integers(0, 5)),
        next_check_at=None if state.is_final else created + draw(st.floats(0, 600)),
        last_source=draw(st.sampled_from([None, "callback", "reconcile"])),
    )


@st.composite
def items(draw: st.DrawFn, provider: str = "seedance") -> Incoming:
    check = draw(st.booleans())
    source = "reconcile" if check else draw(st.sampled_from(["callback", "replay"]))
    body = draw(st.none() | st.just(b'{"x": 1}'))
    obs = draw(st.none() | OBSERVATIONS) if body is not None or check else draw(OBSERVATIONS)
    return Incoming(provider, TASK, source, body, obs, check=check)


def decided(current: TaskRecord | None, item: Incoming, repeat: bool, archive: bool) -> Decision:
    return decide(
        current, item, NOW, repeat=repeat, grace=GRACE, archive=archive, rng=random.Random(1)
    )


@settings(max_examples=150)
@given(records(), items(), st.booleans(), st.booleans())
def test_status_never_moves_back_and_events_follow_the_status(
    current: TaskRecord | None, item: Incoming, repeat: bool, archive: bool
) -> None:
    d = decided(current, item, repeat, archive)
    before = current.state.status if current else Status.PENDING
    after = d.record.state.status
    assert d.previous is before
    assert after.rank >= before.rank
    assert (STATUS_CHANGED in d.events) is (after is not before)
    final_events = {SUCCEEDED: Status.SUCCEEDED, FAILED: Status.FAILED, EXPIRED: Status.EXPIRED}
    finals = [e for e in d.events if e in final_events]
    assert finals == ([f"task.{after.value}"] if d.became_final else [])
    assert d.became_final is (after.is_final and after is not before)
    if d.events:
        assert d.changed and d.events[0] == STATUS_CHANGED
    if not d.changed:
        assert d.events == () and d.record.state == (current.state if current else d.record.state)


@settings(max_examples=150)
@given(records(), items(), st.booleans(), st.booleans())
def test_bookkeeping_follows_the_item(
    current: TaskRecord | None, item: Incoming, repeat: bool, archive: bool
) -> None:
    d = decided(current, item, repeat, archive)
    r = d.record
    if d.duplicate:
        assert current is not None and not d.write and r is current
        assert item.body is not None and repeat and not item.check
        return
    assert d.write and d.created is (current is None)
    assert d.keep_body is (item.body is not None and not repeat)
    assert r.deliveries == (current.deliveries if current else 0) + int(d.keep_body)
    assert r.checks == (current.checks if current else 0) + int(item.check)
    if r.state.is_final:
        assert r.next_check_at is None
    elif item.check:
        base = min(schedule.MAX_BACKOFF, schedule.FIRST_BACKOFF * 2 ** max(0, r.checks - 1))
        assert r.next_check_at is not None and NOW + base / 2 <= r.next_check_at <= NOW + base
    elif d.changed or current is None:
        assert r.next_check_at == NOW + GRACE
    else:
        assert current is not None and r.next_check_at == current.next_check_at
    if current is None:
        assert r.created_at == r.updated_at == NOW and r.metadata == {}
    else:
        assert r.created_at == current.created_at and r.metadata == current.metadata
        assert r.updated_at == (NOW if d.changed else current.updated_at)
    if d.became_final:
        assert r.completed_at == NOW
    else:
        assert r.completed_at == (current.completed_at if current else None)
    assert d.final_source == (item.source if d.became_final else None)
    if d.keep_body or item.check:
        assert r.last_source == item.source
    if repeat and item.body is not None:
        # A repeated body tells nothing new: the state is the one held.
        assert not d.changed


@settings(max_examples=150)
@given(records(), items(), st.booleans(), st.booleans())
def test_archive_urls_only_for_a_success_that_changed(
    current: TaskRecord | None, item: Incoming, repeat: bool, archive: bool
) -> None:
    d = decided(current, item, repeat, archive)
    if archive and d.changed and d.record.state.status is Status.SUCCEEDED:
        urls = [res.url for res in d.record.state.results]
        assert list(d.archive_urls) == list(dict.fromkeys(urls))
    else:
        assert d.archive_urls == ()


@settings(max_examples=100)
@given(records(), items(provider="seedream"), st.booleans(), st.booleans())
def test_a_task_held_under_another_provider_is_not_touched(
    current: TaskRecord | None, item: Incoming, repeat: bool, archive: bool
) -> None:
    d = decided(current, item, repeat, archive)
    if current is None:
        assert d.mismatch is None and d.record.state.provider == "seedream"
        return
    assert d.mismatch == "seedance"
    assert not d.write and not d.keep_body and d.record is current
    assert d.events == () and d.archive_urls == ()


@settings(max_examples=100)
@given(records(), items(), st.booleans(), st.booleans())
def test_the_same_inputs_give_the_same_decision(
    current: TaskRecord | None, item: Incoming, repeat: bool, archive: bool
) -> None:
    assert decided(current, item, repeat, archive) == decided(current, item, repeat, archive)


@given(records(), OBSERVATIONS)
def test_a_conflict_is_reported_when_a_new_one_is_recorded(
    current: TaskRecord | None, obs: Observation
) -> None:
    item = Incoming("seedance", TASK, "callback", b"{}", obs)
    d = decided(current, item, False, False)
    held = current.state.conflicts if current else ()
    assert d.conflict is (len(d.record.state.conflicts) > len(held))


def test_a_callback_that_creates_a_succeeded_task_causes_both_events() -> None:
    obs = Observation(
        "seedance", TASK, Status.SUCCEEDED, "succeeded", results=(Result("https://a/1", "video"),)
    )
    d = decided(None, Incoming("seedance", TASK, "callback", b"{}", obs), False, True)
    assert d.created and d.events == (STATUS_CHANGED, SUCCEEDED)
    assert d.archive_urls == ("https://a/1",) and d.record.completed_at == NOW


def test_expired_then_a_real_success_is_a_change_of_status() -> None:
    held = TaskRecord(
        state=TaskState(TASK, "seedance", Status.EXPIRED),
        metadata={},
        created_at=NOW - 90000,
        updated_at=NOW - 10,
        completed_at=NOW - 10,
    )
    obs = Observation("seedance", TASK, Status.SUCCEEDED, results=(Result("https://a/1", "video"),))
    d = decided(held, Incoming("seedance", TASK, "reconcile", b"{}", obs, check=True), False, False)
    assert d.became_final and d.events == (STATUS_CHANGED, SUCCEEDED)
    assert d.record.completed_at == NOW and d.record.checks == 1


def test_a_repeated_callback_changes_nothing_but_a_repeated_answer_is_a_check() -> None:
    held = TaskRecord(
        state=replace(TaskState(TASK, "seedance"), status=Status.RUNNING),
        metadata={},
        created_at=NOW - 100,
        updated_at=NOW - 100,
        next_check_at=NOW + 5,
        deliveries=1,
    )
    obs = Observation("seedance", TASK, Status.RUNNING)
    repeat = decided(held, Incoming("seedance", TASK, "callback", b"{}", obs), True, False)
    assert repeat.duplicate and not repeat.write and repeat.record is held
    answer = Incoming("seedance", TASK, "reconcile", b"{}", obs, check=True)
    checked = decided(held, answer, True, False)
    assert not checked.duplicate and checked.write and not checked.keep_body
    assert checked.record.checks == 1 and checked.record.deliveries == 1
    assert checked.record.next_check_at is not None and checked.record.next_check_at > NOW
