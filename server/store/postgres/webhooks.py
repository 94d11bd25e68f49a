"""The webhook side of the PostgreSQL store: ``server.store.hooks`` under row locks.

A mixin of ``PostgresStore``. Several replicas run the writes of
``server.store.hooks`` at once, each as one transaction on a pooled
connection; every transaction that changes an endpoint's messages first locks
the endpoint's row (``FOR UPDATE``), so they stay exact without any other lock.
Claim leases run on the database server's clock. Writes that make messages due
by hand (redelivery, recovery, a re-enabled endpoint) wake the delivery loops
of every replica (``pg_notify``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import psycopg

from server.store.hooks.methods import HookWrite, WebhookMethods
from server.store.hooks.tx import AnyOf, Row
from server.store.postgres.connection import pyformat
from server.store.postgres.listener import CHANNEL
from server.store.postgres.values import DB_NOW

T = TypeVar("T")


class PostgresTx:
    """A ``Tx`` over a pooled connection inside its transaction.

    Endpoint rows are locked for the transaction (``FOR UPDATE``); leases run on
    the database server's clock; ``head`` is the boolean column, as the partial
    indexes ``messages_due`` and ``messages_next`` spell it.
    """

    lock = " FOR UPDATE"
    head = "head"

    def __init__(self, conn: psycopg.AsyncConnection, any_of: AnyOf) -> None:
        self.conn, self.any_of = conn, any_of

    def lease_now(self, now: float) -> tuple[str, list[Any]]:
        return DB_NOW, []

    async def lease_clock(self, now: float) -> float:
        row = await self.one(f"SELECT {DB_NOW}")
        assert row is not None
        return float(row[0])

    async def feed_end(self) -> int:
        """``event_counter`` moves in the transaction that commits the events, so every
        event up to what a statement reads here is committed and visible."""
        row = await self.one("SELECT seq FROM event_counter")
        return int(row[0]) if row else 0

    async def _cursor(self, sql: str, params: Sequence[Any]) -> psycopg.AsyncCursor[Row]:
        return await self.conn.execute(pyformat(sql), params)

    async def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return await (await self._cursor(sql, params)).fetchone()

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return await (await self._cursor(sql, params)).fetchall()

    async def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return max((await self._cursor(sql, params)).rowcount, 0)


class PostgresWebhooks(WebhookMethods):
    # Provided by PostgresStore.
    _write: Callable[..., Awaitable[Any]]
    notify_work: Callable[..., None]

    async def _hook_write(self, what: str, fn: HookWrite[T], *, wake: bool = False) -> T:
        async def run(conn: psycopg.AsyncConnection) -> T:
            value = await fn(PostgresTx(conn, self._in))
            if wake:
                await conn.execute("SELECT pg_notify(%s, 'webhooks')", (CHANNEL,))
            return value

        value: T = await self._write(what, run)
        if wake:
            self.notify_work("webhooks")
        return value
