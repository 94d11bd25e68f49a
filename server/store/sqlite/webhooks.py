"""The webhook side of the SQLite store: ``server.store.hooks`` on the one writer.

A mixin of the SQLite store, like the archive queue. The writes of
``server.store.hooks`` run as functions of the store's one writer thread, so
each sees and changes the database alone: fan-out, claims and settling are
exact across the processes sharing the file (``BEGIN IMMEDIATE`` serialises
them) without locking rows. Reads use the store's readers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from server.store.hooks.methods import HookWrite, WebhookMethods
from server.store.hooks.tx import AnyOf, Row

T = TypeVar("T")


class SQLiteTx:
    """A ``Tx`` over the writer's connection: every statement is answered at once.

    ``head`` is spelt ``head = 1``, as the partial indexes ``messages_due`` and
    ``messages_next`` are (a bare ``head`` would not use them); nothing is
    locked, since the one writer serialises every write; leases run on the
    process's clock.
    """

    head, lock = "head = 1", ""

    def __init__(self, conn: sqlite3.Connection, any_of: AnyOf) -> None:
        self.conn = conn
        self.any_of = any_of

    async def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self.conn.execute(sql, params).fetchone()
        return row

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.conn.execute(sql, params).fetchall()

    async def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.conn.execute(sql, params).rowcount

    def lease_now(self, now: float) -> tuple[str, list[Any]]:
        return "?", [now]

    async def lease_clock(self, now: float) -> float:
        return now

    async def feed_end(self) -> int:
        """The last seq AUTOINCREMENT handed out for events (pruning does not lower it)."""
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return int(row[0]) if row else 0


def settled(write: Coroutine[Any, Any, T]) -> T:
    """Run a webhook write to its end, here on the writer thread.

    Its statements go to ``SQLiteTx``, which answers at once, so the coroutine
    never waits: one step finishes it.
    """
    try:
        write.send(None)
    except StopIteration as done:
        value: T = done.value
        return value
    write.close()
    raise RuntimeError("a webhook write on SQLite waited for something other than SQLite")


class WebhookQueue(WebhookMethods):
    # Provided by the store: its writer.
    _webhook_write: Callable[..., Awaitable[Any]]

    async def _hook_write(self, what: str, fn: HookWrite[T], *, wake: bool = False) -> T:
        value: T = await self._webhook_write(
            lambda c: settled(fn(SQLiteTx(c, self._in))), wake=wake
        )
        return value
