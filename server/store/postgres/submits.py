"""Submit records on PostgreSQL: begin and finish (``Store.begin_submit``, ``finish_submit``).

"At most one record holds a key", across replicas: the partial unique index
``submits_held_key`` allows one holder per key, and ``begin`` inserts with
``ON CONFLICT … DO NOTHING``. Two replicas beginning with one key at once:
PostgreSQL makes the second insert wait for the first transaction, then
finds the conflict and inserts nothing; the second then reads the first's
record and answers from it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from server.store.base import Store, SubmitRecord, SubmitStart
from server.store.rows import SUBMIT_COLUMNS, submit_record

#: Old records dropped by one ``begin_submit`` at most (the rest go with the next ones).
FORGET_BATCH = 100

_HOLDER = (
    f"SELECT {SUBMIT_COLUMNS} FROM submits"
    " WHERE idempotency_key = %s AND key_held_until IS NOT NULL"
)


async def begin(
    conn: psycopg.AsyncConnection, start: SubmitStart, now: float
) -> tuple[SubmitRecord, bool]:
    """One transaction: let go of a key whose hold ran out, then take it or return its holder."""
    await conn.execute(
        "DELETE FROM submits WHERE id IN (SELECT id FROM submits WHERE created_at < %s"
        " AND (key_held_until IS NULL OR key_held_until <= %s) ORDER BY id LIMIT %s)",
        (start.forget_before, now, FORGET_BATCH),
    )
    if start.key is not None:
        await conn.execute(
            "UPDATE submits SET key_held_until = NULL"
            " WHERE idempotency_key = %s AND key_held_until <= %s",
            (start.key, now),
        )
        held = await (await conn.execute(_HOLDER, (start.key,))).fetchone()
        if held is not None:
            return submit_record(held), False
    inserted = await (
        await conn.execute(
            "INSERT INTO submits (provider, idempotency_key, fingerprint, status, body,"
            " created_at, lapses_at, key_held_until) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (idempotency_key) WHERE key_held_until IS NOT NULL DO NOTHING"
            f" RETURNING {SUBMIT_COLUMNS}",
            (
                start.provider,
                start.key,
                start.fingerprint,
                start.status,
                start.body,
                now,
                now + start.lapse_after,
                now + start.hold_for if start.key is not None else None,
            ),
        )
    ).fetchone()
    if inserted is not None:
        return submit_record(inserted), True
    held = await (await conn.execute(_HOLDER, (start.key,))).fetchone()  # took it meanwhile
    assert held is not None, "an insert that conflicted on a held key has a holder"
    return submit_record(held), False


async def finish(
    conn: psycopg.AsyncConnection,
    submit_id: int,
    status: int,
    body: str,
    task_id: str | None,
    trace_id: str | None,
    hold_for: float | None,
    now: float,
) -> SubmitRecord:
    """Keep the answer; hold the key ``hold_for`` more seconds, or let go of it (None).

    A record that no longer holds its key does not take it back.
    """
    row = await (
        await conn.execute(
            "UPDATE submits SET answered = true, status = %s, body = %s, task_id = %s,"
            " trace_id = %s, answered_at = %s,"
            " key_held_until = CASE WHEN key_held_until IS NULL OR %s THEN NULL ELSE %s END"
            f" WHERE id = %s RETURNING {SUBMIT_COLUMNS}",
            (
                status,
                body,
                task_id,
                trace_id,
                now,
                hold_for is None,
                now + (hold_for or 0),
                submit_id,
            ),
        )
    ).fetchone()
    if row is None:
        raise LookupError(f"no submit record {submit_id}")
    return submit_record(row)


class PostgresSubmits(Store):
    """The submit records of the PostgreSQL store (a mixin of ``PostgresStore``)."""

    # Provided by PostgresStore.
    _write: Callable[..., Awaitable[Any]]

    async def begin_submit(self, start: SubmitStart) -> tuple[SubmitRecord, bool]:
        now = time.time()
        began: tuple[SubmitRecord, bool] = await self._write(
            "recording a submit", lambda c: begin(c, start, now)
        )
        return began

    async def finish_submit(
        self,
        submit_id: int,
        status: int,
        body: str,
        *,
        task_id: str | None = None,
        trace_id: str | None = None,
        hold_for: float | None = None,
    ) -> SubmitRecord:
        now = time.time()
        finished: SubmitRecord = await self._write(
            "recording a submit's answer",
            lambda c: finish(c, submit_id, status, body, task_id, trace_id, hold_for, now),
        )
        return finished
