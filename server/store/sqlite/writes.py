"""Write transactions: each function runs on the writer thread inside one group.

These are plain synchronous functions of a ``sqlite3.Connection``; the
``Store`` hands them to the writer and awaits the commit.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Mapping, Sequence

from server.core import schedule
from server.core.codec import state_to_dict
from server.core.decide import Decision, Incoming, decide, new_task
from server.core.ids import task_key
from server.core.jsontext import dumps
from server.core.types import Status
from server.store import statements
from server.store.base import IngestOutcome, Registration
from server.store.ingest_rows import Rules, mismatch_message, mismatch_outcome
from server.store.rows import TASK_COLUMNS, task_record
from server.store.sqlite.archive_writes import enqueue_archives
from server.store.sqlite.events import add_events
from server.store.sqlite.retention import enforce_quarantine_bytes
from server.store.sqlite.task_rows import (
    INSERT_DELIVERY,
    INSERT_TASK,
    UPDATE_BOOKKEEPING,
    UPDATE_TASK,
    bookkeeping_only,
    delivery_row,
    insert_row,
    outcome,
    update_row,
)
from server.store.sqlite.values import bump_counter

__all__ = ["Rules", "discard_quarantined", "ingest", "ingest_many", "quarantine", "register"]

_TASK = f"SELECT {TASK_COLUMNS} FROM tasks WHERE key = ?"
_REPEAT = "SELECT 1 FROM deliveries WHERE task_key = ? AND sha256 = ?"


def ingest(conn: sqlite3.Connection, item: Incoming, now: float, rules: Rules) -> IngestOutcome:
    """Keep the raw body, merge the observation, update the task: one savepoint.

    The task row is read inside the write transaction, so the decision
    (``core.decide``) and its application are serial per task. With
    ``archive``, a succeeded task gets one archive row per result URL in the
    same transaction, so no copy is lost between commit and enqueue.
    """
    key = task_key(item.task_id)
    row = conn.execute(_TASK, (key,)).fetchone()
    current = task_record(row) if row is not None else None
    digest = hashlib.sha256(item.body).hexdigest() if item.body is not None else None
    # A delivery is kept only with its task (written together, neither ever deleted
    # alone): no task, no kept body to repeat, so a new task costs no second read.
    repeat = (
        current is not None
        and digest is not None
        and conn.execute(_REPEAT, (key, digest)).fetchone() is not None
    )
    decision = decide(current, item, now, repeat=repeat, grace=rules.grace, archive=rules.archive)
    if decision.mismatch is not None:
        return _mismatch(conn, item, decision, now, rules)
    _apply(conn, key, item, decision, digest, now)
    if decision.write or decision.duplicate:
        _remove_quarantined(conn, item)
    queued = enqueue_archives(conn, key, decision.archive_urls, now) if decision.archive_urls else 0
    # Archive outcomes exist only for a task that had succeeded before this item.
    shown = decision.previous is Status.SUCCEEDED
    events = add_events(conn, key, decision.record, decision.events, now, archives=shown)
    return outcome(decision, queued, events)


def _apply(
    conn: sqlite3.Connection,
    key: str,
    item: Incoming,
    decision: Decision,
    digest: str | None,
    now: float,
) -> None:
    """Write what ``decision`` says: the delivery, then the task row."""
    if decision.keep_body:
        assert item.body is not None
        conn.execute(INSERT_DELIVERY, delivery_row(key, item, decision, digest, now))
    if not decision.write:
        return
    if decision.created:
        conn.execute(INSERT_TASK, insert_row(key, decision))
        return
    bookkeeping = bookkeeping_only(item, decision)
    conn.execute(
        UPDATE_BOOKKEEPING if bookkeeping else UPDATE_TASK,
        update_row(key, decision, bookkeeping=bookkeeping),
    )


def _mismatch(
    conn: sqlite3.Connection, item: Incoming, decision: Decision, now: float, rules: Rules
) -> IngestOutcome:
    """A delivery naming a task held under another provider: quarantined, task untouched."""
    quarantine_id = item.quarantine_id
    if quarantine_id is None and item.body is not None:
        quarantine_id = quarantine(
            conn,
            item.provider,
            item.body,
            dict(item.headers),
            "provider_mismatch",
            mismatch_message(decision, item),
            now,
            rules.quarantine_max_rows,
            rules.quarantine_max_bytes,
        )
    return mismatch_outcome(decision, quarantine_id)


def _remove_quarantined(conn: sqlite3.Connection, item: Incoming) -> None:
    if item.quarantine_id is not None:
        conn.execute("DELETE FROM quarantine WHERE id = ?", (item.quarantine_id,))


def ingest_many(
    conn: sqlite3.Connection, items: Sequence[Incoming], now: float, rules: Rules
) -> list[IngestOutcome]:
    return [ingest(conn, item, now, rules) for item in items]


def register(
    conn: sqlite3.Connection, regs: Sequence[Registration], now: float, grace: float
) -> list[str]:
    """Create the tasks not known yet; a known task is left exactly as it is."""
    keys = []
    for reg in regs:
        key = task_key(reg.task_id)
        state = new_task(reg.task_id, reg.provider, trace_id=reg.trace_id)
        conn.execute(
            "INSERT OR IGNORE INTO tasks (key, task_id, provider, status, state, metadata,"
            " created_at, updated_at, next_check_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                state.task_id,
                reg.provider,
                state.status.value,
                dumps(state_to_dict(state)),
                dumps(reg.metadata or {}),
                now,
                now,
                schedule.first_check(now, grace),
            ),
        )
        keys.append(key)
    return keys


def quarantine(
    conn: sqlite3.Connection,
    provider: str,
    body: bytes,
    headers: Mapping[str, str],
    reason: str,
    message: str,
    now: float,
    max_rows: int,
    max_bytes: int | None = None,
) -> int:
    """Keep a delivery we could not merge; drop the oldest beyond ``max_rows``/``max_bytes``."""
    row = statements.new_quarantine(provider, body, dumps(dict(headers)), reason, message, now)
    cursor = conn.execute(statements.INSERT_QUARANTINE, row)
    new_id = cursor.lastrowid
    assert new_id is not None
    dropped = conn.execute("DELETE FROM quarantine WHERE id <= ?", (new_id - max_rows,)).rowcount
    if dropped:
        bump_counter(conn, "quarantine_dropped", dropped)
    if max_bytes is not None:
        enforce_quarantine_bytes(conn, max_bytes)
    return new_id


def discard_quarantined(conn: sqlite3.Connection, quarantine_id: int) -> bool:
    """Drop one quarantined delivery for good; true when it was there."""
    return conn.execute("DELETE FROM quarantine WHERE id = ?", (quarantine_id,)).rowcount == 1
