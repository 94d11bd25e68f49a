"""Submit records on SQLite: begin and finish (``Store.begin_submit``, ``finish_submit``).

A mixin of ``SQLiteStore``: its writes run on the store's one writer, each
as one transaction, so "at most one record holds a key" needs no more than
the partial unique index ``submits_held_key`` and a read inside the write.
Another process's writer waits on SQLite's lock (``BEGIN IMMEDIATE``), so the
same holds across processes. The statements are the shared ones
(``server.store.statements``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from server.store import statements as sql
from server.store.records import SubmitRecord, SubmitStart
from server.store.rows import SUBMIT_COLUMNS, submit_record
from server.store.sql import SQLStore
from server.store.sqlite.writer import Writer


def _by_id(conn: sqlite3.Connection, submit_id: int) -> SubmitRecord:
    row = conn.execute(
        f"SELECT {SUBMIT_COLUMNS} FROM submits WHERE id = ?", (submit_id,)
    ).fetchone()
    if row is None:
        raise LookupError(f"no submit record {submit_id}")
    return submit_record(row)


def begin(conn: sqlite3.Connection, start: SubmitStart, now: float) -> tuple[SubmitRecord, bool]:
    """One transaction: let go of a key whose hold ran out, then take it or return its holder."""
    conn.execute(sql.FORGET_SUBMITS, sql.forget_submits(start, now))
    if start.key is not None:
        conn.execute(sql.LET_GO_OF_KEY, (start.key, now))
        row = conn.execute(sql.HOLDER_OF_KEY, (start.key,)).fetchone()
        if row is not None:
            return submit_record(row), False
    cursor = conn.execute(sql.INSERT_SUBMIT, sql.new_submit(start, now))
    assert cursor.lastrowid is not None
    return _by_id(conn, cursor.lastrowid), True


def finish(conn: sqlite3.Connection, submit_id: int, params: Sequence[Any]) -> SubmitRecord:
    """Keep the answer (``FINISH_SUBMIT`` with ``params``); the record as kept."""
    conn.execute(sql.FINISH_SUBMIT, params)
    return _by_id(conn, submit_id)


class SubmitRecords(SQLStore):
    """The submit records of the SQLite store (a mixin: the writer is the store's)."""

    _writer: Writer

    async def _begin_submit(self, start: SubmitStart, now: float) -> tuple[SubmitRecord, bool]:
        return await self._writer.run(lambda c: begin(c, start, now), size=len(start.body))

    async def _finish_submit(
        self, submit_id: int, params: Sequence[Any], size: int
    ) -> SubmitRecord:
        return await self._writer.run(lambda c: finish(c, submit_id, params), size=size)
