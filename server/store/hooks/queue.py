"""Messages: fan-out of committed events, the per-task head, requeueing, retention.

A message's ``head`` is true for one pending message of its (endpoint, task):
the earliest in commit order, or the one being sent. ``promote`` keeps that
true after every change of a message's status, so a claim only ever looks at
heads. Every function here runs inside one write transaction in which the
endpoints concerned are locked (``Tx.lock``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from server.store.hooks.tx import Tx, get_endpoint
from server.store.webhooks import Redelivery

#: Events turned into messages per endpoint per fan-out (the rest next time).
FAN_OUT_BATCH = 2000


async def fan_out(tx: Tx, endpoint_ids: Sequence[str], end: int, first_delay: float) -> int:
    """Turn the events up to ``end`` after each (locked, enabled) endpoint's position into
    messages, the first attempt due ``first_delay`` after the commit; how many.

    Idempotent (``UNIQUE (event_id, endpoint_id)``); each endpoint's position
    moves in the same transaction as its new messages.
    """
    if not endpoint_ids:
        return 0
    among, params = tx.any_of("id", endpoint_ids)
    rows = await tx.all(
        f"SELECT id, position, events FROM endpoints WHERE {among}"
        " AND disabled_at IS NULL AND position < ? ORDER BY id",
        [*params, end],
    )
    made = 0
    for ident, position, events in rows:
        upto = min(end, position + FAN_OUT_BATCH)
        types = json.loads(events) if events is not None else None
        typed, type_params = tx.any_of("type", types) if types else ("true", [])
        made += await tx.run(
            "INSERT INTO messages (endpoint_id, event_seq, event_id, task_key, committed_at,"
            " status, next_attempt_at)"
            " SELECT ?, seq, id, task_key, created_at, 'pending', created_at + ?"
            f" FROM events WHERE seq > ? AND seq <= ? AND {typed} ORDER BY seq"
            " ON CONFLICT (event_id, endpoint_id) DO NOTHING",
            [ident, first_delay, position, upto, *type_params],
        )
        # The new messages that have no pending predecessor of their task are heads.
        await tx.run(
            "UPDATE messages SET head = true WHERE endpoint_id = ? AND status = 'pending'"
            " AND event_seq > ? AND event_seq <= ? AND NOT EXISTS (SELECT 1 FROM messages p"
            "  WHERE p.endpoint_id = messages.endpoint_id AND p.task_key = messages.task_key"
            "  AND p.status = 'pending' AND p.event_seq < messages.event_seq)",
            (ident, position, upto),
        )
        await tx.run("UPDATE endpoints SET position = ? WHERE id = ?", (upto, ident))
    return made


async def promote(tx: Tx, endpoint_id: str, key: str) -> None:
    """Make one pending message of (endpoint, task) its only head: the one being sent, if
    any (so a redelivered earlier event never runs beside it), else the earliest."""
    rows = await tx.all(
        "SELECT id, claim FROM messages WHERE endpoint_id = ? AND task_key = ?"
        " AND status = 'pending' ORDER BY event_seq",
        (endpoint_id, key),
    )
    if not rows:
        return
    claimed = [ident for ident, token in rows if token is not None]
    head = claimed[0] if claimed else rows[0][0]
    await tx.run(
        "UPDATE messages SET head = (id = ?) WHERE endpoint_id = ? AND task_key = ?"
        " AND status = 'pending' AND head <> (id = ?)",
        (head, endpoint_id, key, head),
    )


async def promote_all(tx: Tx, endpoint_id: str, keys: Sequence[str]) -> None:
    """``promote`` each of the (endpoint, task)s whose messages changed."""
    for key in sorted(set(keys)):
        await promote(tx, endpoint_id, key)


async def _requeue(tx: Tx, ident: int, now: float) -> None:
    """One more attempt of a message, due now and outside its schedule."""
    await tx.run(
        "UPDATE messages SET"
        " resume_at = CASE WHEN status = 'pending' AND NOT manual THEN next_attempt_at"
        "  ELSE resume_at END,"
        " status = 'pending', manual = true, next_attempt_at = ?, finished_at = NULL"
        " WHERE id = ?",
        (now, ident),
    )


async def redeliver(
    tx: Tx, event_id: str, endpoint_id: str | None, now: float
) -> Redelivery | None:
    """Requeue the event's message of ``endpoint_id`` (made if it never had one), or of
    every endpoint that had it; disabled endpoints are left out."""
    event = await tx.one(
        "SELECT seq, type, task_key, created_at FROM events WHERE id = ?", (event_id,)
    )
    if event is None:
        return None
    seq, event_type, key, committed = event
    if endpoint_id is not None:
        target = await get_endpoint(tx, endpoint_id, lock=True)
        if target is None or target.disabled or not target.subscribes(event_type):
            return Redelivery(event_type, [])
        await tx.run(
            "INSERT INTO messages (endpoint_id, event_seq, event_id, task_key, committed_at,"
            " status, next_attempt_at, finished_at) VALUES (?, ?, ?, ?, ?, 'failed', NULL, ?)"
            " ON CONFLICT (event_id, endpoint_id) DO NOTHING",
            (endpoint_id, seq, event_id, key, committed, now),
        )
        targets = [endpoint_id]
    else:
        found = await tx.all(
            "SELECT DISTINCT endpoint_id FROM messages WHERE event_id = ? ORDER BY endpoint_id",
            (event_id,),
        )
        targets = [r[0] for r in found]
        for target_id in targets:
            await get_endpoint(tx, target_id, lock=True)
    if not targets:
        return Redelivery(event_type, [])
    among, params = tx.any_of("m.endpoint_id", targets)
    rows = await tx.all(
        "SELECT m.id, m.endpoint_id FROM messages m JOIN endpoints e ON e.id = m.endpoint_id"
        f" WHERE m.event_id = ? AND e.disabled_at IS NULL AND {among}",
        [event_id, *params],
    )
    for ident, target_id in rows:
        await _requeue(tx, ident, now)
        await promote(tx, target_id, key)
    return Redelivery(event_type, sorted(r[1] for r in rows))


async def recover(tx: Tx, endpoint_id: str, since: float, now: float) -> int:
    """Requeue the endpoint's failed messages whose event committed at or after ``since``."""
    if await get_endpoint(tx, endpoint_id, lock=True) is None:
        return 0
    rows = await tx.all(
        "SELECT id, task_key FROM messages WHERE endpoint_id = ? AND status = 'failed'"
        " AND committed_at >= ?",
        (endpoint_id, since),
    )
    for ident, _ in rows:
        await _requeue(tx, ident, now)
    await promote_all(tx, endpoint_id, [r[1] for r in rows])
    return len(rows)


async def prune(tx: Tx, before: float, limit: int) -> tuple[int, int]:
    """Drop up to ``limit`` attempts and ``limit`` finished messages older than ``before``.

    A finished message requeued meanwhile (its row changed under a redelivery's
    lock) is checked again before it goes, and stays.
    """
    attempts = await tx.run(
        "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts WHERE attempted_at < ? LIMIT ?)",
        (before, limit),
    )
    messages = await tx.run(
        "DELETE FROM messages WHERE id IN (SELECT id FROM messages"
        " WHERE status <> 'pending' AND finished_at < ? LIMIT ?) AND status <> 'pending'",
        (before, limit),
    )
    return attempts, messages
