"""What both backends' ingest writes and answers, whatever their SQL.

The settings an ingest applies, the row a kept delivery becomes, and the
outcome a decision answers: one definition here, so SQLite and PostgreSQL
cannot drift apart (the statements themselves: ``server.store.statements``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.core.codec import state_to_dict
from server.core.decide import Decision
from server.core.types import TaskRecord
from server.store.base import Incoming, IngestOutcome


@dataclass(frozen=True)
class Rules:
    """The settings an ingest applies: RECONCILE_GRACE, ARCHIVE, QUARANTINE_MAX_ROWS/_BYTES."""

    grace: float = 60.0
    archive: bool = False
    quarantine_max_rows: int = 100_000
    quarantine_max_bytes: int | None = None


def delivery_row(
    key: str, item: Incoming, decision: Decision, digest: str | None, now: float
) -> tuple[Any, ...]:
    """(task_key, provider, source, received_at, sha256, body, status, changed) of a kept body."""
    observation = item.observation
    reported = observation.status.value if observation and observation.status else None
    return (key, item.provider, item.source, now, digest, item.body, reported, decision.changed)


def task_values(
    record: TaskRecord, final_source: str | None, dumps: Callable[[Any], str]
) -> tuple[Any, ...]:
    """A task row's columns after its key, in ``rows.TASK_COLUMNS`` order.

    (task_id, provider, status, state, metadata, created_at, updated_at,
    completed_at, next_check_at, deliveries, checks, last_source, final_source);
    ``dumps`` is the backend's JSON text encoder.
    """
    state = record.state
    return (
        state.task_id,
        state.provider,
        state.status.value,
        dumps(state_to_dict(state)),
        dumps(dict(record.metadata)),
        record.created_at,
        record.updated_at,
        record.completed_at,
        record.next_check_at,
        record.deliveries,
        record.checks,
        record.last_source,
        final_source,
    )


def mismatch_message(decision: Decision, item: Incoming) -> str:
    held = decision.record.state
    return f"task {held.task_id!r} is held under provider {held.provider!r}, not {item.provider!r}"


def outcome(decision: Decision, queued: int = 0, events: tuple[str, ...] = ()) -> IngestOutcome:
    """What an applied ``decision`` answers (``queued`` archive rows, its ``events``' ids)."""
    state = decision.record.state
    return IngestOutcome(
        state.task_id,
        state.provider,
        state.status.value,
        decision.duplicate,
        decision.changed,
        decision.became_final,
        queued,
        decision.previous.value,
        events=events,
    )


def mismatch_outcome(decision: Decision, quarantine_id: int | None) -> IngestOutcome:
    """A body naming a task held under another provider: the task as it is, nothing changed."""
    held = decision.record.state
    status = held.status.value
    return IngestOutcome(
        held.task_id,
        held.provider,
        status,
        False,
        False,
        False,
        0,
        status,
        mismatch=True,
        quarantine_id=quarantine_id,
    )
