"""Write transactions of the archive queue: one row per (task, result URL) to copy.

Like ``writes.py``, plain synchronous functions run on the writer thread.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from server.core.codec import state_from_dict
from server.core.decide import ARCHIVED
from server.core.expiry import url_expiry
from server.core.types import Status
from server.store import statements
from server.store.base import ArchiveJob
from server.store.rows import TASK_COLUMNS, task_record
from server.store.sqlite.events import add_events


def enqueue_archives(
    conn: sqlite3.Connection,
    key: str,
    urls: Iterable[str],
    now: float,
    finished: float | None = None,
) -> int:
    """One pending row per URL not queued yet for this task; returns how many were added.

    URLs that do not say when they expire count from ``finished`` (default: now).
    """
    added = 0
    for url in dict.fromkeys(urls):
        added += conn.execute(
            "INSERT OR IGNORE INTO archives (task_key, url, status, next_attempt_at,"
            " expires_at, created_at, updated_at) VALUES (?, ?, 'pending', ?, ?, ?, ?)",
            (key, url, now, url_expiry(url, now if finished is None else finished), now, now),
        ).rowcount
    return added


def enqueue_missing_archives(conn: sqlite3.Connection, now: float) -> int:
    """Queue every result of every succeeded task that has no archive row yet.

    For a database that ran with ARCHIVE=off: URLs count from the task's
    completion when they do not say when they expire.
    """
    added = 0
    rows = conn.execute(
        "SELECT key, state, completed_at FROM tasks WHERE status = ?", (Status.SUCCEEDED.value,)
    ).fetchall()
    for key, encoded, completed_at in rows:
        state = state_from_dict(json.loads(encoded))
        added += enqueue_archives(conn, key, (r.url for r in state.results), now, completed_at)
    return added


def claim_archives(
    conn: sqlite3.Connection,
    holder: str,
    now: float,
    limit: int,
    lease: float,
    due_by: float | None = None,
) -> list[ArchiveJob]:
    """Mark up to ``limit`` rows due by ``due_by`` (default now) as running for ``holder``.

    Taken inside the writer's write transaction, so two processes never claim
    the same row; a row whose claim lapsed (its holder died) is due again.
    """
    rows = conn.execute(
        "SELECT task_key, url, attempts, expires_at FROM archives"
        " WHERE (status = 'pending' AND next_attempt_at <= :due)"
        " OR (status = 'running' AND claimed_until < :now)"
        " ORDER BY next_attempt_at LIMIT :limit",
        {"now": now, "due": now if due_by is None else due_by, "limit": limit},
    ).fetchall()
    for key, url, _attempts, _expires in rows:
        conn.execute(
            "UPDATE archives SET status = 'running', claimed_by = ?, claimed_until = ?,"
            " updated_at = ? WHERE task_key = ? AND url = ?",
            (holder, now + lease, now, key, url),
        )
    return [ArchiveJob(*row) for row in rows]


def settle(
    conn: sqlite3.Connection, key: str, statement: str, params: Any, now: float, final: bool
) -> tuple[str, ...]:
    """Settle one copy of task ``key`` (``statement``: ``FINISH_ARCHIVE`` or ``FAIL_ARCHIVE``,
    guarded by the claim); when ``final`` and it was the last copy, ``task.archived``: its ids."""
    if conn.execute(statement, params).rowcount != 1 or not final:
        return ()
    return _archived_event(conn, key, now)


def _archived_event(conn: sqlite3.Connection, key: str, now: float) -> tuple[str, ...]:
    """``task.archived`` once every copy of the task is done or failed for good."""
    unsettled = conn.execute(statements.UNSETTLED_COPIES, (key,)).fetchone()[0]
    if unsettled:
        return ()
    row = conn.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE key = ?", (key,)).fetchone()
    if row is None:
        return ()
    return add_events(conn, key, task_record(row), [ARCHIVED], now)


def reschedule_archives(conn: sqlite3.Connection, now: float, include_failed: bool) -> int:
    """Make every pending row due now (and failed ones pending again, if asked)."""
    statuses = ("pending", "failed") if include_failed else ("pending",)
    return conn.execute(
        "UPDATE archives SET status = 'pending', next_attempt_at = ?, updated_at = ?"
        f" WHERE status IN ({', '.join('?' * len(statuses))})",
        (now, now, *statuses),
    ).rowcount


def release_archives(conn: sqlite3.Connection, holder: str, now: float) -> int:
    """Give back the rows ``holder`` is running (on shutdown): due again at once."""
    return conn.execute(statements.RELEASE_ARCHIVES, (now, now, holder)).rowcount


def renew_claims(conn: sqlite3.Connection, holder: str, lease: float, now: float) -> int:
    """Extend every claim ``holder`` has to ``now + lease``; how many."""
    return conn.execute(
        "UPDATE archives SET claimed_until = ? WHERE status = 'running' AND claimed_by = ?",
        (now + lease, holder),
    ).rowcount
