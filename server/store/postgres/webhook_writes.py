"""Webhook writes on PostgreSQL: endpoints, fan-out, claims, settling, redelivery.

Several replicas run these at once. Every transaction that changes an
endpoint's messages first locks the endpoint's row (``FOR UPDATE``), so the
messages of one endpoint change one transaction at a time, whichever replica
runs it: fan-out positions, heads (one per endpoint and task), the live-claim
bound and settling stay exact without any other lock (the transactions are
short: a claim waits for another replica's claim or settle of the same
endpoint, never for an attempt in flight). Transactions that lock several
endpoints take them in id order, so they cannot deadlock.

Claim leases run on the database server's clock, so replicas whose clocks
disagree still agree on when a claim lapsed. Policy (what an answer means,
when an endpoint is disabled, the reason it records) comes from
``server.delivery.schedule``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any

import psycopg

from server.delivery.schedule import LOST_ATTEMPT, Next, Outcome, disable_reason
from server.store.postgres.values import DB_NOW
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
MESSAGE_COLUMNS = (
    "id, endpoint_id, event_seq, event_id, task_key, committed_at, attempts, scheduled,"
    " manual, resume_at, claim"
)
#: Events turned into messages per endpoint per fan-out (the rest next time).
FAN_OUT_BATCH = 2000

Conn = psycopg.AsyncConnection


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


async def _one(conn: Conn, sql: str, params: Any = ()) -> tuple[Any, ...] | None:
    return await (await conn.execute(sql, params)).fetchone()


async def _all(conn: Conn, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    return await (await conn.execute(sql, params)).fetchall()


async def _db_now(conn: Conn) -> float:
    row = await _one(conn, f"SELECT {DB_NOW}")
    assert row is not None
    return float(row[0])


async def feed_end(conn: Conn) -> int:
    """The seq of the last event committed (0: none yet); pruning does not lower it.

    ``event_counter`` moves in the transaction that commits the events, so
    every event up to what a statement reads here is committed and visible.
    """
    row = await _one(conn, "SELECT seq FROM event_counter")
    return int(row[0]) if row else 0


async def lock_endpoint(conn: Conn, ident: str) -> Endpoint | None:
    """Lock the endpoint's row for the transaction; the endpoint, or None."""
    row = await _one(
        conn, f"SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id = %s FOR UPDATE", (ident,)
    )
    return endpoint_row(row) if row else None


async def get_endpoint(conn: Conn, ident: str) -> Endpoint | None:
    row = await _one(conn, f"SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id = %s", (ident,))
    return endpoint_row(row) if row else None


# -- endpoints ---------------------------------------------------------------------------


async def create_endpoint(
    conn: Conn,
    ident: str,
    url: str,
    events: Sequence[str] | None,
    description: str | None,
    secret: str,
    now: float,
) -> Endpoint:
    await conn.execute(
        "INSERT INTO endpoints (id, url, events, description, secret, created_at, position)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (
            ident,
            url,
            json.dumps(list(events)) if events is not None else None,
            description,
            secret,
            now,
            await feed_end(conn),
        ),
    )
    found = await get_endpoint(conn, ident)
    assert found is not None
    return found


async def delete_endpoint(conn: Conn, ident: str) -> bool:
    if await lock_endpoint(conn, ident) is None:
        return False
    await conn.execute("DELETE FROM attempts WHERE endpoint_id = %s", (ident,))
    await conn.execute("DELETE FROM messages WHERE endpoint_id = %s", (ident,))
    await conn.execute("DELETE FROM endpoints WHERE id = %s", (ident,))
    return True


async def rotate_secret(
    conn: Conn, ident: str, secret: str, overlap: float, now: float
) -> Endpoint | None:
    await conn.execute(
        "UPDATE endpoints SET previous_secret = secret, previous_until = %s, secret = %s"
        " WHERE id = %s",
        (now + overlap, secret, ident),
    )
    return await get_endpoint(conn, ident)


async def enable_endpoint(conn: Conn, ident: str) -> Endpoint | None:
    endpoint = await lock_endpoint(conn, ident)
    if endpoint is None or not endpoint.disabled:
        return endpoint
    await conn.execute(
        "UPDATE endpoints SET disabled_at = NULL, disabled_reason = NULL, failing_since = NULL,"
        " position = %s WHERE id = %s",
        (await feed_end(conn), ident),
    )
    return await get_endpoint(conn, ident)


async def _disable(
    conn: Conn, ident: str, reason: str, first_delay: float, now: float, db_now: float
) -> None:
    """Disable (its row is locked): first turn the events committed until now into its
    messages, then fail every pending one nobody is sending (``recover`` can send them)."""
    await fan_out(conn, [ident], await feed_end(conn), first_delay)
    await conn.execute(
        "UPDATE endpoints SET disabled_at = %s, disabled_reason = %s WHERE id = %s"
        " AND disabled_at IS NULL",
        (now, reason, ident),
    )
    keys = await _all(
        conn,
        "UPDATE messages SET status = 'failed', head = false, next_attempt_at = NULL,"
        " manual = false, resume_at = NULL, claimed_by = NULL, claim = NULL,"
        " claimed_until = NULL, finished_at = %s WHERE endpoint_id = %s AND status = 'pending'"
        " AND (claimed_until IS NULL OR claimed_until <= %s) RETURNING task_key",
        (now, ident, db_now),
    )
    for key in sorted({r[0] for r in keys}):
        await _promote(conn, ident, key)


# -- fan-out and heads -------------------------------------------------------------------


async def fan_out(conn: Conn, endpoint_ids: Sequence[str], end: int, first_delay: float) -> int:
    """Turn the events after each (locked, enabled) endpoint's position into messages.

    Idempotent (``UNIQUE (event_id, endpoint_id)``); each endpoint's position
    moves in the same transaction as its new messages.
    """
    if not endpoint_ids:
        return 0
    rows = await _all(
        conn,
        "SELECT id, position, events FROM endpoints WHERE id = ANY(%s)"
        " AND disabled_at IS NULL AND position < %s ORDER BY id",
        (list(endpoint_ids), end),
    )
    made = 0
    for ident, position, events in rows:
        upto = min(end, position + FAN_OUT_BATCH)
        types = json.loads(events) if events is not None else None
        type_clause = " AND type = ANY(%s)" if types else ""
        cur = await conn.execute(
            "INSERT INTO messages (endpoint_id, event_seq, event_id, task_key, committed_at,"
            " status, next_attempt_at)"
            " SELECT %s, seq, id, task_key, created_at, 'pending', created_at + %s"
            f" FROM events WHERE seq > %s AND seq <= %s{type_clause} ORDER BY seq"
            " ON CONFLICT (event_id, endpoint_id) DO NOTHING",
            [ident, first_delay, position, upto, *([types] if types else [])],
        )
        made += max(cur.rowcount, 0)
        # The new messages that have no pending predecessor of their task are heads.
        await conn.execute(
            "UPDATE messages m SET head = true WHERE m.endpoint_id = %s AND m.status = 'pending'"
            " AND m.event_seq > %s AND m.event_seq <= %s AND NOT EXISTS (SELECT 1 FROM messages p"
            "  WHERE p.endpoint_id = m.endpoint_id AND p.task_key = m.task_key"
            "  AND p.status = 'pending' AND p.event_seq < m.event_seq)",
            (ident, position, upto),
        )
        await conn.execute("UPDATE endpoints SET position = %s WHERE id = %s", (upto, ident))
    return made


async def _promote(conn: Conn, endpoint_id: str, key: str) -> None:
    """Make one pending message of (endpoint, task) its only head: the one being sent, if
    any (so a redelivered earlier event never runs beside it), else the earliest."""
    rows = await _all(
        conn,
        "SELECT id, claim FROM messages WHERE endpoint_id = %s AND task_key = %s"
        " AND status = 'pending' ORDER BY event_seq",
        (endpoint_id, key),
    )
    if not rows:
        return
    claimed = [ident for ident, token in rows if token is not None]
    head = claimed[0] if claimed else rows[0][0]
    await conn.execute(
        "UPDATE messages SET head = (id = %s) WHERE endpoint_id = %s AND task_key = %s"
        " AND status = 'pending' AND head IS DISTINCT FROM (id = %s)",
        (head, endpoint_id, key, head),
    )


# -- claiming and settling ---------------------------------------------------------------


async def claim(
    conn: Conn,
    holder: str,
    limit: int,
    per_endpoint: int,
    lease: float,
    first_delay: float,
    now: float,
) -> Claims:
    """Fan out, then claim up to ``limit`` due heads, endpoints taking turns.

    Only endpoints with work (events to fan out, a due head nobody holds) are
    locked, so a claim that finds nothing writes nothing.
    """
    end = await feed_end(conn)
    busy = await _all(
        conn,
        "SELECT e.id FROM endpoints e WHERE e.disabled_at IS NULL AND (e.position < %s"
        " OR EXISTS (SELECT 1 FROM messages m WHERE m.endpoint_id = e.id"
        "  AND m.status = 'pending' AND m.head AND m.next_attempt_at <= %s"
        f"  AND (m.claimed_until IS NULL OR m.claimed_until <= {DB_NOW})))",
        (end, now),
    )
    if not busy:
        return Claims([], await next_due(conn, now))
    endpoints = [
        endpoint_row(r)
        for r in await _all(
            conn,
            f"SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id = ANY(%s)"
            " AND disabled_at IS NULL ORDER BY id FOR UPDATE",
            ([r[0] for r in busy],),
        )
    ]
    db_now = await _db_now(conn)  # after the locks: a lease counts from when it is taken
    endpoints.sort(key=lambda e: (e.created_at, e.id))
    ids = [e.id for e in endpoints]
    await fan_out(conn, ids, end, first_delay)
    live = dict(
        await _all(
            conn,
            "SELECT endpoint_id, count(*) FROM messages WHERE endpoint_id = ANY(%s)"
            " AND claim IS NOT NULL AND claimed_until > %s GROUP BY endpoint_id",
            (ids, db_now),
        )
    )
    queues: list[tuple[Endpoint, list[tuple[Any, ...]]]] = []
    for endpoint in endpoints:
        free = min(limit, per_endpoint - live.get(endpoint.id, 0))
        if free <= 0:
            continue
        rows = await _all(
            conn,
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE endpoint_id = %s"
            " AND status = 'pending' AND head AND next_attempt_at <= %s"
            " AND (claimed_until IS NULL OR claimed_until <= %s)"
            " ORDER BY next_attempt_at LIMIT %s",
            (endpoint.id, now, db_now, free),
        )
        if rows:
            queues.append((endpoint, rows))
    items = []
    for endpoint, row in take_turns(queues, limit):
        token = secrets.token_hex(8)
        item = await _claim_one(conn, endpoint, row, holder, token, lease, db_now, now)
        if item is not None:
            items.append(item)
    return Claims(items, await next_due(conn, now))


async def _claim_one(
    conn: Conn,
    endpoint: Endpoint,
    row: Sequence[Any],
    holder: str,
    token: str,
    lease: float,
    db_now: float,
    now: float,
) -> Claim | None:
    ident, endpoint_id, seq, event_id, key, committed, attempts, scheduled, manual = row[:9]
    resume_at, lapsed = row[9], row[10]
    if lapsed is not None:  # the last holder died mid-attempt: record what we know of it
        await conn.execute(
            "INSERT INTO attempts (endpoint_id, message_id, event_id, attempt, attempted_at,"
            " outcome, error) VALUES (%s, %s, %s, %s, %s, 'retrying', %s)",
            (endpoint_id, ident, event_id, attempts, now, LOST_ATTEMPT),
        )
    event = await _one(conn, "SELECT type, body FROM events WHERE seq = %s", (seq,))
    if event is None:  # pruned by EVENT_RETENTION before it could be delivered
        await conn.execute("UPDATE messages SET attempts = attempts + 1 WHERE id = %s", (ident,))
        await _settle(conn, ident, endpoint_id, key, "failed", None, scheduled, now)
        await conn.execute(
            "INSERT INTO attempts (endpoint_id, message_id, event_id, attempt, attempted_at,"
            " outcome, error) VALUES (%s, %s, %s, %s, %s, 'failed', %s)",
            (endpoint_id, ident, event_id, attempts + 1, now, "the event is no longer kept"),
        )
        return None
    await conn.execute(
        "UPDATE messages SET claimed_by = %s, claim = %s, claimed_until = %s,"
        " attempts = attempts + 1 WHERE id = %s",
        (holder, token, db_now + lease, ident),
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


async def next_due(conn: Conn, now: float) -> float | None:
    """The earliest due time after ``now`` of any head (a hint for when to look again)."""
    row = await _one(
        conn,
        "SELECT min(next_attempt_at) FROM messages WHERE status = 'pending' AND head"
        " AND next_attempt_at > %s",
        (now,),
    )
    return float(row[0]) if row and row[0] is not None else None


async def _settle(
    conn: Conn,
    ident: int,
    endpoint_id: str,
    key: str,
    status: str,
    next_attempt_at: float | None,
    scheduled: int,
    now: float,
) -> None:
    final = status != "pending"
    await conn.execute(
        "UPDATE messages SET status = %s, next_attempt_at = %s, scheduled = %s, manual = false,"
        " resume_at = NULL, claimed_by = NULL, claim = NULL, claimed_until = NULL,"
        " head = CASE WHEN %s THEN false ELSE head END,"
        " finished_at = CASE WHEN %s THEN %s ELSE NULL END WHERE id = %s",
        (status, next_attempt_at, scheduled, final, final, now, ident),
    )
    await _promote(conn, endpoint_id, key)


async def finish(
    conn: Conn,
    item: Claim,
    attempt: Attempt,
    nxt: Next,
    disable_after: float,
    first_delay: float,
    now: float,
) -> Settled:
    """Record the attempt; move the message if ``item`` still holds it (see the contract)."""
    endpoint = await lock_endpoint(conn, item.endpoint_id)
    if endpoint is None:  # deleted meanwhile, with its messages and attempts
        return Settled(False, attempt.outcome)
    row = await _one(conn, "SELECT claim FROM messages WHERE id = %s", (item.message_id,))
    owned = row is not None and row[0] == item.token
    outcome: Outcome = attempt.outcome
    disabled: str | None = None
    if owned:
        status, next_at = nxt.status, nxt.next_attempt_at
        failing_since: float | None = None
        if outcome != "delivered":
            failing_since = endpoint.failing_since if endpoint.failing_since is not None else now
        if failing_since != endpoint.failing_since:
            await conn.execute(
                "UPDATE endpoints SET failing_since = %s WHERE id = %s",
                (failing_since, endpoint.id),
            )
        if failing_since is not None and not endpoint.disabled:
            disabled = nxt.disable or disable_reason(failing_since, now, disable_after)
        stopped = endpoint.disabled or disabled is not None
        if outcome != "delivered" and status == "pending" and stopped:
            status, next_at, outcome = "failed", None, "failed"
        await _settle(
            conn,
            item.message_id,
            item.endpoint_id,
            item.task_key,
            status,
            next_at,
            nxt.scheduled,
            now,
        )
    await conn.execute(
        "INSERT INTO attempts (endpoint_id, message_id, event_id, attempt, attempted_at,"
        " outcome, response_status, duration_ms, response, error)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
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
        await _disable(conn, item.endpoint_id, disabled, first_delay, now, await _db_now(conn))
    return Settled(owned, outcome, disabled)


async def release(conn: Conn, holder: str) -> int:
    """Give back ``holder``'s claims; their attempt numbers are reused (nothing was recorded)."""
    rows = await _all(
        conn,
        "SELECT DISTINCT endpoint_id FROM messages WHERE claimed_by = %s AND claim IS NOT NULL"
        " ORDER BY endpoint_id",
        (holder,),
    )
    for (endpoint_id,) in rows:
        await lock_endpoint(conn, endpoint_id)
    cur = await conn.execute(
        "UPDATE messages SET claimed_by = NULL, claim = NULL, claimed_until = NULL,"
        " attempts = attempts - 1 WHERE claimed_by = %s AND claim IS NOT NULL",
        (holder,),
    )
    return max(cur.rowcount, 0)


# -- redelivery --------------------------------------------------------------------------


async def _requeue(conn: Conn, ident: int, now: float) -> None:
    """One more attempt of a message, due now and outside its schedule."""
    await conn.execute(
        "UPDATE messages SET"
        " resume_at = CASE WHEN status = 'pending' AND NOT manual THEN next_attempt_at"
        "  ELSE resume_at END,"
        " status = 'pending', manual = true, next_attempt_at = %s, finished_at = NULL"
        " WHERE id = %s",
        (now, ident),
    )


async def redeliver(
    conn: Conn, event_id: str, endpoint_id: str | None, now: float
) -> Redelivery | None:
    event = await _one(
        conn, "SELECT seq, type, task_key, created_at FROM events WHERE id = %s", (event_id,)
    )
    if event is None:
        return None
    seq, event_type, key, committed = event
    if endpoint_id is not None:
        target = await lock_endpoint(conn, endpoint_id)
        if target is None or target.disabled or not target.subscribes(event_type):
            return Redelivery(event_type, [])
        await conn.execute(
            "INSERT INTO messages (endpoint_id, event_seq, event_id, task_key, committed_at,"
            " status, next_attempt_at, finished_at) VALUES (%s, %s, %s, %s, %s, 'failed', NULL, %s)"
            " ON CONFLICT (event_id, endpoint_id) DO NOTHING",
            (endpoint_id, seq, event_id, key, committed, now),
        )
        targets = [endpoint_id]
    else:
        found = await _all(
            conn,
            "SELECT DISTINCT endpoint_id FROM messages WHERE event_id = %s ORDER BY endpoint_id",
            (event_id,),
        )
        targets = [r[0] for r in found]
        for target_id in targets:
            await lock_endpoint(conn, target_id)
    rows = await _all(
        conn,
        "SELECT m.id, m.endpoint_id FROM messages m JOIN endpoints e ON e.id = m.endpoint_id"
        " WHERE m.event_id = %s AND e.disabled_at IS NULL AND m.endpoint_id = ANY(%s)",
        (event_id, targets),
    )
    for ident, target_id in rows:
        await _requeue(conn, ident, now)
        await _promote(conn, target_id, key)
    return Redelivery(event_type, sorted(r[1] for r in rows))


async def recover(conn: Conn, endpoint_id: str, since: float, now: float) -> int:
    if await lock_endpoint(conn, endpoint_id) is None:
        return 0
    rows = await _all(
        conn,
        "SELECT id, task_key FROM messages WHERE endpoint_id = %s AND status = 'failed'"
        " AND committed_at >= %s",
        (endpoint_id, since),
    )
    for ident, _ in rows:
        await _requeue(conn, ident, now)
    for key in sorted({r[1] for r in rows}):
        await _promote(conn, endpoint_id, key)
    return len(rows)


async def prune(conn: Conn, before: float, limit: int) -> tuple[int, int]:
    """Drop up to ``limit`` attempts and ``limit`` finished messages older than ``before``.

    A finished message requeued meanwhile (its row changed under a redelivery's
    lock) is re-checked by PostgreSQL before it goes, and stays.
    """
    attempts = await conn.execute(
        "DELETE FROM attempts WHERE id IN"
        " (SELECT id FROM attempts WHERE attempted_at < %s LIMIT %s)",
        (before, limit),
    )
    messages = await conn.execute(
        "DELETE FROM messages WHERE id IN (SELECT id FROM messages"
        " WHERE status <> 'pending' AND finished_at < %s LIMIT %s) AND status <> 'pending'",
        (before, limit),
    )
    return max(attempts.rowcount, 0), max(messages.rowcount, 0)
