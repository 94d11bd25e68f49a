"""Retention on PostgreSQL: old raw bodies dropped, the quarantine held to its caps.

Each function runs inside a transaction its caller opened.

**Bodies of long-final tasks.** ``prune_step`` empties the ``body`` of the
deliveries of tasks that became final before a cutoff; the row stays with its
``sha256`` (a repeat is still recognised as one), source, status and times.
It goes in small steps, each its own transaction, remembering where it got to
(``retention.mark`` in ``settings``): tasks in ``(completed_at, key)`` order,
once each as they cross the cutoff; deliveries that arrive later for a task
already past it are caught by their id. The mark's row is locked for the
step, so replicas pruning at once take turns instead of counting twice.

**Quarantine bytes.** Triggers (migration 9) keep ``counter.quarantine_bytes``
equal to the bytes of every quarantined body, whoever inserts or deletes;
``enforce_quarantine_bytes`` drops the oldest rows beyond the cap in the
transaction that added a body, and counts them like the row cap does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg

from server.store.postgres.values import bump_counter, set_value

MARK_KEY = "retention.mark"

Conn = psycopg.AsyncConnection


@dataclass(frozen=True)
class Step:
    """What one step dropped, and whether there is more to do before the cutoff."""

    bodies: int = 0
    bytes: int = 0
    more: bool = False


async def _one(conn: Conn, sql: str, params: Any = ()) -> tuple[Any, ...]:
    row = await (await conn.execute(sql, params)).fetchone()
    assert row is not None
    return row


async def _mark(conn: Conn) -> dict[str, Any]:
    """The mark, its row locked for this transaction (made on the first run)."""
    await conn.execute(
        "INSERT INTO settings (key, value) VALUES (%s, '') ON CONFLICT (key) DO NOTHING",
        (MARK_KEY,),
    )
    (value,) = await _one(conn, "SELECT value FROM settings WHERE key = %s FOR UPDATE", (MARK_KEY,))
    if value:
        mark: dict[str, Any] = json.loads(value)
        return mark
    # First run: every task is visited through its completed_at, so deliveries
    # that exist now need no second look by id.
    (last,) = await _one(conn, "SELECT COALESCE(MAX(id), 0) FROM deliveries")
    return {"completed_at": -1.0, "key": "", "delivery": int(last)}


async def _empty(conn: Conn, where: str, params: tuple[Any, ...]) -> tuple[int, int]:
    """Empty the bodies of the deliveries matched by ``where``; (bodies, bytes) freed."""
    bodies, size = await _one(
        conn,
        "WITH emptied AS (UPDATE deliveries d SET body = ''::bytea FROM deliveries old"
        f" WHERE d.id = old.id AND length(old.body) > 0 AND {where}"
        " RETURNING length(old.body) AS freed)"
        " SELECT count(*), COALESCE(sum(freed), 0) FROM emptied",
        params,
    )
    if bodies:
        await bump_counter(conn, "pruned_bodies", int(bodies))
        await bump_counter(conn, "pruned_bytes", int(size))
    return int(bodies), int(size)


async def prune_step(conn: Conn, cutoff: float, batch: int = 200) -> Step:
    """Drop the bodies of up to ``batch`` tasks final before ``cutoff`` (or of late deliveries)."""
    mark = await _mark(conn)
    tasks = await (
        await conn.execute(
            "SELECT completed_at, key FROM tasks WHERE completed_at IS NOT NULL"
            ' AND (completed_at, key COLLATE "C") > (%s, %s) AND completed_at < %s'
            ' ORDER BY completed_at, key COLLATE "C" LIMIT %s',
            (mark["completed_at"], mark["key"], cutoff, batch),
        )
    ).fetchall()
    if tasks:
        keys = [key for _, key in tasks]
        bodies, size = await _empty(conn, "old.task_key = ANY(%s)", (keys,))
        mark.update(completed_at=tasks[-1][0], key=tasks[-1][1])
        await set_value(conn, MARK_KEY, json.dumps(mark))
        return Step(bodies, size, more=True)
    late = await (
        await conn.execute(
            "SELECT id FROM deliveries WHERE id > %s ORDER BY id LIMIT %s",
            (mark["delivery"], batch * 10),
        )
    ).fetchall()
    if not late:
        await set_value(conn, MARK_KEY, json.dumps(mark))
        return Step()
    first, last = late[0][0], late[-1][0]
    bodies, size = await _empty(
        conn,
        "old.id BETWEEN %s AND %s AND old.task_key IN"
        " (SELECT key FROM tasks WHERE completed_at IS NOT NULL AND completed_at < %s)",
        (first, last, cutoff),
    )
    mark["delivery"] = last
    await set_value(conn, MARK_KEY, json.dumps(mark))
    return Step(bodies, size, more=True)


async def enforce_quarantine_bytes(conn: Conn, max_bytes: int) -> tuple[int, int]:
    """Drop the oldest quarantined bodies while they hold more than ``max_bytes``; (rows, bytes)."""
    row = await (
        await conn.execute("SELECT value FROM settings WHERE key = 'counter.quarantine_bytes'")
    ).fetchone()
    total = int(row[0]) if row else 0
    if total <= max_bytes:
        return 0, 0
    rows, freed = await _one(
        conn,
        "WITH oldest AS (SELECT id, length(body) AS size,"
        "  sum(length(body)) OVER (ORDER BY id) AS running FROM quarantine),"
        " dropped AS (DELETE FROM quarantine WHERE id IN"
        "  (SELECT id FROM oldest WHERE running - size < %s) RETURNING length(body) AS size)"
        " SELECT count(*), COALESCE(sum(size), 0) FROM dropped",
        (total - max_bytes,),
    )
    if rows:
        await bump_counter(conn, "quarantine_dropped", int(rows))
        await bump_counter(conn, "quarantine_dropped_bytes", int(freed))
    return int(rows), int(freed)


async def enforce_quarantine_rows(conn: Conn, max_rows: int) -> tuple[int, int]:
    """Drop the oldest quarantined rows beyond ``max_rows`` (after the cap was lowered)."""
    rows, size = await _one(
        conn,
        "WITH dropped AS (DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine"
        "  ORDER BY id LIMIT GREATEST((SELECT count(*) FROM quarantine) - %s, 0))"
        "  RETURNING length(body) AS size)"
        " SELECT count(*), COALESCE(sum(size), 0) FROM dropped",
        (max_rows,),
    )
    if rows:
        await bump_counter(conn, "quarantine_dropped", int(rows))
        await bump_counter(conn, "quarantine_dropped_bytes", int(size))
    return int(rows), int(size)
