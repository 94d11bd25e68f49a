"""The archive queue on PostgreSQL: queue, claim, renew, finish and release copies.

Claims are exclusive across replicas and hosts: ``claim`` picks due rows
with ``FOR UPDATE SKIP LOCKED`` inside the ``UPDATE`` that marks them
running, so two replicas claiming at once never take the same row and never
wait for each other. A claim holds until ``claimed_until``, which its holder
pushes forward while it works (``renew``); a replica that died stops pushing,
and once the time has passed its rows are due again for anyone. Claim times
are the database server's clock (``clock_timestamp()``), so replicas whose
clocks disagree still agree on when a claim lapsed.

Every function that settles a copy locks the task row first (the order every
writer uses: the task, then its archive rows, then the event counter), so
the copies of one task settle one after another and exactly one of them sees
the last one settled and commits ``task.archived``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg

from server.core.codec import state_from_dict
from server.core.decide import ARCHIVED
from server.core.expiry import url_expiry
from server.core.types import ArchiveOutcome
from server.store import statements
from server.store.base import ArchiveJob
from server.store.postgres import events as outbox
from server.store.postgres.connection import pyformat
from server.store.postgres.listener import CHANNEL
from server.store.postgres.values import DB_NOW
from server.store.rows import (
    ARCHIVE_COLUMNS,
    ARCHIVE_JOB_COLUMNS,
    TASK_COLUMNS,
    archive_job,
    archive_outcome,
    task_record,
)
from server.store.sql import SQLStore

Conn = psycopg.AsyncConnection

_CLAIM = f"""
WITH due AS (
    SELECT task_key, url FROM archives
    WHERE (status = 'pending' AND next_attempt_at <= %(due)s)
       OR (status = 'running' AND claimed_until < {DB_NOW})
    ORDER BY next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE archives AS a
SET status = 'running', claimed_by = %(holder)s, claimed_until = {DB_NOW} + %(lease)s,
    updated_at = %(now)s
FROM due WHERE a.task_key = due.task_key AND a.url = due.url
RETURNING a.{ARCHIVE_JOB_COLUMNS.replace(", ", ", a.")}, a.next_attempt_at
"""

_RELEASE = pyformat(statements.RELEASE_ARCHIVES)
_UNSETTLED = pyformat(statements.UNSETTLED_COPIES)

_INSERT = (
    "INSERT INTO archives (task_key, url, status, next_attempt_at, expires_at, created_at,"
    " updated_at) VALUES (%s, %s, 'pending', %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)


async def enqueue_missing(conn: psycopg.AsyncConnection, now: float) -> int:
    """Queue every result of every succeeded task that has no archive row yet; how many.

    URLs count from the task's completion when they do not say when they expire.
    """
    rows = await (
        await conn.execute(
            "SELECT t.key, t.state, t.completed_at FROM tasks t WHERE t.status = 'succeeded'"
            " AND NOT EXISTS (SELECT 1 FROM archives a WHERE a.task_key = t.key) ORDER BY t.key"
        )
    ).fetchall()
    added = 0
    for key, encoded, completed_at in rows:
        state = state_from_dict(json.loads(encoded))
        finished = completed_at if completed_at is not None else now
        for url in sorted({r.url for r in state.results}):
            cur = await conn.execute(_INSERT, (key, url, now, url_expiry(url, finished), now, now))
            added += max(cur.rowcount, 0)
    return await _requeued(conn, added)


async def claim(
    conn: psycopg.AsyncConnection,
    holder: str,
    limit: int,
    lease: float,
    now: float,
    due_by: float | None,
) -> list[ArchiveJob]:
    """Mark up to ``limit`` due rows running for ``holder`` (see the module docstring)."""
    params = {
        "due": now if due_by is None else due_by,
        "limit": limit,
        "holder": holder,
        "lease": lease,
        "now": now,
    }
    rows = await (await conn.execute(_CLAIM, params)).fetchall()
    rows.sort(key=lambda r: r[-1])  # the longest due first, as they were picked
    return [archive_job(r[:-1]) for r in rows]


async def renew(conn: psycopg.AsyncConnection, holder: str, lease: float) -> int:
    cur = await conn.execute(
        f"UPDATE archives SET claimed_until = {DB_NOW} + %s"
        " WHERE status = 'running' AND claimed_by = %s",
        (lease, holder),
    )
    return max(cur.rowcount, 0)


async def reschedule(conn: psycopg.AsyncConnection, now: float, include_failed: bool) -> int:
    statuses = ["pending", "failed"] if include_failed else ["pending"]
    cur = await conn.execute(
        "UPDATE archives SET status = 'pending', next_attempt_at = %s, updated_at = %s"
        " WHERE status = ANY(%s)",
        (now, now, statuses),
    )
    return await _requeued(conn, cur.rowcount)


async def settle(
    conn: psycopg.AsyncConnection, key: str, statement: str, params: Any, now: float, final: bool
) -> tuple[str, ...]:
    """Settle one copy of task ``key`` (``statement``: a finish or a failure, guarded by the
    claim); when ``final`` and it was the task's last copy, ``task.archived``: its ids."""
    await _lock_task(conn, key)
    cur = await conn.execute(statement, params)
    if cur.rowcount != 1 or not final:
        return ()
    return await _archived_event(conn, key, now)


async def release(conn: psycopg.AsyncConnection, holder: str, now: float) -> int:
    cur = await conn.execute(_RELEASE, (now, now, holder))
    return await _requeued(conn, cur.rowcount)


async def _requeued(conn: psycopg.AsyncConnection, rows: int) -> int:
    """``rows`` due again: wake every replica's archiver (at commit); how many."""
    if rows > 0:
        await conn.execute("SELECT pg_notify(%s, 'archive')", (CHANNEL,))
    return max(rows, 0)


async def shown(
    conn: psycopg.AsyncConnection, keys: Sequence[str]
) -> dict[str, dict[str, ArchiveOutcome]]:
    """What each task's results show of their copies: copied, or a failure to tell."""
    rows = await (
        await conn.execute(
            f"SELECT {ARCHIVE_COLUMNS} FROM archives WHERE task_key = ANY(%s)"
            " AND (status = 'done' OR error IS NOT NULL)",
            (list(keys),),
        )
    ).fetchall()
    by_key: dict[str, dict[str, ArchiveOutcome]] = {}
    for key, url, outcome in map(archive_outcome, rows):
        by_key.setdefault(key, {})[url] = outcome
    return by_key


async def _lock_task(conn: psycopg.AsyncConnection, key: str) -> None:
    await conn.execute("SELECT 1 FROM tasks WHERE key = %s FOR UPDATE", (key,))


async def _archived_event(conn: psycopg.AsyncConnection, key: str, now: float) -> tuple[str, ...]:
    """``task.archived`` once every copy of the task is done or failed for good."""
    row = await (await conn.execute(_UNSETTLED, (key,))).fetchone()
    if row is None or row[0]:
        return ()
    task = await (
        await conn.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE key = %s", (key,))
    ).fetchone()
    if task is None:
        return ()
    outcomes = (await shown(conn, [key])).get(key, {})
    pending = outbox.render(key, task_record(task), outcomes, [ARCHIVED], now)
    await conn.execute("SELECT pg_notify(%s, 'events')", (CHANNEL,))
    await outbox.add_events(conn, pending)
    return tuple(e.id for e in pending)


class PostgresArchives(SQLStore):
    """The archive queue of the PostgreSQL store (a mixin of ``PostgresStore``)."""

    # Provided by PostgresStore.
    _write: Callable[..., Awaitable[Any]]

    async def _queued(self, what: str, fn: Callable[[Conn], Awaitable[int]]) -> int:
        """Run ``fn``; rows it made due wake this process's archivers at once."""
        rows: int = await self._write(what, fn)
        if rows:
            self._signals.notify("archive")
        return rows

    async def _settle_archive(
        self, what: str, key: str, statement: str, params: Sequence[Any], final: bool, now: float
    ) -> None:
        sql = pyformat(statement)
        if await self._write(what, lambda c: settle(c, key, sql, params, now, final)):
            self._signals.notify("events")

    async def enqueue_missing_archives(self) -> int:
        now = time.time()
        return await self._queued("queueing archive copies", lambda c: enqueue_missing(c, now))

    async def claim_archives(
        self, holder: str, limit: int, lease: float, due_by: float | None = None
    ) -> list[ArchiveJob]:
        now = time.time()
        claimed: list[ArchiveJob] = await self._write(
            "claiming archive copies", lambda c: claim(c, holder, limit, lease, now, due_by)
        )
        return claimed

    async def renew_archive_claims(self, holder: str, lease: float) -> int:
        renewed: int = await self._write(
            "renewing archive claims", lambda c: renew(c, holder, lease)
        )
        return renewed

    async def reschedule_archives(self, include_failed: bool = False) -> float:
        now = time.time()
        await self._queued(
            "rescheduling archive copies", lambda c: reschedule(c, now, include_failed)
        )
        return now

    async def release_archives(self, holder: str) -> int:
        now = time.time()
        return await self._queued("releasing archive claims", lambda c: release(c, holder, now))
