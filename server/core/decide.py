"""What one thing heard about one task does to it: a pure decision, no I/O.

``decide(current, item, now, ...)`` takes the task as the store holds it (or
None when it holds none), one ``Incoming`` (a callback, a reconciler answer,
a replay, an expiry) and the moment, and returns a ``Decision``: the task
after the item, whether the raw body is kept, whether anything is written at
all, whether the task became final, which result files to queue for the
archive and which events the change causes. Every store backend applies a
``Decision`` inside its own transaction, and the reconciler's dry run folds
the same function over what it would ingest, so the rules live here once.

The rules, beyond ``merge``:

- A task held under another provider is not touched: the decision says
  ``mismatch`` (the held provider) and nothing else.
- A byte-identical repeat (``repeat``) of a callback or replay of a task the
  store holds changes nothing at all. A repeated reconciler answer is not
  kept again but still counts as a check.
- A body not seen before is kept, and counted in ``deliveries``.
- The next check: none once final; after a check, ``schedule.backoff`` of the
  checks so far; after a change (or for a new task), the grace period;
  otherwise the one already planned.
- Events: ``task.status_changed`` when the status differs from before (a new
  task counts as ``pending`` before), then ``task.<status>`` when the task
  became final. No change, no event.
- The archive: every distinct result URL of a task that changed and is
  ``succeeded``, when archiving is on.
- Metadata: an item that carries some (a submit's answer) lays it over the
  task's, whatever the task's state; a repeated body that brings new
  metadata is not a duplicate. Other items leave it as it is.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from server.core import schedule
from server.core.merge import merge
from server.core.types import Observation, Source, Status, TaskRecord, TaskState

#: Event types, in the order one change causes them.
STATUS_CHANGED = "task.status_changed"
SUCCEEDED = "task.succeeded"
FAILED = "task.failed"
EXPIRED = "task.expired"
ARCHIVED = "task.archived"
EVENT_TYPES: tuple[str, ...] = (STATUS_CHANGED, SUCCEEDED, FAILED, EXPIRED, ARCHIVED)
_FINAL_EVENTS = {Status.SUCCEEDED: SUCCEEDED, Status.FAILED: FAILED, Status.EXPIRED: EXPIRED}


@dataclass(frozen=True)
class Incoming:
    """One thing heard about one task, on its way to be stored and merged.

    ``body`` is the raw bytes as received (None for a check that got no answer
    for this task, or for the reconciler's own expiry). ``check`` is true for
    answers the reconciler asked for: they advance the task's check schedule.
    ``quarantine_id``: a replay removes its quarantine row in the same commit.
    ``headers``: what to keep with the body if it has to be quarantined.
    ``metadata``: the submitter's metadata (a submit's answer), laid over the
    task's own key by key; None leaves the task's metadata as it is.
    """

    provider: str
    task_id: str
    source: Source
    body: bytes | None
    observation: Observation | None
    check: bool = False
    quarantine_id: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Decision:
    """What applying one ``Incoming`` does; a backend writes exactly this."""

    #: The task after the item (``current`` itself when ``write`` is false).
    record: TaskRecord
    #: Whether the task row is written (created or updated) at all.
    write: bool
    #: The store held no task: the row is created.
    created: bool
    #: Keep ``item.body`` as a new delivery (a body not seen before for this task).
    keep_body: bool
    #: A byte-identical repeat of a callback or replay: nothing changes.
    duplicate: bool
    #: The merged state changed.
    changed: bool
    became_final: bool
    #: The status before the item (``pending`` for a task it creates).
    previous: Status
    #: Where the final state came from, when the item made the task final.
    final_source: Source | None
    #: Result URLs to queue for the archive, each once.
    archive_urls: tuple[str, ...]
    #: The item recorded a new conflicting final observation.
    conflict: bool
    #: Event types this change causes, in order.
    events: tuple[str, ...]
    #: The provider the task is held under, when the item names another: nothing is written.
    mismatch: str | None = None


def new_task(task_id: str, provider: str, *, trace_id: str | None = None) -> TaskState:
    """The state of a task nobody has heard of yet."""
    return TaskState(task_id=task_id.strip(), provider=provider, trace_id=trace_id)


def decide(
    current: TaskRecord | None,
    item: Incoming,
    now: float,
    *,
    repeat: bool = False,
    grace: float = 60.0,
    archive: bool = False,
    rng: random.Random | None = None,
) -> Decision:
    """The decision for ``item`` given the task the store holds (None: no task yet).

    ``repeat``: the store already keeps this exact body for this task.
    ``grace``: RECONCILE_GRACE; ``archive``: ARCHIVE is on; ``rng`` feeds the
    check schedule's jitter (tests pass a seeded one).
    """
    if current is not None and current.state.provider != item.provider:
        return _unchanged(current, mismatch=current.state.provider)
    metadata = _metadata(current, item)
    repeated = current is not None and repeat and item.body is not None and not item.check
    if repeated and current is not None and metadata == current.metadata:
        return _unchanged(current, duplicate=True)

    state = current.state if current is not None else new_task(item.task_id, item.provider)
    keep_body = item.body is not None and not repeat
    merged = merge(state, item.observation) if item.observation is not None else state
    if item.body is not None and not keep_body:
        merged = state  # a repeated answer tells nothing new
    changed = merged is not state
    became_final = merged.is_final and (not state.is_final or merged.status != state.status)

    checks = (current.checks if current else 0) + int(item.check)
    if merged.is_final:
        next_check: float | None = None
    elif item.check:
        next_check = now + schedule.backoff(checks, rng)
    elif changed or current is None:
        next_check = schedule.first_check(now, grace)
    else:
        next_check = current.next_check_at

    if current is None:
        record = TaskRecord(
            state=merged,
            metadata=metadata,
            created_at=now,
            updated_at=now,
            completed_at=now if merged.is_final else None,
            deliveries=int(keep_body),
            checks=checks,
            next_check_at=next_check,
            last_source=item.source,
        )
    else:
        record = replace(
            current,
            state=merged,
            metadata=metadata,
            updated_at=now if changed else current.updated_at,
            completed_at=now if became_final else current.completed_at,
            deliveries=current.deliveries + int(keep_body),
            checks=checks,
            next_check_at=next_check,
            last_source=item.source if keep_body or item.check else current.last_source,
        )

    events: list[str] = []
    if merged.status != state.status:
        events.append(STATUS_CHANGED)
    if became_final:
        events.append(_FINAL_EVENTS[merged.status])
    archive_urls: tuple[str, ...] = ()
    if archive and changed and merged.status is Status.SUCCEEDED:
        archive_urls = tuple(dict.fromkeys(r.url for r in merged.results))
    return Decision(
        record=record,
        write=True,
        created=current is None,
        keep_body=keep_body,
        duplicate=False,
        changed=changed,
        became_final=became_final,
        previous=state.status,
        final_source=item.source if became_final else None,
        archive_urls=archive_urls,
        conflict=len(merged.conflicts) > len(state.conflicts),
        events=tuple(events),
    )


def _metadata(current: TaskRecord | None, item: Incoming) -> Mapping[str, Any]:
    """The task's metadata after ``item``: the item's keys laid over the task's."""
    held: Mapping[str, Any] = current.metadata if current is not None else {}
    return {**held, **item.metadata} if item.metadata is not None else held


def _unchanged(
    current: TaskRecord, *, duplicate: bool = False, mismatch: str | None = None
) -> Decision:
    return Decision(
        record=current,
        write=False,
        created=False,
        keep_body=False,
        duplicate=duplicate,
        changed=False,
        became_final=False,
        previous=current.state.status,
        final_source=None,
        archive_urls=(),
        conflict=False,
        events=(),
        mismatch=mismatch,
    )
