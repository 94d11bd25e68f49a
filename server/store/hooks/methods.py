"""The ``WebhookStore`` methods, once for every backend.

A backend mixes ``WebhookMethods`` into its store and supplies
``_hook_write``: a coroutine over a ``Tx``, run as one transaction, answered
once committed (``wake``: it made messages due now, so every delivery loop
should look). Like the other parts of a SQL store it derives from ``SQLStore``
and reads through its ``_select`` and ``_in`` (``server.store.queries``).
"""

from __future__ import annotations

import abc
import secrets
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from server.core.delivery_schedule import Next, Outcome
from server.errors import BadCursor
from server.store.hooks import claims, endpoints, queue
from server.store.hooks.tx import (
    ATTEMPT_COLUMNS,
    ENDPOINT_COLUMNS,
    Tx,
    attempt_row,
    endpoint_row,
)
from server.store.sql import SQLStore
from server.store.webhooks import (
    Attempt,
    Backlog,
    Claim,
    Claims,
    Endpoint,
    Redelivery,
    Settled,
)

T = TypeVar("T")
#: A webhook write: a coroutine over one transaction.
HookWrite = Callable[[Tx], Coroutine[Any, Any, T]]
#: Rows of each table one pruning transaction drops at most.
PRUNE_BATCH = 2000


def new_endpoint_id() -> str:
    return f"ep_{secrets.token_hex(10)}"


def attempt_cursor(text: str | None) -> int | None:
    """The attempt row id a ``list_attempts`` cursor stands for (None: from the newest)."""
    if text is None:
        return None
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return int(text)
    raise BadCursor(f"cursor {text[:40]!r} is not one this API gave out")


class WebhookMethods(SQLStore):
    """The webhook side of a SQL store (see the module docstring)."""

    @abc.abstractmethod
    async def _hook_write(self, what: str, fn: HookWrite[T], *, wake: bool = False) -> T:
        """``fn(tx)`` in one transaction; returns once committed. ``what`` names it in errors."""

    @property
    def _first_delay(self) -> float:
        return float(self.settings.retry_schedule[0])

    # -- endpoints ---------------------------------------------------------------------

    async def create_endpoint(
        self, url: str, events: Sequence[str] | None, description: str | None, secret: str
    ) -> Endpoint:
        ident, now = new_endpoint_id(), time.time()
        return await self._hook_write(
            "creating an endpoint",
            lambda tx: endpoints.create(tx, ident, url, events, description, secret, now),
        )

    async def get_endpoint(self, endpoint_id: str) -> Endpoint | None:
        rows = await self._select(
            "reading an endpoint",
            f"SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id = ?",
            (endpoint_id,),
        )
        return endpoint_row(rows[0]) if rows else None

    async def list_endpoints(self) -> list[Endpoint]:
        rows = await self._select(
            "listing endpoints",
            f"SELECT {ENDPOINT_COLUMNS} FROM endpoints ORDER BY created_at, id",
        )
        return [endpoint_row(r) for r in rows]

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        return await self._hook_write(
            "removing an endpoint", lambda tx: endpoints.delete(tx, endpoint_id)
        )

    async def rotate_endpoint_secret(
        self, endpoint_id: str, secret: str, overlap: float
    ) -> Endpoint | None:
        now = time.time()
        return await self._hook_write(
            "rotating an endpoint's secret",
            lambda tx: endpoints.rotate_secret(tx, endpoint_id, secret, overlap, now),
        )

    async def enable_endpoint(self, endpoint_id: str) -> Endpoint | None:
        return await self._hook_write(
            "enabling an endpoint", lambda tx: endpoints.enable(tx, endpoint_id), wake=True
        )

    # -- delivery ----------------------------------------------------------------------

    async def claim_messages(
        self, holder: str, limit: int, per_endpoint: int, lease: float
    ) -> Claims:
        now, first = time.time(), self._first_delay
        return await self._hook_write(
            "claiming webhook attempts",
            lambda tx: claims.claim(tx, holder, limit, per_endpoint, lease, first, now),
        )

    async def finish_message(
        self, claim: Claim, holder: str, attempt: Attempt, nxt: Next
    ) -> Settled:
        now, first = time.time(), self._first_delay
        disable_after = self.settings.delivery_disable_after
        return await self._hook_write(
            "recording a webhook attempt",
            lambda tx: claims.finish(tx, claim, attempt, nxt, disable_after, first, now),
        )

    async def release_messages(self, holder: str) -> int:
        return await self._hook_write(
            "releasing webhook claims", lambda tx: claims.release(tx, holder)
        )

    async def redeliver_event(self, event_id: str, endpoint_id: str | None) -> Redelivery | None:
        now = time.time()
        return await self._hook_write(
            "queueing a redelivery",
            lambda tx: queue.redeliver(tx, event_id, endpoint_id, now),
            wake=True,
        )

    async def recover_endpoint(self, endpoint_id: str, since: float) -> int:
        now = time.time()
        return await self._hook_write(
            "recovering an endpoint",
            lambda tx: queue.recover(tx, endpoint_id, since, now),
            wake=True,
        )

    async def prune_webhooks(self, before: float) -> int:
        """In batches of ``PRUNE_BATCH`` rows a table, each its own short transaction, so a
        large prune never holds the writer (and the callbacks behind it) for long."""
        total = 0
        while True:
            attempts, messages = await self._hook_write(
                "pruning webhook rows", lambda tx: queue.prune(tx, before, PRUNE_BATCH)
            )
            total += attempts + messages
            if attempts < PRUNE_BATCH and messages < PRUNE_BATCH:
                return total

    # -- reads -------------------------------------------------------------------------

    async def _list_attempts(
        self, endpoint_id: str, outcome: Outcome | None, limit: int, cursor: str | None
    ) -> tuple[list[Attempt], str | None]:
        before = attempt_cursor(cursor)
        filters = {"endpoint_id = ?": endpoint_id, "outcome = ?": outcome, "id < ?": before}
        given = {term: value for term, value in filters.items() if value is not None}
        rows = await self._select(
            "reading webhook attempts",
            f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE {' AND '.join(given)}"
            " ORDER BY id DESC LIMIT ?",
            [*given.values(), limit + 1],
        )
        page = [attempt_row(r) for r in rows[:limit]]
        after = str(page[-1][0]) if len(rows) > limit else None
        return [attempt for _, attempt in page], after

    async def webhook_backlog(self) -> list[Backlog]:
        rows = await self._select(
            "reading the webhook backlog",
            "SELECT e.id, e.url, e.disabled_at, e.disabled_reason,"
            " (SELECT count(*) FROM messages m WHERE m.endpoint_id = e.id"
            "  AND m.status = 'pending'),"
            " (SELECT m.committed_at FROM messages m WHERE m.endpoint_id = e.id"
            "  AND m.status = 'pending' ORDER BY m.event_seq LIMIT 1)"
            " FROM endpoints e ORDER BY e.created_at, e.id",
        )
        return [Backlog(*r) for r in rows]
