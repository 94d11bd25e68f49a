"""The webhook side of the PostgreSQL store: endpoints, messages and attempts.

A mixin of ``PostgresStore``: writes are the functions of ``webhook_writes``,
each run as one transaction on a pooled connection; reads are single
statements. Writes that make messages due by hand (redelivery, recovery, a
re-enabled endpoint) wake the delivery loops of every replica (``pg_notify``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import psycopg

from server.delivery.schedule import Next, Outcome
from server.errors import BadCursor
from server.settings import Settings
from server.store.postgres import webhook_writes as w
from server.store.postgres.listener import CHANNEL
from server.store.webhooks import (
    Attempt,
    Backlog,
    Claim,
    Claims,
    Endpoint,
    Redelivery,
    Settled,
    WebhookStore,
)

T = TypeVar("T")
#: Rows of each table one pruning transaction drops at most.
PRUNE_BATCH = 2000
Write = Callable[[psycopg.AsyncConnection], Awaitable[T]]


def new_endpoint_id() -> str:
    return f"ep_{secrets.token_hex(10)}"


def _attempt_cursor(text: str | None) -> int | None:
    if text is None:
        return None
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return int(text)
    raise BadCursor(f"cursor {text[:40]!r} is not one this API gave out")


class PostgresWebhooks(WebhookStore):
    settings: Settings

    # Provided by PostgresStore.
    _write: Callable[..., Awaitable[Any]]
    _fetchall: Callable[..., Awaitable[list[tuple[Any, ...]]]]
    _fetchone: Callable[..., Awaitable[tuple[Any, ...] | None]]
    notify_work: Callable[..., None]

    @property
    def _first_delay(self) -> float:
        return float(self.settings.retry_schedule[0])

    async def _waking(self, what: str, fn: Write[T]) -> T:
        """A write that makes messages due now: every replica's delivery loop looks."""

        async def run(conn: psycopg.AsyncConnection) -> T:
            value = await fn(conn)
            await conn.execute("SELECT pg_notify(%s, 'webhooks')", (CHANNEL,))
            return value

        value: T = await self._write(what, run)
        self.notify_work("webhooks")
        return value

    # -- endpoints ---------------------------------------------------------------------

    async def create_endpoint(
        self, url: str, events: Sequence[str] | None, description: str | None, secret: str
    ) -> Endpoint:
        ident, now = new_endpoint_id(), time.time()
        created: Endpoint = await self._write(
            "creating an endpoint",
            lambda c: w.create_endpoint(c, ident, url, events, description, secret, now),
        )
        return created

    async def get_endpoint(self, endpoint_id: str) -> Endpoint | None:
        row = await self._fetchone(
            "reading an endpoint",
            f"SELECT {w.ENDPOINT_COLUMNS} FROM endpoints WHERE id = %s",
            (endpoint_id,),
        )
        return w.endpoint_row(row) if row else None

    async def list_endpoints(self) -> list[Endpoint]:
        rows = await self._fetchall(
            "listing endpoints",
            f"SELECT {w.ENDPOINT_COLUMNS} FROM endpoints ORDER BY created_at, id",
        )
        return [w.endpoint_row(r) for r in rows]

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        deleted: bool = await self._write(
            "removing an endpoint", lambda c: w.delete_endpoint(c, endpoint_id)
        )
        return deleted

    async def rotate_endpoint_secret(
        self, endpoint_id: str, secret: str, overlap: float
    ) -> Endpoint | None:
        now = time.time()
        rotated: Endpoint | None = await self._write(
            "rotating an endpoint's secret",
            lambda c: w.rotate_secret(c, endpoint_id, secret, overlap, now),
        )
        return rotated

    async def enable_endpoint(self, endpoint_id: str) -> Endpoint | None:
        return await self._waking(
            "enabling an endpoint", lambda c: w.enable_endpoint(c, endpoint_id)
        )

    # -- delivery ----------------------------------------------------------------------

    async def claim_messages(
        self, holder: str, limit: int, per_endpoint: int, lease: float
    ) -> Claims:
        now, first = time.time(), self._first_delay
        claims: Claims = await self._write(
            "claiming webhook attempts",
            lambda c: w.claim(c, holder, limit, per_endpoint, lease, first, now),
        )
        return claims

    async def finish_message(
        self, claim: Claim, holder: str, attempt: Attempt, nxt: Next
    ) -> Settled:
        now, first = time.time(), self._first_delay
        disable_after = self.settings.delivery_disable_after
        settled: Settled = await self._write(
            "recording a webhook attempt",
            lambda c: w.finish(c, claim, attempt, nxt, disable_after, first, now),
        )
        return settled

    async def release_messages(self, holder: str) -> int:
        released: int = await self._write(
            "releasing webhook claims", lambda c: w.release(c, holder)
        )
        return released

    async def redeliver_event(self, event_id: str, endpoint_id: str | None) -> Redelivery | None:
        now = time.time()
        return await self._waking(
            "queueing a redelivery", lambda c: w.redeliver(c, event_id, endpoint_id, now)
        )

    async def recover_endpoint(self, endpoint_id: str, since: float) -> int:
        now = time.time()
        return await self._waking(
            "recovering an endpoint", lambda c: w.recover(c, endpoint_id, since, now)
        )

    async def prune_webhooks(self, before: float) -> int:
        """In batches of ``PRUNE_BATCH`` rows a table, each its own short transaction."""
        total = 0
        while True:
            attempts: int
            messages: int
            attempts, messages = await self._write(
                "pruning webhook rows", lambda c: w.prune(c, before, PRUNE_BATCH)
            )
            total += attempts + messages
            if attempts < PRUNE_BATCH and messages < PRUNE_BATCH:
                return total

    # -- reads -------------------------------------------------------------------------

    async def list_attempts(
        self,
        endpoint_id: str,
        *,
        outcome: Outcome | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Attempt], str | None]:
        before = _attempt_cursor(cursor)
        where: list[str] = ["endpoint_id = %s"]
        params: list[Any] = [endpoint_id]
        if outcome is not None:
            where.append("outcome = %s")
            params.append(outcome)
        if before is not None:
            where.append("id < %s")
            params.append(before)
        rows = await self._fetchall(
            "reading webhook attempts",
            f"SELECT {w.ATTEMPT_COLUMNS} FROM attempts WHERE {' AND '.join(where)}"
            " ORDER BY id DESC LIMIT %s",
            [*params, limit + 1],
        )
        read = [w.attempt_row(r) for r in rows[:limit]]
        next_cursor = str(read[-1][0]) if len(rows) > limit else None
        return [attempt for _, attempt in read], next_cursor

    async def webhook_backlog(self) -> list[Backlog]:
        rows = await self._fetchall(
            "reading the webhook backlog",
            "SELECT e.id, e.url, e.disabled_at, e.disabled_reason,"
            " (SELECT count(*) FROM messages m WHERE m.endpoint_id = e.id"
            "  AND m.status = 'pending'),"
            " (SELECT m.committed_at FROM messages m WHERE m.endpoint_id = e.id"
            "  AND m.status = 'pending' ORDER BY m.event_seq LIMIT 1)"
            " FROM endpoints e ORDER BY e.created_at, e.id",
        )
        return [Backlog(*r) for r in rows]
