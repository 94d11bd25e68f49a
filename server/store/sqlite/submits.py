"""Submit records on SQLite: begin and finish (``Store.begin_submit``, ``finish_submit``).

A mixin of ``SQLiteStore``: its writes run on the store's one writer, each
as one transaction, so "at most one record holds a key" needs no more than
the partial unique index ``submits_held_key`` and a read inside the write.
Another process's writer waits on SQLite's lock (``BEGIN IMMEDIATE``), so the
same holds across processes.
"""

from __future__ import annotations

import sqlite3
import time

from server.store.base import Store, SubmitRecord, SubmitStart
from server.store.rows import SUBMIT_COLUMNS, submit_record
from server.store.sqlite.writer import Writer

#: SQLite's integers are 64-bit: no record has an id past this.
MAX_ID = 2**63 - 1
#: Old records dropped by one ``begin_submit`` at most (the rest go with the next ones).
FORGET_BATCH = 100


def _by_id(conn: sqlite3.Connection, submit_id: int) -> SubmitRecord:
    row = conn.execute(
        f"SELECT {SUBMIT_COLUMNS} FROM submits WHERE id = ?", (submit_id,)
    ).fetchone()
    if row is None:
        raise LookupError(f"no submit record {submit_id}")
    return submit_record(row)


def begin(conn: sqlite3.Connection, start: SubmitStart, now: float) -> tuple[SubmitRecord, bool]:
    """One transaction: let go of a key whose hold ran out, then take it or return its holder."""
    conn.execute(
        "DELETE FROM submits WHERE id IN (SELECT id FROM submits WHERE created_at < ?"
        " AND (key_held_until IS NULL OR key_held_until <= ?) ORDER BY id LIMIT ?)",
        (start.forget_before, now, FORGET_BATCH),
    )
    if start.key is not None:
        conn.execute(
            "UPDATE submits SET key_held_until = NULL"
            " WHERE idempotency_key = ? AND key_held_until <= ?",
            (start.key, now),
        )
        row = conn.execute(
            f"SELECT {SUBMIT_COLUMNS} FROM submits"
            " WHERE idempotency_key = ? AND key_held_until IS NOT NULL",
            (start.key,),
        ).fetchone()
        if row is not None:
            return submit_record(row), False
    cursor = conn.execute(
        "INSERT INTO submits (provider, idempotency_key, fingerprint, status, body, created_at,"
        " lapses_at, key_held_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
    assert cursor.lastrowid is not None
    return _by_id(conn, cursor.lastrowid), True


def finish(
    conn: sqlite3.Connection,
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
    conn.execute(
        "UPDATE submits SET answered = 1, status = ?, body = ?, task_id = ?, trace_id = ?,"
        " answered_at = ?, key_held_until = CASE WHEN key_held_until IS NULL OR ? IS NULL"
        " THEN NULL ELSE ? END WHERE id = ?",
        (status, body, task_id, trace_id, now, hold_for, now + (hold_for or 0), submit_id),
    )
    return _by_id(conn, submit_id)


class SubmitRecords(Store):
    """The submit records of the SQLite store (a mixin: the writer and readers are the store's)."""

    _writer: Writer

    async def begin_submit(self, start: SubmitStart) -> tuple[SubmitRecord, bool]:
        now = time.time()
        return await self._writer.run(lambda c: begin(c, start, now), size=len(start.body))

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
        return await self._writer.run(
            lambda c: finish(c, submit_id, status, body, task_id, trace_id, hold_for, now),
            size=len(body),
        )
