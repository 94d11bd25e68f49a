"""Submit records on PostgreSQL: begin and finish (``Store.begin_submit``, ``finish_submit``).

"At most one record holds a key", across replicas: the partial unique index
``submits_held_key`` allows one holder per key, and ``begin`` inserts with
``ON CONFLICT … DO NOTHING``. Two replicas beginning with one key at once:
PostgreSQL makes the second insert wait for the first transaction, then
finds the conflict and inserts nothing; the second then reads the first's
record and answers from it. The statements are the shared ones
(``server.store.statements``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg

from server.store import statements as sql
from server.store.postgres.connection import pyformat
from server.store.records import SubmitRecord, SubmitStart
from server.store.rows import SUBMIT_COLUMNS, submit_record
from server.store.sql import SQLStore

_FORGET = pyformat(sql.FORGET_SUBMITS)
_LET_GO = pyformat(sql.LET_GO_OF_KEY)
_HOLDER = pyformat(sql.HOLDER_OF_KEY)
_INSERT = pyformat(
    f"{sql.INSERT_SUBMIT} ON CONFLICT (idempotency_key) WHERE key_held_until IS NOT NULL"
    f" DO NOTHING RETURNING {SUBMIT_COLUMNS}"
)
_FINISH = pyformat(f"{sql.FINISH_SUBMIT} RETURNING {SUBMIT_COLUMNS}")


async def _holder(conn: psycopg.AsyncConnection, key: str | None) -> tuple[Any, ...] | None:
    return await (await conn.execute(_HOLDER, (key,))).fetchone()


async def begin(
    conn: psycopg.AsyncConnection, start: SubmitStart, now: float
) -> tuple[SubmitRecord, bool]:
    """One transaction: let go of a key whose hold ran out, then take it or return its holder."""
    await conn.execute(_FORGET, sql.forget_submits(start, now))
    if start.key is not None:
        await conn.execute(_LET_GO, (start.key, now))
        held = await _holder(conn, start.key)
        if held is not None:
            return submit_record(held), False
    inserted = await (await conn.execute(_INSERT, sql.new_submit(start, now))).fetchone()
    if inserted is not None:
        return submit_record(inserted), True
    held = await _holder(conn, start.key)  # took it meanwhile
    assert held is not None, "an insert that conflicted on a held key has a holder"
    return submit_record(held), False


async def finish(
    conn: psycopg.AsyncConnection, submit_id: int, params: Sequence[Any]
) -> SubmitRecord:
    """Keep the answer (``FINISH_SUBMIT`` with ``params``); the record as kept."""
    row = await (await conn.execute(_FINISH, params)).fetchone()
    if row is None:
        raise LookupError(f"no submit record {submit_id}")
    return submit_record(row)


class PostgresSubmits(SQLStore):
    """The submit records of the PostgreSQL store (a mixin of ``PostgresStore``)."""

    # Provided by PostgresStore.
    _write: Callable[..., Awaitable[Any]]

    async def _begin_submit(self, start: SubmitStart, now: float) -> tuple[SubmitRecord, bool]:
        began: tuple[SubmitRecord, bool] = await self._write(
            "recording a submit", lambda c: begin(c, start, now)
        )
        return began

    async def _finish_submit(
        self, submit_id: int, params: Sequence[Any], size: int
    ) -> SubmitRecord:
        finished: SubmitRecord = await self._write(
            "recording a submit's answer", lambda c: finish(c, submit_id, params)
        )
        return finished
