"""Write statements both SQL backends run as they are, written once, and their parameters.

The text uses ``?`` placeholders (SQLite's); the PostgreSQL backend turns it
into ``%s`` with ``server.store.postgres.connection.pyformat``. What differs
between the backends (locks, ``RETURNING``, how a claim is picked) stays in
each backend's module; what is here means the same on both.
"""

from __future__ import annotations

import hashlib
from typing import Any

from server.store.records import ArchiveJob, SubmitStart
from server.store.rows import SUBMIT_COLUMNS

# -- the archive queue -----------------------------------------------------------------

#: A copy recorded, while its holder still holds the claim.
FINISH_ARCHIVE = (
    "UPDATE archives SET status = 'done', sha256 = ?, bytes = ?, content_type = ?,"
    " error = NULL, message = NULL, claimed_by = NULL, claimed_until = NULL,"
    " updated_at = ? WHERE task_key = ? AND url = ? AND claimed_by = ?"
)


def finish_archive(
    job: ArchiveJob, holder: str, sha256: str, size: int, content_type: str, now: float
) -> tuple[Any, ...]:
    """The parameters of ``FINISH_ARCHIVE``."""
    return (sha256, size, content_type, now, job.task_key, job.url, holder)


#: A failed attempt recorded: pending again, or failed for good.
FAIL_ARCHIVE = (
    "UPDATE archives SET status = ?, error = ?, message = ?, attempts = attempts + 1,"
    " next_attempt_at = COALESCE(?, next_attempt_at), claimed_by = NULL,"
    " claimed_until = NULL, updated_at = ? WHERE task_key = ? AND url = ? AND claimed_by = ?"
)


def fail_archive(
    job: ArchiveJob, holder: str, error: str, message: str, retry_at: float | None, now: float
) -> tuple[Any, ...]:
    """The parameters of ``FAIL_ARCHIVE``: failed for good when ``retry_at`` is None."""
    status = "failed" if retry_at is None else "pending"
    return (status, error, message, retry_at, now, job.task_key, job.url, holder)


#: The rows a holder is running, given back (due again at once): (now, now, holder).
RELEASE_ARCHIVES = (
    "UPDATE archives SET status = 'pending', claimed_by = NULL, claimed_until = NULL,"
    " next_attempt_at = ?, updated_at = ? WHERE status = 'running' AND claimed_by = ?"
)

#: How many copies of a task are not settled yet (neither done nor failed for good).
UNSETTLED_COPIES = (
    "SELECT count(*) FROM archives WHERE task_key = ? AND status NOT IN ('done', 'failed')"
)

# -- the quarantine --------------------------------------------------------------------

#: A delivery kept but not merged; ``new_quarantine`` gives its parameters.
INSERT_QUARANTINE = (
    "INSERT INTO quarantine (provider, received_at, reason, message, headers, sha256, body)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def new_quarantine(
    provider: str, body: bytes, headers: str, reason: str, message: str, now: float
) -> tuple[Any, ...]:
    """The parameters of ``INSERT_QUARANTINE`` (``headers``: JSON text, as the backend writes)."""
    return (provider, now, reason, message, headers, hashlib.sha256(body).hexdigest(), body)


# -- submits ---------------------------------------------------------------------------

#: Old records dropped by one ``begin_submit`` at most (the rest go with the next ones).
FORGET_BATCH = 100

#: Old records that hold no key, dropped: ``forget_submits`` gives the parameters.
FORGET_SUBMITS = (
    "DELETE FROM submits WHERE id IN (SELECT id FROM submits WHERE created_at < ?"
    " AND (key_held_until IS NULL OR key_held_until <= ?) ORDER BY id LIMIT ?)"
)


def forget_submits(start: SubmitStart, now: float) -> tuple[Any, ...]:
    """The parameters of ``FORGET_SUBMITS``."""
    return (start.forget_before, now, FORGET_BATCH)


#: A key whose hold ran out, let go: (key, now).
LET_GO_OF_KEY = (
    "UPDATE submits SET key_held_until = NULL WHERE idempotency_key = ? AND key_held_until <= ?"
)

#: The record holding a key now: (key,).
HOLDER_OF_KEY = (
    f"SELECT {SUBMIT_COLUMNS} FROM submits WHERE idempotency_key = ? AND key_held_until IS NOT NULL"
)

#: A new record; ``new_submit`` gives its parameters.
INSERT_SUBMIT = (
    "INSERT INTO submits (provider, idempotency_key, fingerprint, status, body, created_at,"
    " lapses_at, key_held_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def new_submit(start: SubmitStart, now: float) -> tuple[Any, ...]:
    """The parameters of ``INSERT_SUBMIT``: unanswered, holding its key (if any) from now."""
    return (
        start.provider,
        start.key,
        start.fingerprint,
        start.status,
        start.body,
        now,
        now + start.lapse_after,
        now + start.hold_for if start.key is not None else None,
    )


#: A record answered; a record that no longer holds its key does not take it back.
FINISH_SUBMIT = (
    "UPDATE submits SET answered = ?, status = ?, body = ?, task_id = ?, trace_id = ?,"
    " answered_at = ?, key_held_until = CASE WHEN key_held_until IS NULL OR ? THEN NULL"
    " ELSE ? END WHERE id = ?"
)


def finish_submit(
    submit_id: int,
    status: int,
    body: str,
    task_id: str | None,
    trace_id: str | None,
    hold_for: float | None,
    now: float,
) -> tuple[Any, ...]:
    """The parameters of ``FINISH_SUBMIT``: let go of the key when ``hold_for`` is None."""
    let_go = hold_for is None
    return (True, status, body, task_id, trace_id, now, let_go, now + (hold_for or 0), submit_id)
