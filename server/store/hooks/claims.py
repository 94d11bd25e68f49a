"""Claims: the due heads taken under a lease, an attempt settled, claims given back.

A claim locks only the endpoints with work (events to fan out, a due head
nobody holds), so a claim that finds nothing writes nothing; it then waits
only for another claim or settle of the same endpoints, never for an attempt
in flight. Policy (what an answer means, when an endpoint is disabled, the
reason it records) comes from ``server.core.delivery_schedule``.
"""

from __future__ import annotations

import secrets
from typing import Any

from server.core.delivery_schedule import LOST_ATTEMPT, Next, Outcome, disable_reason
from server.store.hooks.endpoints import disable
from server.store.hooks.queue import fan_out, promote
from server.store.hooks.tx import (
    ENDPOINT_COLUMNS,
    MESSAGE_COLUMNS,
    Row,
    Tx,
    endpoint_row,
    get_endpoint,
)
from server.store.rows import EVENT_BODY, event_body
from server.store.webhooks import Attempt, Claim, Claims, Endpoint, Settled, take_turns

_RECORD_ATTEMPT = (
    "INSERT INTO attempts (endpoint_id, message_id, event_id, attempt, attempted_at,"
    " outcome, response_status, duration_ms, response, error)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


async def _busy_endpoints(tx: Tx, end: int, now: float) -> list[Endpoint]:
    """Lock and read the enabled endpoints with work, the oldest first."""
    clock, clock_params = tx.lease_now(now)
    busy = await tx.all(
        f"SELECT e.id FROM endpoints e WHERE e.disabled_at IS NULL AND (e.position < ?"
        " OR EXISTS (SELECT 1 FROM messages m WHERE m.endpoint_id = e.id"
        f"  AND m.status = 'pending' AND m.{tx.head} AND m.next_attempt_at <= ?"
        f"  AND (m.claimed_until IS NULL OR m.claimed_until <= {clock})))",
        [end, now, *clock_params],
    )
    if not busy:
        return []
    among, params = tx.any_of("id", [r[0] for r in busy])
    rows = await tx.all(
        f"SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE {among}"
        f" AND disabled_at IS NULL ORDER BY id{tx.lock}",
        params,
    )
    return sorted(map(endpoint_row, rows), key=lambda e: (e.created_at, e.id))


async def claim(
    tx: Tx,
    holder: str,
    limit: int,
    per_endpoint: int,
    lease: float,
    first_delay: float,
    now: float,
) -> Claims:
    """Fan out, then claim up to ``limit`` due heads, endpoints taking turns."""
    end = await tx.feed_end()
    endpoints = await _busy_endpoints(tx, end, now)
    if not endpoints:
        return Claims([], await next_due(tx, now))
    held_at = await tx.lease_clock(now)  # after the locks: a lease counts from when it is taken
    ids = [e.id for e in endpoints]
    await fan_out(tx, ids, end, first_delay)
    among, params = tx.any_of("endpoint_id", ids)
    counted = await tx.all(
        f"SELECT endpoint_id, count(*) FROM messages WHERE {among}"
        " AND claim IS NOT NULL AND claimed_until > ? GROUP BY endpoint_id",
        [*params, held_at],
    )
    live: dict[str, int] = {ident: count for ident, count in counted}
    queues: list[tuple[Endpoint, list[Row]]] = []
    for endpoint in endpoints:
        free = min(limit, per_endpoint - live.get(endpoint.id, 0))
        if free <= 0:
            continue
        rows = await tx.all(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE endpoint_id = ?"
            f" AND status = 'pending' AND {tx.head} AND next_attempt_at <= ?"
            " AND (claimed_until IS NULL OR claimed_until <= ?)"
            " ORDER BY next_attempt_at LIMIT ?",
            (endpoint.id, now, held_at, free),
        )
        if rows:
            queues.append((endpoint, rows))
    items = []
    for endpoint, row in take_turns(queues, limit):
        token = secrets.token_hex(8)
        item = await _claim_one(tx, endpoint, row, holder, token, held_at + lease, now)
        if item is not None:
            items.append(item)
    return Claims(items, await next_due(tx, now))


async def _claim_one(
    tx: Tx, endpoint: Endpoint, row: Row, holder: str, token: str, until: float, now: float
) -> Claim | None:
    ident, endpoint_id, seq, event_id, key, committed, attempts, scheduled, manual = row[:9]
    resume_at, lapsed = row[9], row[10]
    if lapsed is not None:  # the last holder died mid-attempt: record what we know of it
        lost = (endpoint_id, ident, event_id, attempts, now, "retrying", None, None, None)
        await tx.run(_RECORD_ATTEMPT, (*lost, LOST_ATTEMPT))
    event = await tx.one(f"SELECT {EVENT_BODY} FROM events WHERE seq = ?", (seq,))
    if event is None:  # pruned by EVENT_RETENTION before it could be delivered
        await tx.run("UPDATE messages SET attempts = attempts + 1 WHERE id = ?", (ident,))
        await _settle(tx, ident, endpoint_id, key, "failed", None, scheduled, now)
        gone = (endpoint_id, ident, event_id, attempts + 1, now, "failed", None, None, None)
        await tx.run(_RECORD_ATTEMPT, (*gone, "the event is no longer kept"))
        return None
    event_type, body = event_body(event)
    await tx.run(
        "UPDATE messages SET claimed_by = ?, claim = ?, claimed_until = ?,"
        " attempts = attempts + 1 WHERE id = ?",
        (holder, token, until, ident),
    )
    return Claim(
        message_id=ident,
        token=token,
        endpoint_id=endpoint_id,
        url=endpoint.url,
        secrets=endpoint.signing_secrets(now),
        event_id=event_id,
        event_type=event_type,
        task_key=key,
        body=body,
        committed_at=committed,
        attempt=attempts + 1,
        scheduled=scheduled,
        manual=bool(manual),
        resume_at=resume_at,
    )


async def next_due(tx: Tx, now: float) -> float | None:
    """The earliest due time after ``now`` of any head (a hint for when to look again)."""
    row = await tx.one(
        f"SELECT min(next_attempt_at) FROM messages WHERE status = 'pending' AND {tx.head}"
        " AND next_attempt_at > ?",
        (now,),
    )
    return float(row[0]) if row and row[0] is not None else None


async def _settle(
    tx: Tx,
    ident: int,
    endpoint_id: str,
    key: str,
    status: str,
    next_attempt_at: float | None,
    scheduled: int,
    now: float,
) -> None:
    final = status != "pending"
    await tx.run(
        "UPDATE messages SET status = ?, next_attempt_at = ?, scheduled = ?, manual = false,"
        " resume_at = NULL, claimed_by = NULL, claim = NULL, claimed_until = NULL,"
        " head = CASE WHEN ? THEN false ELSE head END,"
        " finished_at = CASE WHEN ? THEN ? ELSE NULL END WHERE id = ?",
        (status, next_attempt_at, scheduled, final, final, now, ident),
    )
    await promote(tx, endpoint_id, key)


async def finish(
    tx: Tx,
    item: Claim,
    attempt: Attempt,
    nxt: Next,
    disable_after: float,
    first_delay: float,
    now: float,
) -> Settled:
    """Record the attempt; move the message if ``item`` still holds it (see the contract)."""
    endpoint = await get_endpoint(tx, item.endpoint_id, lock=True)
    if endpoint is None:  # deleted meanwhile, with its messages and attempts
        return Settled(False, attempt.outcome)
    row = await tx.one("SELECT claim FROM messages WHERE id = ?", (item.message_id,))
    owned = row is not None and row[0] == item.token
    outcome: Outcome = attempt.outcome
    disabled: str | None = None
    if owned:
        status, next_at = nxt.status, nxt.next_attempt_at
        failing_since: float | None = None
        if outcome != "delivered":
            failing_since = endpoint.failing_since if endpoint.failing_since is not None else now
        if failing_since != endpoint.failing_since:
            await tx.run(
                "UPDATE endpoints SET failing_since = ? WHERE id = ?",
                (failing_since, endpoint.id),
            )
        if failing_since is not None and not endpoint.disabled:
            disabled = nxt.disable or disable_reason(failing_since, now, disable_after)
        stopped = endpoint.disabled or disabled is not None
        if outcome != "delivered" and status == "pending" and stopped:
            status, next_at, outcome = "failed", None, "failed"
        await _settle(
            tx, item.message_id, endpoint.id, item.task_key, status, next_at, nxt.scheduled, now
        )
    made: tuple[Any, ...] = (item.endpoint_id, item.message_id, attempt.event_id, attempt.attempt)
    answer = (attempt.response_status, attempt.duration_ms, attempt.response, attempt.error)
    await tx.run(_RECORD_ATTEMPT, (*made, attempt.attempted_at, outcome, *answer))
    if disabled is not None:
        await disable(tx, item.endpoint_id, disabled, first_delay, now)
    return Settled(owned, outcome, disabled)


async def release(tx: Tx, holder: str) -> int:
    """Give back ``holder``'s claims; their attempt numbers are reused (nothing was recorded)."""
    rows = await tx.all(
        "SELECT DISTINCT endpoint_id FROM messages WHERE claimed_by = ? AND claim IS NOT NULL"
        " ORDER BY endpoint_id",
        (holder,),
    )
    for (endpoint_id,) in rows:
        await get_endpoint(tx, endpoint_id, lock=True)
    return await tx.run(
        "UPDATE messages SET claimed_by = NULL, claim = NULL, claimed_until = NULL,"
        " attempts = attempts - 1 WHERE claimed_by = ? AND claim IS NOT NULL",
        (holder,),
    )
