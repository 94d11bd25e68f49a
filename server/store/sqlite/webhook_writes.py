"""Webhook writes on SQLite: each function runs inside one writer transaction.

One writer thread commits everything, so each function sees and changes the
database alone: fan-out, claims and settling are exact across the processes
sharing the file (``BEGIN IMMEDIATE`` serialises them).

A message's ``head`` is 1 for the earliest pending message of its (endpoint,
task) and 0 for the others: ``_promote`` keeps that true after every change
of a message's status, so a claim only ever looks at heads.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from server.delivery.schedule import LOST_ATTEMPT, Next, Outcome, disable_reason
from server.store.webhooks import (
    Attempt,
    Claim,
    Claims,
    Endpoint,
    Redelivery,
    Settled,
    take_turns,
)

ENDPOINT_COLUMNS = (
    "id, url, events, description, secret, previous_secret, previous_until,"
    " created_at, disabled_at, disabled_reason, failing_since"
)
ATTEMPT_COLUMNS = (
    "id, event_id, attempt, attempted_at, outcome, response_status, duration_ms, response, error"
)
#: Events turned into messages per endpoint per fan-out (the rest next time).
FAN_OUT_BATCH = 2000


def endpoint_row(row: Sequence[Any]) -> Endpoint:
    """An ``Endpoint`` from a row selected as ``ENDPOINT_COLUMNS``."""
    ident, url, events, description, secret, previous, until, created, disabled, reason, failing = (
        row
    )
    return Endpoint(
        id=ident,
        url=url,
        events=tuple(json.loads(events)) if events is not None else None,
        description=description,
        created_at=created,
        disabled_at=disabled,
        disabled_reason=reason,
        failing_since=failing,
        secret=secret,
        previous_secret=previous,
        previous_until=until,
    )


def attempt_row(row: Sequence[Any]) -> tuple[int, Attempt]:
    """(row id, attempt) of a row selected as ``ATTEMPT_COLUMNS``."""
    ident, event_id, number, at, outcome, status, duration, response, error = row
    return ident, Attempt(event_id, number, at, outcome, status, duration, response, error)


def feed_end(conn: sqlite3.Connection) -> int:
    """The seq of the last event ever committed (0: none yet); pruning does not lower it."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    return int(row[0]) if row else 0


# -- endpoints ---------------------------------------------------------------------------


def create_endpoint(
    conn: sqlite3.Connection,
    ident: str,
    url: str,
    events: Sequence[str] | None,
    description: str | None,
    secret: str,
    now: float,
) -> Endpoint:
    conn.execute(
        "INSERT INTO endpoints (id, url, events, description, secret, created_at, position)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            ident,
            url,
            json.dumps(list(events)) if events is not None else None,
            description,
            secret,
            now,
            feed_end(conn),
        ),
    )
    found = get_endpoint(conn, ident)
    assert found is not None
    return found


def get_endpoint(conn: sqlite3.Connection, ident: str) -> Endpoint | None:
    row = conn.execute(
        f"SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id = ?", (ident,)
    ).fetchone()
    return endpoint_row(row) if row else None


def delete_endpoint(conn: sqlite3.Connection, ident: str) -> bool:
    conn.execute("DELETE FROM attempts WHERE endpoint_id = ?", (ident,))
    conn.execute("DELETE FROM messages WHERE endpoint_id = ?", (ident,))
    return conn.execute("DELETE FROM endpoints WHERE id = ?", (ident,)).rowcount > 0


def rotate_secret(
    conn: sqlite3.Connection, ident: str, secret: str, overlap: float, now: float
) -> Endpoint | None:
    conn.execute(
        "UPDATE endpoints SET previous_secret = secret, previous_until = ?, secret = ?"
        " WHERE id = ?",
        (now + overlap, secret, ident),
    )
    return get_endpoint(conn, ident)


def enable_endpoint(conn: sqlite3.Connection, ident: str) -> Endpoint | None:
    conn.execute(
        "UPDATE endpoints SET disabled_at = NULL, disabled_reason = NULL, failing_since = NULL,"
        " position = ? WHERE id = ? AND disabled_at IS NOT NULL",
        (feed_end(conn), ident),
    )
    return get_endpoint(conn, ident)


def disable_endpoint(
    conn: sqlite3.Connection, ident: str, reason: str, first_delay: float, now: float
) -> None:
    """Disable: first turn the events committed until now into its messages, then fail
    every pending one nobody is sending (so ``recover`` can send them later)."""
    fan_out(conn, first_delay, [ident])
    conn.execute(
        "UPDATE endpoints SET disabled_at = ?, disabled_reason = ? WHERE id = ?"
        " AND disabled_at IS NULL",
        (now, reason, ident),
    )
    rows = conn.execute(
        "SELECT id, task_key FROM messages WHERE endpoint_id = ? AND status = 'pending'"
        " AND (claimed_until IS NULL OR claimed_until <= ?)",
        (ident, now),
    ).fetchall()
    conn.execute(
        "UPDATE messages SET status = 'failed', head = 0, next_attempt_at = NULL, manual = 0,"
        " resume_at = NULL, claimed_by = NULL, claim = NULL, claimed_until = NULL,"
        " finished_at = ? WHERE endpoint_id = ? AND status = 'pending'"
        " AND (claimed_until IS NULL OR claimed_until <= ?)",
        (now, ident, now),
    )
    for key in {r[1] for r in rows}:
        _promote(conn, ident, key)


# -- fan-out and heads -------------------------------------------------------------------


def fan_out(
    conn: sqlite3.Connection, first_delay: float, endpoint_ids: Sequence[str] | None = None
) -> int:
    """Turn the events after each enabled endpoint's position into messages; how many.

    Idempotent (``UNIQUE (event_id, endpoint_id)``); each endpoint's position
    moves in the same transaction as its new messages.
    """
    end = feed_end(conn)
    where = "disabled_at IS NULL AND position < ?"
    params: list[Any] = [end]
    if endpoint_ids is not None:
        where += f" AND id IN ({','.join('?' * len(endpoint_ids))})"
        params.extend(endpoint_ids)
    made = 0
    for ident, position, events in conn.execute(
        f"SELECT id, position, events FROM endpoints WHERE {where}", params
    ).fetchall():
        upto = min(end, position + FAN_OUT_BATCH)
        types = json.loads(events) if events is not None else None
        type_clause = f" AND type IN ({','.join('?' * len(types))})" if types else ""
        made += conn.execute(
            "INSERT OR IGNORE INTO messages (endpoint_id, event_seq, event_id, task_key,"
            " committed_at, status, next_attempt_at)"
            " SELECT ?, seq, id, task_key, created_at, 'pending', created_at + ?"
            f" FROM events WHERE seq > ? AND seq <= ?{type_clause}",
            [ident, first_delay, position, upto, *(types or ())],
        ).rowcount
        # The new messages that have no pending predecessor of their task are heads.
        conn.execute(
            "UPDATE messages SET head = 1 WHERE endpoint_id = ? AND status = 'pending'"
            " AND event_seq > ? AND event_seq <= ? AND NOT EXISTS (SELECT 1 FROM messages p"
            "  WHERE p.endpoint_id = messages.endpoint_id AND p.task_key = messages.task_key"
            "  AND p.status = 'pending' AND p.event_seq < messages.event_seq)",
            (ident, position, upto),
        )
        conn.execute("UPDATE endpoints SET position = ? WHERE id = ?", (upto, ident))
    return made


def _promote(conn: sqlite3.Connection, endpoint_id: str, key: str) -> None:
    """Make one pending message of (endpoint, task) its only head: the one being sent, if
    any (so a redelivered earlier event never runs beside it), else the earliest."""
    rows = conn.execute(
        "SELECT id, claim FROM messages WHERE endpoint_id = ? AND task_key = ?"
        " AND status = 'pending' ORDER BY event_seq",
        (endpoint_id, key),
    ).fetchall()
    if not rows:
        return
    claimed = [ident for ident, token in rows if token is not None]
    head = claimed[0] if claimed else rows[0][0]
    conn.execute(
        "UPDATE messages SET head = (id = ?) WHERE endpoint_id = ? AND task_key = ?"
        " AND status = 'pending' AND head != (id = ?)",
        (head, endpoint_id, key, head),
    )


# -- claiming and settling ---------------------------------------------------------------

MESSAGE_COLUMNS = (
    "m.id, m.endpoint_id, m.event_seq, m.event_id, m.task_key, m.committed_at, m.attempts,"
    " m.scheduled, m.manual, m.resume_at, m.claim"
)


def claim(
    conn: sqlite3.Connection,
    holder: str,
    limit: int,
    per_endpoint: int,
    lease: float,
    first_delay: float,
    now: float,
    *,
    token: Callable[[], str] = lambda: secrets.token_hex(8),
) -> Claims:
    """Fan out, then claim up to ``limit`` due heads, endpoints taking turns."""
    fan_out(conn, first_delay)
    live = dict(
        conn.execute(
            "SELECT endpoint_id, count(*) FROM messages WHERE claim IS NOT NULL"
            " AND claimed_until > ? GROUP BY endpoint_id",
            (now,),
        ).fetchall()
    )
    endpoints = [
        endpoint_row(r)
        for r in conn.execute(
            f"SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE disabled_at IS NULL"
            " ORDER BY created_at"
        ).fetchall()
    ]
    queues: list[tuple[Endpoint, list[Any]]] = []
    for endpoint in endpoints:
        free = min(limit, per_endpoint - live.get(endpoint.id, 0))
        if free <= 0:
            continue
        rows = conn.execute(
            f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.endpoint_id = ?"
            " AND m.status = 'pending' AND m.head = 1 AND m.next_attempt_at <= ?"
            " AND (m.claimed_until IS NULL OR m.claimed_until <= ?)"
            " ORDER BY m.next_attempt_at LIMIT ?",
            (endpoint.id, now, now, free),
        ).fetchall()
        if rows:
            queues.append((endpoint, rows))
    picked = take_turns(queues, limit)
    items = []
    for endpoint, row in picked:
        item = _claim_one(conn, endpoint, row, holder, token(), lease, first_delay, now)
        if item is not None:
            items.append(item)
    return Claims(items, next_due(conn, now))


def _claim_one(
    conn: sqlite3.Connection,
    endpoint: Endpoint,
    row: Sequence[Any],
    holder: str,
    token: str,
    lease: float,
    first_delay: float,
    now: float,
) -> Claim | None:
    ident, endpoint_id, seq, event_id, key, committed, attempts, scheduled, manual = row[:9]
    resume_at, lapsed = row[9], row[10]
    if lapsed is not None:  # the last holder died mid-attempt: record what we know of it
        conn.execute(
            "INSERT INTO attempts (endpoint_id, message_id, event_id, attempt, attempted_at,"
            " outcome, error) VALUES (?, ?, ?, ?, ?, 'retrying', ?)",
            (endpoint_id, ident, event_id, attempts, now, LOST_ATTEMPT),
        )
    event = conn.execute("SELECT type, body FROM events WHERE seq = ?", (seq,)).fetchone()
    if event is None:  # pruned by EVENT_RETENTION before it could be delivered
        conn.execute("UPDATE messages SET attempts = attempts + 1 WHERE id = ?", (ident,))
        _settle(conn, ident, endpoint_id, key, "failed", None, scheduled, now)
        conn.execute(
            "INSERT INTO attempts (endpoint_id, message_id, event_id, attempt, attempted_at,"
            " outcome, error) VALUES (?, ?, ?, ?, ?, 'failed', ?)",
            (endpoint_id, ident, event_id, attempts + 1, now, "the event is no longer kept"),
        )
        return None
    conn.execute(
        "UPDATE messages SET claimed_by = ?, claim = ?, claimed_until = ?,"
        " attempts = attempts + 1 WHERE id = ?",
        (holder, token, now + lease, ident),
    )
    return Claim(
        message_id=ident,
        token=token,
        endpoint_id=endpoint_id,
        url=endpoint.url,
        secrets=endpoint.signing_secrets(now),
        event_id=event_id,
        event_type=event[0],
        task_key=key,
        body=event[1],
        committed_at=committed,
        attempt=attempts + 1,
        scheduled=scheduled,
        manual=bool(manual),
        resume_at=resume_at,
    )


def next_due(conn: sqlite3.Connection, now: float) -> float | None:
    """The earliest due time after ``now`` of any head (a hint for when to look again)."""
    row = conn.execute(
        "SELECT min(next_attempt_at) FROM messages WHERE status = 'pending' AND head = 1"
        " AND next_attempt_at > ?",
        (now,),
    ).fetchone()
    return float(row[0]) if row and row[0] is not None else None


def _settle(
    conn: sqlite3.Connection,
    ident: int,
    endpoint_id: str,
    key: str,
    status: str,
    next_attempt_at: float | None,
    scheduled: int,
    now: float,
) -> None:
    conn.execute(
        "UPDATE messages SET status = ?, next_attempt_at = ?, scheduled = ?, manual = 0,"
        " resume_at = NULL, claimed_by = NULL, claim = NULL, claimed_until = NULL,"
        " head = CASE WHEN ? = 'pending' THEN head ELSE 0 END,"
        " finished_at = CASE WHEN ? = 'pending' THEN NULL ELSE ? END WHERE id = ?",
        (status, next_attempt_at, scheduled, status, status, now, ident),
    )
    _promote(conn, endpoint_id, key)


def finish(
    conn: sqlite3.Connection,
    item: Claim,
    attempt: Attempt,
    nxt: Next,
    disable_after: float,
    first_delay: float,
    now: float,
) -> Settled:
    """Record the attempt; move the message if ``item`` still holds it (see the contract)."""
    row = conn.execute("SELECT claim FROM messages WHERE id = ?", (item.message_id,)).fetchone()
    endpoint = get_endpoint(conn, item.endpoint_id)
    if endpoint is None:  # deleted meanwhile, with its messages and attempts
        return Settled(False, attempt.outcome)
    owned = row is not None and row[0] == item.token
    outcome: Outcome = attempt.outcome
    disabled: str | None = None
    if owned:
        status, next_at = nxt.status, nxt.next_attempt_at
        if outcome == "delivered":
            if endpoint.failing_since is not None:
                conn.execute(
                    "UPDATE endpoints SET failing_since = NULL WHERE id = ?", (endpoint.id,)
                )
        else:
            failing_since = endpoint.failing_since if endpoint.failing_since is not None else now
            if endpoint.failing_since is None:
                conn.execute(
                    "UPDATE endpoints SET failing_since = ? WHERE id = ?",
                    (failing_since, endpoint.id),
                )
            if not endpoint.disabled:
                disabled = nxt.disable or disable_reason(failing_since, now, disable_after)
            if status == "pending" and (endpoint.disabled or disabled is not None):
                status, next_at, outcome = "failed", None, "failed"
        _settle(
            conn,
            item.message_id,
            item.endpoint_id,
            item.task_key,
            status,
            next_at,
            nxt.scheduled,
            now,
        )
    conn.execute(
        "INSERT INTO attempts (endpoint_id, message_id, event_id, attempt, attempted_at,"
        " outcome, response_status, duration_ms, response, error)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            item.endpoint_id,
            item.message_id,
            attempt.event_id,
            attempt.attempt,
            attempt.attempted_at,
            outcome,
            attempt.response_status,
            attempt.duration_ms,
            attempt.response,
            attempt.error,
        ),
    )
    if disabled is not None:
        disable_endpoint(conn, item.endpoint_id, disabled, first_delay, now)
    return Settled(owned, outcome, disabled)


def release(conn: sqlite3.Connection, holder: str) -> int:
    """Give back ``holder``'s claims; their attempt numbers are reused (nothing was recorded)."""
    return conn.execute(
        "UPDATE messages SET claimed_by = NULL, claim = NULL, claimed_until = NULL,"
        " attempts = attempts - 1 WHERE claimed_by = ? AND claim IS NOT NULL",
        (holder,),
    ).rowcount


# -- redelivery --------------------------------------------------------------------------


def _requeue(conn: sqlite3.Connection, ident: int, now: float) -> None:
    """One more attempt of a message, due now and outside its schedule."""
    conn.execute(
        "UPDATE messages SET"
        " resume_at = CASE WHEN status = 'pending' AND manual = 0 THEN next_attempt_at"
        "  ELSE resume_at END,"
        " status = 'pending', manual = 1, next_attempt_at = ?, finished_at = NULL"
        " WHERE id = ?",
        (now, ident),
    )


def redeliver(
    conn: sqlite3.Connection, event_id: str, endpoint_id: str | None, now: float
) -> Redelivery | None:
    event = conn.execute(
        "SELECT seq, type, task_key, created_at FROM events WHERE id = ?", (event_id,)
    ).fetchone()
    if event is None:
        return None
    seq, event_type, key, committed = event
    where, params = "1", []
    if endpoint_id is not None:
        target = get_endpoint(conn, endpoint_id)
        if target is None or target.disabled or not target.subscribes(event_type):
            return Redelivery(event_type, [])
        conn.execute(
            "INSERT OR IGNORE INTO messages (endpoint_id, event_seq, event_id, task_key,"
            " committed_at, status, next_attempt_at, finished_at)"
            " VALUES (?, ?, ?, ?, ?, 'failed', NULL, ?)",
            (endpoint_id, seq, event_id, key, committed, now),
        )
        where, params = "m.endpoint_id = ?", [endpoint_id]
    rows = conn.execute(
        "SELECT m.id, m.endpoint_id FROM messages m JOIN endpoints e ON e.id = m.endpoint_id"
        f" WHERE m.event_id = ? AND e.disabled_at IS NULL AND {where}",
        [event_id, *params],
    ).fetchall()
    for ident, target_id in rows:
        _requeue(conn, ident, now)
        _promote(conn, target_id, key)
    return Redelivery(event_type, sorted(r[1] for r in rows))


def recover(conn: sqlite3.Connection, endpoint_id: str, since: float, now: float) -> int:
    rows = conn.execute(
        "SELECT id, task_key FROM messages WHERE endpoint_id = ? AND status = 'failed'"
        " AND committed_at >= ?",
        (endpoint_id, since),
    ).fetchall()
    for ident, _ in rows:
        _requeue(conn, ident, now)
    for key in {r[1] for r in rows}:
        _promote(conn, endpoint_id, key)
    return len(rows)


# -- retention ---------------------------------------------------------------------------


def prune(conn: sqlite3.Connection, before: float, limit: int) -> int:
    """Drop up to ``limit`` attempts and ``limit`` finished messages older than ``before``."""
    dropped = conn.execute(
        "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts WHERE attempted_at < ? LIMIT ?)",
        (before, limit),
    ).rowcount
    dropped += conn.execute(
        "DELETE FROM messages WHERE id IN (SELECT id FROM messages"
        " WHERE status != 'pending' AND finished_at < ? LIMIT ?)",
        (before, limit),
    ).rowcount
    return dropped
