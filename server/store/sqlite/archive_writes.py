"""Write transactions of the archive queue: one row per (task, result URL) to copy.

Like ``writes.py``, plain synchronous functions run on the writer thread.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from server.archive.download import url_expiry
from server.core.codec import state_from_dict
from server.core.decide import ARCHIVED
from server.core.types import Status
from server.store.base import ArchiveJob
from server.store.rows import TASK_COLUMNS, task_record
from server.store.sqlite.events import add_events


def enqueue_archives(conn: sqlite3.Connection, key: str, urls: Sequence[str], now: float) -> int:
    """One pending row per URL not queued yet for this task; returns how many were added."""
    added = 0
    for url in dict.fromkeys(urls):
        added += conn.execute(
            "INSERT OR IGNORE INTO archives (task_key, url, status, next_attempt_at,"
            " expires_at, created_at, updated_at) VALUES (?, ?, 'pending', ?, ?, ?, ?)",
            (key, url, now, url_expiry(url, now), now, now),
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
        finished = completed_at if completed_at is not None else now
        for url in dict.fromkeys(r.url for r in state.results):
            added += conn.execute(
                "INSERT OR IGNORE INTO archives (task_key, url, status, next_attempt_at,"
                " expires_at, created_at, updated_at) VALUES (?, ?, 'pending', ?, ?, ?, ?)",
                (key, url, now, url_expiry(url, finished), now, now),
            ).rowcount
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


def finish_archive(
    conn: sqlite3.Connection,
    job: ArchiveJob,
    holder: str,
    sha256: str,
    size: int,
    content_type: str,
    now: float,
) -> tuple[str, ...]:
    """Record a copy while ``holder`` holds the claim; the ``task.archived`` event ids."""
    updated = conn.execute(
        "UPDATE archives SET status = 'done', sha256 = ?, bytes = ?, content_type = ?,"
        " error = NULL, message = NULL, claimed_by = NULL, claimed_until = NULL,"
        " updated_at = ? WHERE task_key = ? AND url = ? AND claimed_by = ?",
        (sha256, size, content_type, now, job.task_key, job.url, holder),
    ).rowcount
    return _archived_event(conn, job.task_key, now) if updated else ()


def fail_archive(
    conn: sqlite3.Connection,
    job: ArchiveJob,
    holder: str,
    error: str,
    message: str,
    now: float,
    retry_at: float | None,
) -> tuple[str, ...]:
    """Record a failed attempt: pending again at ``retry_at``, or failed for good (None).

    Returns the ids of the ``task.archived`` event a final failure may settle.
    """
    updated = conn.execute(
        "UPDATE archives SET status = ?, error = ?, message = ?, attempts = attempts + 1,"
        " next_attempt_at = COALESCE(?, next_attempt_at), claimed_by = NULL,"
        " claimed_until = NULL, updated_at = ? WHERE task_key = ? AND url = ? AND claimed_by = ?",
        (
            "failed" if retry_at is None else "pending",
            error,
            message,
            retry_at,
            now,
            job.task_key,
            job.url,
            holder,
        ),
    ).rowcount
    if not updated or retry_at is not None:
        return ()
    return _archived_event(conn, job.task_key, now)


def _archived_event(conn: sqlite3.Connection, key: str, now: float) -> tuple[str, ...]:
    """``task.archived`` once every copy of the task is done or failed for good."""
    unsettled = conn.execute(
        "SELECT count(*) FROM archives WHERE task_key = ? AND status NOT IN ('done', 'failed')",
        (key,),
    ).fetchone()[0]
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
    return conn.execute(
        "UPDATE archives SET status = 'pending', claimed_by = NULL, claimed_until = NULL,"
        " next_attempt_at = ?, updated_at = ? WHERE status = 'running' AND claimed_by = ?",
        (now, now, holder),
    ).rowcount


def renew_claims(conn: sqlite3.Connection, holder: str, lease: float, now: float) -> int:
    """Extend every claim ``holder`` has to ``now + lease``; how many."""
    return conn.execute(
        "UPDATE archives SET claimed_until = ? WHERE status = 'running' AND claimed_by = ?",
        (now + lease, holder),
    ).rowcount
