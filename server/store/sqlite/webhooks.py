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
from server.store.hooks.tx import Row

T = TypeVar("T")


class SQLiteTx:
    """A ``Tx`` over the writer's connection: every statement is answered at once."""

    #: As the partial indexes ``messages_due`` and ``messages_next`` spell it.
    head = "head = 1"
    #: One writer serialises every write: nothing to lock.
    lock = ""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self.conn.execute(sql, params).fetchone()
        return row

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.conn.execute(sql, params).fetchall()

    async def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.conn.execute(sql, params).rowcount

    def any_of(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} IN ({', '.join('?' * len(values))})", list(values)

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
    # Provided by the store: its writer and read helper.
    _webhook_write: Callable[..., Awaitable[Any]]
    _fetchall: Callable[..., Awaitable[list[Any]]]

    async def _hook_write(self, what: str, fn: HookWrite[T], *, wake: bool = False) -> T:
        value: T = await self._webhook_write(lambda c: settled(fn(SQLiteTx(c))), wake=wake)
        return value

    async def _hook_read(self, what: str, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return await self._fetchall(sql, params)
