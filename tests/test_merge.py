"""Merging observations: the rules on real payloads, then properties over generated histories."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.core.merge import WrongTask, changed, expired, merge, url_key
from server.core.types import Conflict, ErrorInfo, Observation, Result, Status, TaskState
from server.providers.parse import parse_payload

from .fixtures import load

SEEDANCE_ID = "9462ca25-468b-45a5-9e75-6f516dedcc80"
SEEDANCE2_ID = "asyntask_h81efT0qwtLnzyt6VENmCZ6VXSfNxE2E"
DREAMINA_ID = "362b4fed-67bd-11f1-ad11-00163e57d510"


def observe(provider: str, fixture: str) -> Observation:
    return parse_payload(provider, load(fixture))


def fold(state: TaskState, *observations: Observation) -> TaskState:
    for obs in observations:
        state = merge(state, obs)
    return state


def seedance() -> TaskState:
    return TaskState(SEEDANCE_ID, "seedance")


# -- the rules, on the seed payloads -------------------------------------------------


def test_seedance_moves_up_through_queued_running_succeeded() -> None:
    state = seedance()
    seen = []
    for fixture in ("seedance_queued", "seedance_running", "seedance_retrieve"):
        state = merge(state, observe("seedance", fixture))
        seen.append((state.status, state.upstream_status))
    assert seen == [
        (Status.QUEUED, "queued"),
        (Status.RUNNING, "running"),
        (Status.SUCCEEDED, "succeeded"),
    ]
    assert state.trace_id == "24b1b09c-5649-4290-98db-eab23e5efcac"
    assert [r.url for r in state.results] == [
        observe("seedance", "seedance_retrieve").results[0].url
    ]


def test_a_late_intermediate_delivery_never_moves_a_state_back() -> None:
    done = merge(seedance(), observe("seedance", "seedance_retrieve"))
    assert merge(done, observe("seedance", "seedance_running")) is done
    running = merge(seedance(), observe("seedance", "seedance_running"))
    assert merge(running, observe("seedance", "seedance_queued")) is running


@pytest.mark.parametrize(
    ("provider", "fixture"),
    [
        ("seedance", "seedance_succeeded_no_video"),
        ("seedance", "acedata_transient"),
        ("seedream", "seedream_empty_data"),
        ("dreamina", "wrapper_empty_response"),
    ],
)
def test_empty_observations_change_nothing(provider: str, fixture: str) -> None:
    obs = observe(provider, fixture)
    assert obs.is_empty
    for state in (TaskState(obs.task_id, provider), replace(seedance(), provider=provider)):
        assert merge(state, obs) is state


def test_a_later_delivery_fills_result_extras_without_overwriting() -> None:
    plain = observe("seedance", "seedance_retrieve")
    with_frame = observe("seedance", "seedance_succeeded_last_frame")
    state = fold(seedance(), plain, with_frame)
    assert state.results[0].extra["last_frame_url"].endswith("last-frame.png")
    assert state.results[0].extra["model"] == "doubao-seedance-1-0-pro-250528"
    assert state.conflicts == ()
    # The other order ends the same; the plainer delivery only adds the wrapper's created_at.
    other = merge(seedance(), with_frame)
    again = merge(other, plain)
    assert again.results == other.results == state.results
    assert again.upstream == {**other.upstream, "created_at": 1766329436.091}


def test_filling_extras_never_overwrites_a_held_value() -> None:
    held = Observation(
        "seedance",
        SEEDANCE_ID,
        Status.SUCCEEDED,
        results=(Result("https://a/v", "video", {"x": 1}),),
    )
    later = replace(held, results=(Result("https://a/v?sig=2", "video", {"x": 2, "y": 3}),))
    [result] = fold(seedance(), held, later).results
    assert result == Result("https://a/v", "video", {"x": 1, "y": 3})


def test_a_resigned_seedance2_url_is_the_same_result_and_the_first_url_is_kept() -> None:
    state = merge(TaskState(SEEDANCE2_ID, "seedance2"), observe("seedance2", "seedance2_success"))
    resigned = observe("seedance2", "seedance2_success_resigned")
    assert resigned.results[0].url != state.results[0].url
    assert merge(state, resigned) is state


def test_a_conflicting_final_is_recorded_once_and_not_applied() -> None:
    done = merge(seedance(), observe("seedance", "seedance_retrieve"))
    failed = observe("seedance", "seedance_failed")
    state = merge(done, failed)
    assert (state.status, state.results, state.error) == (Status.SUCCEEDED, done.results, None)
    assert state.conflicts == (Conflict(Status.FAILED, "failed", failed.error, ()),)
    assert merge(state, failed) is state


def test_a_different_result_set_is_a_conflict() -> None:
    done = merge(seedance(), observe("seedance", "seedance_retrieve"))
    body = load("seedance_retrieve")
    body["response"]["data"]["video_url"] = "https://platform.cdn.acedata.cloud/seedance/other.mp4"
    state = merge(done, parse_payload("seedance", body))
    assert state.results == done.results
    assert [r.url for r in state.conflicts[0].results] == [
        "https://platform.cdn.acedata.cloud/seedance/other.mp4"
    ]


def test_a_second_failure_fills_the_missing_error_code() -> None:
    body = load("seedance2_failure")
    body["data"]["fail_reason"] = "img_url must be set"
    no_code = parse_payload("seedance2", body)
    with_code = replace(no_code, error=ErrorInfo("InvalidParameter", "other words"))
    state = fold(TaskState("asyntask_xxx", "seedance2"), no_code, with_code)
    assert state.error == ErrorInfo("InvalidParameter", "img_url must be set")
    assert state.conflicts == ()


def test_success_false_with_code_fails_the_task() -> None:
    state = merge(seedance(), observe("seedance", "acedata_failure_with_code"))
    assert state.status is Status.FAILED and state.error is not None
    assert state.error.code == "content_policy_violation"


def test_expired_yields_to_a_real_result_arriving_later() -> None:
    gave_up = merge(seedance(), expired("seedance", SEEDANCE_ID))
    assert gave_up.status is Status.EXPIRED and gave_up.is_final
    state = merge(gave_up, observe("seedance", "seedance_retrieve"))
    assert state.status is Status.SUCCEEDED and state.upstream_status == "succeeded"
    assert state.conflicts == ()


def test_expired_never_touches_a_final_state() -> None:
    for fixture in ("seedance_retrieve", "seedance_failed"):
        state = merge(seedance(), observe("seedance", fixture))
        assert merge(state, expired("seedance", SEEDANCE_ID)) is state
    gave_up = merge(seedance(), expired("seedance", SEEDANCE_ID))
    assert merge(gave_up, expired("seedance", SEEDANCE_ID)) is gave_up
    assert merge(gave_up, observe("seedance", "seedance_running")).status is Status.EXPIRED


def test_upstream_keeps_first_values_but_the_final_answer_overrides() -> None:
    state = fold(
        TaskState(SEEDANCE2_ID, "seedance2"),
        observe("seedance2", "seedance2_in_progress"),
        observe("seedance2", "seedance2_success"),
        observe("seedance2", "seedance2_queued"),
    )
    assert state.upstream["progress"] == "100%"
    assert state.upstream["finish_time"] == 1777288800
    assert state.upstream["start_time"] == 1777288508


def test_trace_id_first_seen_wins_and_gaps_fill() -> None:
    nodash = observe("dreamina", "dreamina_callback_nodash")
    assert nodash.trace_id is None
    state = fold(
        TaskState(DREAMINA_ID, "dreamina"), nodash, observe("dreamina", "dreamina_retrieve")
    )
    assert state.status is Status.SUCCEEDED
    assert state.trace_id == "a9063166-26ed-4451-85b5-54e896817c69"
    later = merge(state, replace(nodash, trace_id="another"))
    assert later.trace_id == "a9063166-26ed-4451-85b5-54e896817c69"


def test_equal_rank_fills_a_missing_upstream_status_only() -> None:
    running = TaskState(SEEDANCE_ID, "seedance", Status.RUNNING)
    obs = observe("seedance", "seedance_running")
    assert merge(running, obs).upstream_status == "running"
    held = replace(running, upstream_status="processing")
    assert merge(held, obs).upstream_status == "processing"


def test_an_observation_of_another_task_is_refused() -> None:
    with pytest.raises(WrongTask, match="cannot merge"):
        merge(seedance(), observe("dreamina", "dreamina_retrieve"))


def test_changed_tells_a_real_change_from_identity() -> None:
    state = seedance()
    after = merge(state, observe("seedance", "seedance_queued"))
    assert changed(state, after)
    assert not changed(after, merge(after, observe("seedance", "seedance_queued")))
    assert not changed(state, replace(state))


# -- generated histories -------------------------------------------------------------

TASK = SEEDANCE_ID
SPELLINGS = st.sampled_from([TASK, TASK.upper(), TASK.replace("-", "")])
EXTRA_KEYS = ("model", "size", "duration", "last_frame_url", "resolution")
SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=5)


@dataclass(frozen=True)
class Truth:
    """What really happened to a task; consistent observations are partial views of it."""

    outcome: Status | None
    trace_id: str
    results: tuple[Result, ...]
    error: ErrorInfo | None


@st.composite
def truths(draw: st.DrawFn) -> Truth:
    outcome = draw(st.sampled_from([Status.SUCCEEDED, Status.FAILED, None]))
    results: tuple[Result, ...] = ()
    error = None
    if outcome is Status.SUCCEEDED:
        count = draw(st.integers(1, 3))
        results = tuple(
            Result(
                f"https://cdn.example/{i}.mp4",
                "video",
                draw(st.dictionaries(st.sampled_from(EXTRA_KEYS), SCALARS, min_size=1)),
            )
            for i in range(count)
        )
    elif outcome is Status.FAILED:
        error = ErrorInfo(draw(st.text(min_size=1, max_size=5)), draw(st.text(min_size=1)))
    return Truth(outcome, draw(st.text(min_size=1, max_size=5)), results, error)


@st.composite
def views(draw: st.DrawFn, truth: Truth, final: bool) -> Observation:
    """One delivery: a partial, possibly re-signed, view of ``truth``."""
    kinds = ["queued", "running", "empty", "transient"]
    if final and truth.outcome is not None:
        kinds = ["final"]
    elif truth.outcome is None:
        kinds.append("expired")
    kind = draw(st.sampled_from(kinds))
    task_id = draw(SPELLINGS)
    trace_id = draw(st.sampled_from([truth.trace_id, None]))
    if kind == "expired":
        return expired("seedance", task_id)
    if kind in ("empty", "transient"):
        return Observation("seedance", task_id, None, trace_id=trace_id, transient=kind != "empty")
    if kind in ("queued", "running"):
        status = Status(kind)
        word = draw(
            st.sampled_from({"queued": ["queued", "pending"], "running": ["running"]}[kind])
        )
        upstream = draw(st.dictionaries(st.sampled_from(["progress", "model"]), SCALARS))
        return Observation("seedance", task_id, status, word, trace_id, upstream=upstream)
    word = draw(st.sampled_from([truth.outcome.value, None]))
    if truth.outcome is Status.FAILED:
        assert truth.error is not None
        error = draw(st.sampled_from([truth.error, ErrorInfo(None, truth.error.message)]))
        return Observation("seedance", task_id, Status.FAILED, word, trace_id, error=error)
    results = tuple(
        Result(
            r.url + draw(st.sampled_from(["", "?sig=a", "?sig=b"])),
            r.kind,
            {k: v for k, v in r.extra.items() if draw(st.booleans())},
        )
        for r in truth.results
    )
    return Observation("seedance", task_id, Status.SUCCEEDED, word, trace_id, results)


@st.composite
def histories(draw: st.DrawFn) -> tuple[Truth, list[Observation]]:
    truth = draw(truths())
    observations = draw(st.lists(views(truth, final=False), max_size=6))
    if truth.outcome is not None:
        observations += draw(st.lists(views(truth, final=True), min_size=1, max_size=3))
    if observations:  # repeats: the same delivery arriving twice
        observations += draw(st.lists(st.sampled_from(observations), max_size=3))
    return truth, observations


def outcome(state: TaskState) -> tuple[Any, ...]:
    """What must not depend on delivery order (URLs up to their signature)."""
    results = tuple((url_key(r.url), r.kind, dict(r.extra)) for r in state.results)
    final_word = state.upstream_status if state.is_final else None
    return (state.status, results, state.error, state.trace_id, final_word, state.conflicts)


@settings(max_examples=300)
@given(history=histories(), data=st.data())
def test_any_order_of_consistent_deliveries_ends_the_same(
    history: tuple[Truth, list[Observation]], data: st.DataObject
) -> None:
    truth, observations = history
    reordered = data.draw(st.permutations(observations))
    first = fold(seedance(), *observations)
    assert first.conflicts == ()
    assert outcome(fold(seedance(), *reordered)) == outcome(first)
    if truth.outcome is not None:
        # What was merged is the truth, less what no delivery happened to carry.
        assert first.status is truth.outcome
        if truth.error is not None:
            assert first.error is not None and first.error.message == truth.error.message
            assert first.error.code in (truth.error.code, None)
        assert [url_key(r.url) for r in first.results] == [r.url for r in truth.results]
        for merged, real in zip(first.results, truth.results, strict=True):
            assert merged.extra.items() <= real.extra.items()
        assert first.trace_id in (truth.trace_id, None)


def test_same_urls_in_any_order_give_exactly_the_same_results() -> None:
    a = Observation("seedance", TASK, Status.SUCCEEDED, results=(Result("u1", "video", {"x": 1}),))
    b = Observation("seedance", TASK, Status.SUCCEEDED, results=(Result("u1", "video", {"y": 2}),))
    assert fold(seedance(), a, b).results == fold(seedance(), b, a).results


# Arbitrary (also inconsistent) observations of one task.
ONE_RESULT = st.builds(
    Result,
    st.sampled_from(["https://a/1", "https://a/1?s=2", "https://a/2"]),
    st.sampled_from(["image", "video"]),
    st.dictionaries(st.sampled_from(EXTRA_KEYS), SCALARS, max_size=2),
)
ANY_RESULTS = st.lists(ONE_RESULT, max_size=2).map(tuple)
ANY_OBSERVATIONS = st.builds(
    Observation,
    provider=st.just("seedance"),
    task_id=SPELLINGS,
    status=st.none() | st.sampled_from(Status),
    upstream_status=st.none() | st.sampled_from(["a", "b"]),
    trace_id=st.none() | st.sampled_from(["t1", "t2"]),
    results=ANY_RESULTS,
    error=st.none() | st.builds(ErrorInfo, st.none() | st.just("c"), st.sampled_from(["m", ""])),
    transient=st.booleans(),
    upstream=st.dictionaries(st.sampled_from(["progress", "finish_time"]), SCALARS, max_size=2),
)


@settings(max_examples=300)
@given(st.lists(ANY_OBSERVATIONS, max_size=8))
def test_status_rank_never_decreases(observations: list[Observation]) -> None:
    state = seedance()
    for obs in observations:
        after = merge(state, obs)
        assert after.status.rank >= state.status.rank
        if state.is_final and state.status is not Status.EXPIRED:  # the first final stands
            assert after.status is state.status
            assert [r.url for r in after.results] == [r.url for r in state.results]
        state = after


@settings(max_examples=300)
@given(st.lists(ANY_OBSERVATIONS, max_size=6), ANY_OBSERVATIONS)
def test_merging_the_same_observation_twice_is_merging_it_once(
    history: list[Observation], obs: Observation
) -> None:
    once = merge(fold(seedance(), *history), obs)
    assert merge(once, obs) is once


@settings(max_examples=200)
@given(st.lists(ANY_OBSERVATIONS, max_size=6), ANY_OBSERVATIONS)
def test_an_empty_observation_is_identity(history: list[Observation], obs: Observation) -> None:
    state = fold(seedance(), *history)
    assert merge(state, replace(obs, status=None)) is state


def _finals() -> st.SearchStrategy[Observation]:
    """Real final observations as parse makes them: a success names at least one file."""
    return st.builds(
        lambda obs, status, result: replace(
            obs,
            status=status,
            results=(result, *obs.results) if status is Status.SUCCEEDED else (),
            error=(obs.error or ErrorInfo(None, "m")) if status is Status.FAILED else None,
        ),
        ANY_OBSERVATIONS,
        st.sampled_from([Status.SUCCEEDED, Status.FAILED]),
        ONE_RESULT,
    )


NON_FINALS = ANY_OBSERVATIONS.map(
    lambda o: o if o.status is None or not o.status.is_final else replace(o, status=Status.RUNNING)
)


@settings(max_examples=200)
@given(
    first=_finals(),
    second=_finals(),
    before=st.lists(NON_FINALS),
    between=st.lists(NON_FINALS),
)
def test_the_first_final_stands_and_a_conflicting_one_is_recorded(
    first: Observation, second: Observation, before: list[Observation], between: list[Observation]
) -> None:
    keys = [url_key(r.url) for r in first.results]
    other_keys = [url_key(r.url) for r in second.results]
    conflicting = first.status is not second.status or (
        first.status is Status.SUCCEEDED and sorted(keys) != sorted(other_keys)
    )
    state = fold(seedance(), *before, first, *between)
    after = merge(state, second)
    assert after.status is first.status
    assert [url_key(r.url) for r in after.results] == keys
    expected = Conflict(second.status, second.upstream_status, second.error, second.results)
    assert (expected in after.conflicts) is conflicting


@settings(max_examples=200)
@given(
    st.lists(NON_FINALS),
    _finals(),
)
def test_expired_then_a_real_result_gives_the_real_result(
    history: list[Observation], real: Observation
) -> None:
    state = fold(seedance(), *history, expired("seedance", TASK), real)
    assert state.status is real.status
    assert state.results == real.results and state.error == real.error
    assert state.conflicts == ()
