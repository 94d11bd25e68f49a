"""Ingest on PostgreSQL: a group of requests applied in one transaction, in two round trips.

``apply_group`` is what the group writer runs. For every task the group
names, in key order (so two replicas' groups can never deadlock):

1. ``INSERT … ON CONFLICT DO NOTHING`` a placeholder row, so the task exists
   whoever comes first (its ``RETURNING`` says whether it was new), then
   ``SELECT … FOR UPDATE``: the row is locked until COMMIT, and every other
   transaction, on any replica, that touches this task waits. That is the
   per-task serial order.
2. Which of the group's bodies the task keeps already (the byte-identical
   repeat check, read after the locks, so it sees every earlier commit), and
   the archive outcomes the task shows (for the events' bodies).

These go out as one pipeline. Then, in Python, the pure ``core.decide`` runs
for every item in order, each seeing the state the previous one left; what
it decides is written — deliveries, one ``UPDATE`` per task, archive rows,
quarantine, events (numbered last, see ``events``) and the wake-up
``pg_notify`` — and COMMIT follows in a second pipeline. Nothing about what a
callback does is decided here: that is ``core.decide``'s.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from server.core.decide import Decision, decide
from server.core.expiry import url_expiry
from server.core.ids import task_key
from server.core.types import ArchiveOutcome, TaskRecord
from server.store.base import Incoming, IngestOutcome
from server.store.ingest_rows import (
    Rules,
    delivery_row,
    mismatch_message,
    mismatch_outcome,
    outcome,
    task_values,
)
from server.store.postgres import events as outbox
from server.store.postgres import values
from server.store.postgres.listener import CHANNEL
from server.store.postgres.rows import dumps
from server.store.rows import (
    ARCHIVE_COLUMNS,
    SHOWN_ARCHIVES,
    TASK_COLUMNS,
    archive_outcome,
    task_record,
)

__all__ = ["Rules", "apply_group"]

#: A row that exists only inside the transaction that is about to fill it.
_PLACEHOLDER = (
    "INSERT INTO tasks (key, task_id, provider, status, state, created_at, updated_at)"
    " VALUES (%s, %s, %s, '', '', %s, %s) ON CONFLICT (key) DO NOTHING RETURNING seq"
)
_LOCK = f"SELECT {TASK_COLUMNS} FROM tasks WHERE key = %s FOR UPDATE"
_KEPT = (
    "SELECT d.task_key, d.sha256 FROM deliveries d"
    " JOIN unnest(%s::text[], %s::text[]) AS x(k, s) ON d.task_key = x.k AND d.sha256 = x.s"
)
_SHOWN = f"SELECT {ARCHIVE_COLUMNS} FROM archives WHERE task_key = ANY(%s) AND {SHOWN_ARCHIVES}"
_DELIVERY = (
    "INSERT INTO deliveries (task_key, provider, source, received_at, sha256, body, status,"
    " changed) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)
_UPDATE = (
    "UPDATE tasks SET task_id = %s, provider = %s, status = %s, state = %s, metadata = %s,"
    " created_at = %s, updated_at = %s, completed_at = %s, next_check_at = %s, deliveries = %s,"
    " checks = %s, last_source = %s, final_source = COALESCE(%s, final_source) WHERE key = %s"
)
_ARCHIVE = (
    "INSERT INTO archives (task_key, url, status, next_attempt_at, expires_at, created_at,"
    " updated_at) VALUES (%s, %s, 'pending', %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)


@dataclass
class _Held:
    """One task locked by the transaction, as the items so far left it."""

    record: TaskRecord | None  # None: the store held no task before this transaction
    kept: set[str] = field(default_factory=set)  # digests of the bodies it keeps
    shown: dict[str, ArchiveOutcome] = field(default_factory=dict)
    dirty: bool = False
    final_source: str | None = None


@dataclass
class _Pending:
    """An item's outcome, less what only the database can say after the COMMIT."""

    decision: Decision
    item: Incoming
    quarantine: Any = None  # the cursor of its quarantine insert (RETURNING id)
    archives: list[Any] = field(default_factory=list)  # cursors of its archive inserts
    events: tuple[str, ...] = ()


async def apply_group(
    conn: psycopg.AsyncConnection,
    requests: Sequence[Sequence[Incoming]],
    now: float,
    rules: Rules,
) -> list[list[IngestOutcome]]:
    """Apply every request's items, in order, in one transaction; outcomes per request."""
    items = [item for request in requests for item in request]
    firsts: dict[str, Incoming] = {}
    for item in items:
        firsts.setdefault(task_key(item.task_id), item)
    keys = sorted(firsts)
    digests = {id(i): hashlib.sha256(i.body).hexdigest() for i in items if i.body is not None}
    pending: list[_Pending] = []
    async with conn.pipeline() as pipeline, conn.transaction():
        held = await _lock(conn, pipeline, keys, firsts, items, digests, now)
        writes: list[outbox.PendingEvent] = []
        quarantined = False
        for item in items:
            key = task_key(item.task_id)
            task = held[key]
            digest = digests.get(id(item))
            decision = decide(
                task.record,
                item,
                now,
                repeat=digest is not None and digest in task.kept,
                grace=rules.grace,
                archive=rules.archive,
            )
            entry = _Pending(decision, item)
            pending.append(entry)
            if decision.mismatch is not None:
                if item.quarantine_id is None and item.body is not None:
                    entry.quarantine = await _quarantine_mismatch(conn, item, decision, now)
                    quarantined = True
                continue
            if decision.keep_body:
                assert item.body is not None and digest is not None
                await conn.execute(_DELIVERY, delivery_row(key, item, decision, digest, now))
                task.kept.add(digest)
            if decision.write:
                task.record, task.dirty = decision.record, True
                task.final_source = decision.final_source or task.final_source
            if (decision.write or decision.duplicate) and item.quarantine_id is not None:
                await conn.execute("DELETE FROM quarantine WHERE id = %s", (item.quarantine_id,))
            for url in sorted(decision.archive_urls):  # one order for every writer
                entry.archives.append(
                    await conn.execute(_ARCHIVE, (key, url, now, url_expiry(url, now), now, now))
                )
            rendered = outbox.render(key, decision.record, task.shown, decision.events, now)
            entry.events = tuple(e.id for e in rendered)
            writes.extend(rendered)
        for key in keys:
            task = held[key]
            if task.dirty and task.record is not None:
                await conn.execute(
                    _UPDATE, (*task_values(task.record, task.final_source, dumps), key)
                )
        if quarantined:
            await values.cap_quarantine(conn, rules.quarantine_max_rows, rules.quarantine_max_bytes)
        if any(e.archives for e in pending):
            await conn.execute("SELECT pg_notify(%s, 'archive')", (CHANNEL,))
        if writes:
            await conn.execute("SELECT pg_notify(%s, 'events')", (CHANNEL,))
            await outbox.add_events(conn, writes)  # last: it holds the counter until COMMIT
    outcomes = [await _outcome(entry) for entry in pending]
    result, start = [], 0
    for request in requests:
        result.append(outcomes[start : start + len(request)])
        start += len(request)
    return result


async def _lock(
    conn: psycopg.AsyncConnection,
    pipeline: psycopg.AsyncPipeline,
    keys: list[str],
    firsts: dict[str, Incoming],
    items: list[Incoming],
    digests: dict[int, str],
    now: float,
) -> dict[str, _Held]:
    """Make sure each task exists and lock it, in key order; what each keeps and shows."""
    cursors = []
    for key in keys:
        first = firsts[key]
        created = await conn.execute(
            _PLACEHOLDER, (key, first.task_id.strip(), first.provider, now, now)
        )
        locked = await conn.execute(_LOCK, (key,))
        cursors.append((key, created, locked))
    asked = [(task_key(i.task_id), digests[id(i)]) for i in items if id(i) in digests]
    kept = await conn.execute(_KEPT, ([k for k, _ in asked], [d for _, d in asked]))
    shown = await conn.execute(_SHOWN, (keys,))
    await pipeline.sync()
    held: dict[str, _Held] = {}
    for key, created, locked in cursors:
        new = await created.fetchone() is not None
        row = await locked.fetchone()
        assert row is not None, "a task row locked after its insert must exist"
        held[key] = _Held(None if new else task_record(row))
    for key, digest in await kept.fetchall():
        held[key].kept.add(digest)
    for row in await shown.fetchall():
        key, url, outcome = archive_outcome(row)
        held[key].shown[url] = outcome
    return held


async def _quarantine_mismatch(
    conn: psycopg.AsyncConnection, item: Incoming, decision: Decision, now: float
) -> Any:
    assert item.body is not None
    message = mismatch_message(decision, item)
    return await values.insert_quarantine(
        conn, item.provider, item.body, item.headers, "provider_mismatch", message, now
    )


async def _outcome(entry: _Pending) -> IngestOutcome:
    decision = entry.decision
    if decision.mismatch is not None:
        quarantine_id = entry.item.quarantine_id
        if entry.quarantine is not None:
            row = await entry.quarantine.fetchone()
            quarantine_id = row[0]
        return mismatch_outcome(decision, quarantine_id)
    queued = sum(max(cursor.rowcount, 0) for cursor in entry.archives)
    return outcome(decision, queued, entry.events)
