"""Merging one observation into a task's state.

``merge`` is a pure function of (state, observation). Its rules, which make
the merged state the same whatever order consistent deliveries arrive in:

- An empty observation (status None) changes nothing.
- Status never moves back: pending < queued < running < final. A lower or
  equal non-final observation only fills gaps (trace_id, upstream keys, the
  upstream status of the same status).
- A higher status is adopted with its upstream status, and for a final one
  its results and error.
- The first final state stands. A later final observation that disagrees (a
  different final status, or a different set of result files) is recorded
  in ``conflicts``, once, and not applied. One that agrees only fills gaps:
  result extras the held result lacks, the error code or message, the
  upstream status.
- EXPIRED (we gave up waiting) is final but yields to a real SUCCEEDED or
  FAILED arriving later; an EXPIRED observation never touches a final state.
- Result files are compared by URL without its query string, because
  Seedance 2.0 signs its URLs anew on every poll; the first URL seen is kept.
- ``trace_id``: the first one seen wins. ``upstream`` (timestamps, progress):
  the union of every observation's keys, the first value seen winning, except
  that the observation that makes the task final overrides the keys it
  carries, so the final answer's finish_time and progress show.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from server.core.ids import same_task
from server.core.types import Conflict, ErrorInfo, Observation, Result, Status, TaskState


class WrongTask(ValueError):
    """An observation of one task was merged into another task's state (a caller's bug)."""

    def __init__(self, state_task_id: str, observation_task_id: str) -> None:
        super().__init__(
            f"observation of task {observation_task_id!r} cannot merge into task {state_task_id!r}"
        )
        self.state_task_id = state_task_id
        self.observation_task_id = observation_task_id


def expired(provider: str, task_id: str) -> Observation:
    """What the reconciler feeds when it stops waiting for a task."""
    return Observation(provider, task_id, Status.EXPIRED)


def changed(before: TaskState, after: TaskState) -> bool:
    return after is not before and after != before


def merge(state: TaskState, obs: Observation) -> TaskState:
    """The state after ``obs``; ``state`` itself when nothing changes."""
    if obs.status is None:
        return state
    if obs.task_id is not None and not same_task(obs.task_id, state.task_id):
        raise WrongTask(state.task_id, obs.task_id)
    merged = _merge(state, obs, obs.status)
    return state if merged == state else merged


def _merge(state: TaskState, obs: Observation, status: Status) -> TaskState:
    if state.is_final and status.is_final:
        if status is Status.EXPIRED:
            return state
        if state.status is Status.EXPIRED:
            return _adopt(state, obs, status)
        if status is state.status and _agrees(state, obs):
            return _fill_final(state, obs)
        return _record_conflict(state, obs, status)
    if status.rank > state.status.rank:
        return _adopt(state, obs, status)
    return _fill_gaps(state, obs, status)


def _adopt(state: TaskState, obs: Observation, status: Status) -> TaskState:
    final = status.is_final
    return replace(
        state,
        status=status,
        upstream_status=obs.upstream_status,
        trace_id=_first(state.trace_id, obs.trace_id),
        results=obs.results if final else state.results,
        error=obs.error if final else state.error,
        upstream=_union(state.upstream, obs.upstream, override=final),
    )


def _fill_gaps(state: TaskState, obs: Observation, status: Status) -> TaskState:
    same_status = status is state.status
    return replace(
        state,
        upstream_status=state.upstream_status
        if state.upstream_status is not None or not same_status
        else obs.upstream_status,
        trace_id=_first(state.trace_id, obs.trace_id),
        upstream=_union(state.upstream, obs.upstream, override=False),
    )


def _fill_final(state: TaskState, obs: Observation) -> TaskState:
    return replace(
        state,
        upstream_status=_first(state.upstream_status, obs.upstream_status),
        trace_id=_first(state.trace_id, obs.trace_id),
        results=_fill_results(state.results, obs.results),
        error=_fill_error(state.error, obs.error),
        upstream=_union(state.upstream, obs.upstream, override=False),
    )


def _record_conflict(state: TaskState, obs: Observation, status: Status) -> TaskState:
    conflict = Conflict(status, obs.upstream_status, obs.error, obs.results)
    if any(_same_conflict(held, conflict) for held in state.conflicts):
        return state
    return replace(state, conflicts=(*state.conflicts, conflict))


def _agrees(state: TaskState, obs: Observation) -> bool:
    """Whether a final observation of the held final status tells the same outcome.

    Two failures always agree (their errors are merged). Two successes agree
    when they name the same files; one naming no file at all says nothing
    against the held ones.
    """
    if state.status is not Status.SUCCEEDED or not obs.results:
        return True
    return _file_keys(state.results) == _file_keys(obs.results)


def _same_conflict(a: Conflict, b: Conflict) -> bool:
    return (
        a.status is b.status
        and a.upstream_status == b.upstream_status
        and a.error == b.error
        and _file_keys(a.results) == _file_keys(b.results)
    )


def url_key(url: str) -> str:
    """A result URL without query string and fragment: what names the file."""
    return url.partition("#")[0].partition("?")[0]


def _file_keys(results: tuple[Result, ...]) -> Counter[str]:
    return Counter(url_key(r.url) for r in results)


def _fill_results(held: tuple[Result, ...], new: tuple[Result, ...]) -> tuple[Result, ...]:
    """``held`` with the extra keys ``new`` adds; a held value is never overwritten."""
    unmatched = list(new)
    filled = []
    for result in held:
        index = next(
            (i for i, n in enumerate(unmatched) if url_key(n.url) == url_key(result.url)), None
        )
        if index is None:
            filled.append(result)
            continue
        missing = {k: v for k, v in unmatched.pop(index).extra.items() if k not in result.extra}
        filled.append(replace(result, extra={**result.extra, **missing}) if missing else result)
    return tuple(filled)


def _fill_error(held: ErrorInfo | None, new: ErrorInfo | None) -> ErrorInfo | None:
    if held is None or new is None:
        return held or new
    code = _first(held.code, new.code)
    message = held.message or new.message
    return held if (code, message) == (held.code, held.message) else ErrorInfo(code, message)


def _first(held: str | None, new: str | None) -> str | None:
    return held if held is not None else new


def _union(held: Mapping[str, Any], new: Mapping[str, Any], *, override: bool) -> Mapping[str, Any]:
    if all(k in held and (not override or held[k] == new[k]) for k in new):
        return held
    return {**held, **new} if override else {**new, **held}
