"""How rows read back as records: the column lists and their converters, for every backend.

Each ``*_COLUMNS`` is the select list its converter reads, in order; both
backends store the same columns, so one converter serves SQLite's rows and
PostgreSQL's tuples alike (``bytes(...)`` and ``bool(...)`` even out what the
drivers hand back: ``memoryview``/``bytes``, ``0/1``/``bool``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from server.core.codec import state_from_dict
from server.core.render import retyped
from server.core.types import ArchiveOutcome, TaskRecord
from server.store.records import ArchiveJob, Delivery, DueTask, Event, QuarantineItem, SubmitRecord

__all__ = [
    "ARCHIVE_COLUMNS",
    "ARCHIVE_JOB_COLUMNS",
    "DELIVERY_COLUMNS",
    "DUE_COLUMNS",
    "EVENT_COLUMNS",
    "QUARANTINE_COLUMNS",
    "SHOWN_ARCHIVES",
    "SUBMIT_COLUMNS",
    "TASK_COLUMNS",
    "archive_job",
    "archive_outcome",
    "delivery",
    "due_task",
    "event_row",
    "quarantined",
    "submit_record",
    "task_record",
]

TASK_COLUMNS = (
    "key, task_id, provider, state, metadata, created_at, updated_at, completed_at,"
    " deliveries, checks, next_check_at, last_source"
)


def task_record(row: Sequence[Any]) -> TaskRecord:
    """A ``tasks`` row, selected as ``TASK_COLUMNS``, as a record."""
    return TaskRecord(
        state=state_from_dict(json.loads(row[3])),
        metadata=json.loads(row[4]),
        created_at=row[5],
        updated_at=row[6],
        completed_at=row[7],
        deliveries=row[8],
        checks=row[9],
        next_check_at=row[10],
        last_source=row[11],
    )


#: The columns an archive outcome is read from (``archive_outcome``).
ARCHIVE_COLUMNS = "task_key, url, status, sha256, bytes, content_type, error, message, attempts"
#: The archive rows a task shows: copied, or with a failure to tell.
SHOWN_ARCHIVES = "(status = 'done' OR error IS NOT NULL)"


def archive_outcome(row: Sequence[Any]) -> tuple[str, str, ArchiveOutcome]:
    """(task_key, url, outcome) of a row selected as ``ARCHIVE_COLUMNS``."""
    key, url, status, sha256, size, content_type, error, message, attempts = row
    return key, url, ArchiveOutcome(status, sha256, size, content_type, error, message, attempts)


ARCHIVE_JOB_COLUMNS = "task_key, url, attempts, expires_at"


def archive_job(row: Sequence[Any]) -> ArchiveJob:
    return ArchiveJob(*row)


DUE_COLUMNS = "task_id, provider, created_at, checks"


def due_task(row: Sequence[Any]) -> DueTask:
    return DueTask(*row)


DELIVERY_COLUMNS = "id, source, received_at, sha256, body, status, changed"


def delivery(row: Sequence[Any]) -> Delivery:
    ident, source, received_at, sha256, body, status, changed = row
    return Delivery(ident, source, received_at, sha256, bytes(body), status, bool(changed))


QUARANTINE_COLUMNS = "id, provider, received_at, reason, message, headers, sha256, body"


def quarantined(row: Sequence[Any]) -> QuarantineItem:
    ident, provider, received_at, reason, message, headers, sha256, body = row
    return QuarantineItem(
        ident, provider, received_at, reason, message, json.loads(headers), sha256, bytes(body)
    )


#: An event's body as stored, selected ``FROM events`` (unaliased): its own text, or,
#: when ``data_back`` is set, the type and text of the event that many seqs back, the
#: first event of the same change, which holds the task for all of them (``event_body``).
#: Retention prunes by ``created_at``, which the events of one change share. The look-ups
#: back sit in ``CASE``: both engines then skip them for an event holding its own body
#: (every event on PostgreSQL), where they had probed the key index with a NULL key
#: (PostgreSQL, a page of 100 events: 0.12 ms, 0.05 ms with the look-ups skipped).
EVENT_BODY = (
    "type, body, data_back,"
    " CASE WHEN data_back IS NULL THEN NULL"
    " ELSE (SELECT f.type FROM events f WHERE f.seq = events.seq - events.data_back) END,"
    " CASE WHEN data_back IS NULL THEN NULL"
    " ELSE (SELECT f.body FROM events f WHERE f.seq = events.seq - events.data_back) END"
)
EVENT_COLUMNS = f"seq, id, task_key, provider, created_at, {EVENT_BODY}"


def event_body(row: Sequence[Any]) -> tuple[str, str]:
    """(type, body) of an event from the five columns of ``EVENT_BODY``."""
    event_type, body, data_back, source_type, source_body = row
    if data_back is None:
        return event_type, body
    if source_type is None:  # cannot happen: a change's events are pruned together
        raise LookupError(f"the event {data_back} seqs back, which holds this body, is gone")
    return event_type, retyped(source_body, source_type, event_type)


def event_row(row: Sequence[Any]) -> tuple[int, Event]:
    """(seq, event) of a row selected as ``EVENT_COLUMNS``."""
    seq, ident, key, provider, created_at = row[:5]
    event_type, body = event_body(row[5:])
    return seq, Event(ident, event_type, key, provider, created_at, body)


SUBMIT_COLUMNS = (
    "id, provider, idempotency_key, fingerprint, answered, status, body, task_id, trace_id,"
    " created_at, answered_at, lapses_at, key_held_until"
)


def submit_record(row: Sequence[Any]) -> SubmitRecord:
    """A ``submits`` row, selected as ``SUBMIT_COLUMNS``, as a record."""
    ident, provider, key, fingerprint, answered, *answer = row
    return SubmitRecord(ident, provider, key, fingerprint, bool(answered), *answer)
