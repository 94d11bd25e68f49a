"""Write transactions: each function runs on the writer thread inside one group.

These are plain synchronous functions of a ``sqlite3.Connection``; the
``Store`` hands them to the writer and awaits the commit.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from server.core import schedule
from server.core.codec import state_from_dict, state_to_dict
from server.core.ids import task_key
from server.core.merge import merge
from server.core.types import Observation, Source, Status, TaskState
from server.store.sqlite.archive_writes import enqueue_archives


@dataclass(frozen=True)
class Incoming:
    """One thing heard about one task, on its way to be stored and merged.

    ``body`` is the raw bytes as received (None for a check that got no answer
    for this task, or for the reconciler's own expiry). ``check`` is true for
    answers the reconciler asked for: they advance the task's check schedule.
    """

    provider: str
    task_id: str
    source: Source
    body: bytes | None
    observation: Observation | None
    check: bool = False
    quarantine_id: int | None = None  # a replay removes its quarantine row in the same commit


@dataclass(frozen=True)
class IngestOutcome:
    task_id: str
    provider: str
    status: str
    duplicate: bool  # byte-identical to a delivery already kept: nothing changed
    changed: bool  # the merged state changed
    became_final: bool
    archive_queued: int = 0  # archive rows this ingest added (wake the archiver)
    #: The status before this ingest (``pending`` for a task it created), read in the
    #: same transaction, so callers need not read the task again to report a change.
    previous: str = "pending"


@dataclass(frozen=True)
class Registration:
    provider: str
    task_id: str
    trace_id: str | None = None
    metadata: dict[str, Any] | None = None


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def ingest(
    conn: sqlite3.Connection, item: Incoming, now: float, grace: float, archive: bool = False
) -> IngestOutcome:
    """Keep the raw body, merge the observation, update the task: one savepoint.

    With ``archive``, a succeeded task gets one archive row per result URL in
    the same transaction, so no copy is lost between commit and enqueue.
    """
    key = task_key(item.task_id)
    row = conn.execute(
        "SELECT seq, provider, status, state, checks, next_check_at FROM tasks WHERE key = ?",
        (key,),
    ).fetchone()
    if row is None:
        state = TaskState(task_id=item.task_id.strip(), provider=item.provider)
    else:
        state = state_from_dict(json.loads(row[3]))
    merged = merge(state, item.observation) if item.observation is not None else state
    changed = merged is not state

    inserted = False
    if item.body is not None:
        reported = (
            item.observation.status.value if item.observation and item.observation.status else None
        )
        cursor = conn.execute(
            "INSERT OR IGNORE INTO deliveries"
            " (task_key, provider, source, received_at, sha256, body, status, changed)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                item.provider,
                item.source,
                now,
                hashlib.sha256(item.body).hexdigest(),
                item.body,
                reported,
                int(changed),
            ),
        )
        inserted = cursor.rowcount == 1
        if not inserted and row is not None and not item.check:
            # A byte-identical repeat of a callback changes nothing at all.
            _remove_quarantined(conn, item)
            status = state.status.value
            return IngestOutcome(state.task_id, row[1], status, True, False, False, 0, status)
        if not inserted:
            changed = False
            merged = state

    became_final = merged.is_final and (not state.is_final or merged.status != state.status)
    if merged.is_final:
        next_check = None
    elif item.check:
        checks = (row[4] if row else 0) + 1
        next_check = now + schedule.backoff(checks)
    elif changed or row is None:
        next_check = schedule.first_check(now, grace)
    else:
        next_check = row[5]

    encoded = _dumps(state_to_dict(merged))
    if row is None:
        conn.execute(
            "INSERT INTO tasks (key, task_id, provider, status, state, created_at, updated_at,"
            " completed_at, next_check_at, deliveries, checks, last_source, final_source)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                merged.task_id,
                item.provider,
                merged.status.value,
                encoded,
                now,
                now,
                now if merged.is_final else None,
                next_check,
                int(inserted),
                int(item.check),
                item.source,
                item.source if merged.is_final else None,
            ),
        )
        provider = item.provider
    else:
        conn.execute(
            "UPDATE tasks SET status = ?, state = ?, next_check_at = ?,"
            " deliveries = deliveries + ?, checks = checks + ?,"
            " updated_at = CASE WHEN ? THEN ? ELSE updated_at END,"
            " completed_at = CASE WHEN ? THEN ? ELSE completed_at END,"
            " final_source = CASE WHEN ? THEN ? ELSE final_source END,"
            " last_source = CASE WHEN ? THEN ? ELSE last_source END"
            " WHERE seq = ?",
            (
                merged.status.value,
                encoded,
                next_check,
                int(inserted),
                int(item.check),
                changed,
                now,
                became_final,
                now,
                became_final,
                item.source,
                inserted or item.check,
                item.source,
                row[0],
            ),
        )
        provider = row[1]
    _remove_quarantined(conn, item)
    queued = 0
    if archive and changed and merged.status is Status.SUCCEEDED:
        queued = enqueue_archives(conn, key, [r.url for r in merged.results], now)
    return IngestOutcome(
        merged.task_id,
        provider,
        merged.status.value,
        False,
        changed,
        became_final,
        queued,
        state.status.value,
    )


def _remove_quarantined(conn: sqlite3.Connection, item: Incoming) -> None:
    if item.quarantine_id is not None:
        conn.execute("DELETE FROM quarantine WHERE id = ?", (item.quarantine_id,))


def ingest_many(
    conn: sqlite3.Connection,
    items: Sequence[Incoming],
    now: float,
    grace: float,
    archive: bool = False,
) -> list[IngestOutcome]:
    return [ingest(conn, item, now, grace, archive) for item in items]


def register(
    conn: sqlite3.Connection, regs: Sequence[Registration], now: float, grace: float
) -> list[str]:
    """Create the tasks not known yet; a known task is left exactly as it is."""
    keys = []
    for reg in regs:
        key = task_key(reg.task_id)
        state = TaskState(task_id=reg.task_id.strip(), provider=reg.provider, trace_id=reg.trace_id)
        conn.execute(
            "INSERT OR IGNORE INTO tasks (key, task_id, provider, status, state, metadata,"
            " created_at, updated_at, next_check_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                state.task_id,
                reg.provider,
                state.status.value,
                _dumps(state_to_dict(state)),
                _dumps(reg.metadata or {}),
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
    headers: dict[str, str],
    reason: str,
    message: str,
    now: float,
    max_rows: int,
) -> int:
    """Keep a delivery we could not merge; drop the oldest beyond ``max_rows``."""
    cursor = conn.execute(
        "INSERT INTO quarantine (provider, received_at, reason, message, headers, sha256, body)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (provider, now, reason, message, _dumps(headers), hashlib.sha256(body).hexdigest(), body),
    )
    new_id = cursor.lastrowid
    dropped = conn.execute("DELETE FROM quarantine WHERE id <= ?", (new_id - max_rows,)).rowcount
    if dropped:
        bump_counter(conn, "quarantine_dropped", dropped)
    return new_id


def discard_quarantined(conn: sqlite3.Connection, quarantine_id: int) -> bool:
    """Drop one quarantined delivery for good; true when it was there."""
    return conn.execute("DELETE FROM quarantine WHERE id = ?", (quarantine_id,)).rowcount == 1


def bump_counter(conn: sqlite3.Connection, name: str, by: int = 1) -> None:
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE"
        " SET value = CAST(CAST(value AS INTEGER) + ? AS TEXT)",
        (f"counter.{name}", str(by), by),
    )


def set_value(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?, ?)"
        " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def ensure_secret(conn: sqlite3.Connection, name: str) -> tuple[str, bool]:
    """The stored secret ``name``, generated now if there is none; (value, generated)."""
    row = conn.execute("SELECT value FROM settings WHERE key = ?", (f"secret.{name}",)).fetchone()
    if row is not None:
        return row[0], False
    value = secrets.token_urlsafe(32)
    conn.execute("INSERT INTO settings (key, value) VALUES (?, ?)", (f"secret.{name}", value))
    return value, True


def take_lease(conn: sqlite3.Connection, name: str, holder: str, ttl: float, now: float) -> bool:
    """Take or renew the lease ``name``; true when ``holder`` holds it afterwards."""
    conn.execute(
        "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)"
        " ON CONFLICT(name) DO UPDATE SET holder = excluded.holder,"
        " expires_at = excluded.expires_at"
        " WHERE leases.holder = excluded.holder OR leases.expires_at < ?",
        (name, holder, now + ttl, now),
    )
    row = conn.execute("SELECT holder FROM leases WHERE name = ?", (name,)).fetchone()
    return row is not None and row[0] == holder


def release_lease(conn: sqlite3.Connection, name: str, holder: str) -> None:
    conn.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))


def heartbeat(conn: sqlite3.Connection, now: float) -> None:
    """A real write, for health checks: proves the database takes writes."""
    set_value(conn, "heartbeat", repr(now))
