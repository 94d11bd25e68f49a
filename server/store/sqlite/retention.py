"""Retention on SQLite: old raw bodies dropped, the quarantine held to its byte cap.

Plain functions run on the writer thread, each as (part of) one transaction.

**Bodies of long-final tasks.** ``prune_step`` empties the ``body`` of the
deliveries of tasks that became final before a cutoff; the row stays with its
``sha256`` (so a repeat is still recognised as one), source, status and
times. It works in small steps, each its own transaction, so callbacks keep
being committed between them, and it remembers where it got to
(``retention.mark`` in ``settings``): tasks are visited in
``(completed_at, key)`` order once each as they cross the cutoff, and
deliveries that arrive later for a task already past it are caught by their
id. A day's run costs what a day brought, not the whole history.

**Quarantine bytes.** Triggers (migration 5) keep ``counter.quarantine_bytes``
equal to the bytes of every quarantined body, whoever inserts or deletes;
``enforce_quarantine_bytes`` drops the oldest rows beyond the cap in the
transaction that added a body, and counts them like the row cap does.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from server.store.sqlite.values import bump_counter, set_value

MARK_KEY = "retention.mark"


@dataclass(frozen=True)
class Step:
    """What one step dropped, and whether there is more to do before the cutoff."""

    bodies: int = 0
    bytes: int = 0
    more: bool = False


def _mark(conn: sqlite3.Connection) -> dict[str, object]:
    row = conn.execute("SELECT value FROM settings WHERE key = ?", (MARK_KEY,)).fetchone()
    if row is not None:
        mark: dict[str, object] = json.loads(row[0])
        return mark
    # First run: every task is visited through its completed_at, so deliveries
    # that exist now need no second look by id.
    last = conn.execute("SELECT COALESCE(MAX(id), 0) FROM deliveries").fetchone()[0]
    return {"completed_at": -1.0, "key": "", "delivery": int(last)}


def _empty(conn: sqlite3.Connection, where: str, params: tuple[object, ...]) -> tuple[int, int]:
    """Empty the bodies of the deliveries matched by ``where``; (bodies, bytes) freed."""
    bodies, size = conn.execute(
        f"SELECT COUNT(*), COALESCE(SUM(length(body)), 0) FROM deliveries"
        f" WHERE length(body) > 0 AND {where}",
        params,
    ).fetchone()
    if bodies:
        conn.execute(f"UPDATE deliveries SET body = X'' WHERE length(body) > 0 AND {where}", params)
        bump_counter(conn, "pruned_bodies", bodies)
        bump_counter(conn, "pruned_bytes", size)
    return int(bodies), int(size)


def prune_step(conn: sqlite3.Connection, cutoff: float, batch: int = 200) -> Step:
    """Drop the bodies of up to ``batch`` tasks final before ``cutoff`` (or of late deliveries)."""
    mark = _mark(conn)
    tasks = conn.execute(
        "SELECT completed_at, key FROM tasks WHERE completed_at IS NOT NULL"
        " AND (completed_at, key) > (?, ?) AND completed_at < ?"
        " ORDER BY completed_at, key LIMIT ?",
        (mark["completed_at"], mark["key"], cutoff, batch),
    ).fetchall()
    if tasks:
        keys = [key for _, key in tasks]
        bodies, size = _empty(conn, f"task_key IN ({','.join('?' * len(keys))})", tuple(keys))
        mark.update(completed_at=tasks[-1][0], key=tasks[-1][1])
        set_value(conn, MARK_KEY, json.dumps(mark))
        return Step(bodies, size, more=True)
    late = conn.execute(
        "SELECT id FROM deliveries WHERE id > ? ORDER BY id LIMIT ?",
        (mark["delivery"], batch * 10),
    ).fetchall()
    if not late:
        return Step()
    first, last = late[0][0], late[-1][0]
    bodies, size = _empty(
        conn,
        "id BETWEEN ? AND ? AND task_key IN"
        " (SELECT key FROM tasks WHERE completed_at IS NOT NULL AND completed_at < ?)",
        (first, last, cutoff),
    )
    mark["delivery"] = last
    set_value(conn, MARK_KEY, json.dumps(mark))
    return Step(bodies, size, more=True)


def enforce_quarantine_bytes(conn: sqlite3.Connection, max_bytes: int) -> tuple[int, int]:
    """Drop the oldest quarantined bodies while they hold more than ``max_bytes``; (rows, bytes)."""
    row = conn.execute(
        "SELECT value FROM settings WHERE key = 'counter.quarantine_bytes'"
    ).fetchone()
    total = int(row[0]) if row else 0
    rows = freed = 0
    while total > max_bytes:
        oldest = conn.execute(
            "SELECT id, length(body) FROM quarantine ORDER BY id LIMIT 1"
        ).fetchone()
        if oldest is None:
            break
        conn.execute("DELETE FROM quarantine WHERE id = ?", (oldest[0],))
        total -= oldest[1]
        rows, freed = rows + 1, freed + oldest[1]
    if rows:
        bump_counter(conn, "quarantine_dropped", rows)
        bump_counter(conn, "quarantine_dropped_bytes", freed)
    return rows, freed


def enforce_quarantine_rows(conn: sqlite3.Connection, max_rows: int) -> tuple[int, int]:
    """Drop the oldest quarantined rows beyond ``max_rows`` (after the cap was lowered)."""
    excess = conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0] - max_rows
    if excess <= 0:
        return 0, 0
    rows, size = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(length(body)), 0) FROM"
        " (SELECT body FROM quarantine ORDER BY id LIMIT ?)",
        (excess,),
    ).fetchone()
    conn.execute(
        "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine ORDER BY id LIMIT ?)",
        (excess,),
    )
    bump_counter(conn, "quarantine_dropped", rows)
    bump_counter(conn, "quarantine_dropped_bytes", size)
    return int(rows), int(size)
