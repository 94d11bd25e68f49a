"""The seam between the webhook writes and a backend: one transaction, and its rows.

The writes (``queue``, ``endpoints``, ``claims``) are written once, as
coroutines over a ``Tx``. Their SQL uses ``?`` placeholders and ``true`` /
``false``, which both engines read; each backend's ``Tx`` translates the
placeholders and supplies what truly differs by engine:

- ``head``: the predicate "this message is its task's head", spelt as that
  backend's partial indexes spell it (SQLite's ``head = 1``, PostgreSQL's
  boolean ``head``), so the claim queries use them;
- ``lock``: appended to a SELECT of endpoint rows. Where one writer already
  serialises every write (SQLite) it is empty; on PostgreSQL it is
  ``FOR UPDATE``, so the messages of one endpoint change one transaction at a
  time, whichever replica runs it. Transactions that lock several endpoints
  take them in id order, so they cannot deadlock;
- ``lease_clock`` / ``lease_now``: the clock leases run on (the process's on
  SQLite; the database server's on PostgreSQL, so replicas whose clocks
  disagree still agree on when a claim lapsed);
- ``any_of``: "column is one of these values" (the store's ``_in``);
- ``feed_end``: the seq of the last event committed.

On SQLite the statements run at once, so a write never waits and runs to its
end on the writer thread (``server.store.sqlite.webhooks.settled``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from server.store.webhooks import Attempt, Endpoint

#: A row as a backend's cursor gives it.
Row = tuple[Any, ...]
#: ``(column, values)`` -> the condition "column is one of values" and its parameters.
AnyOf = Callable[[str, Sequence[Any]], tuple[str, list[Any]]]

#: In the order of ``Endpoint``'s fields.
ENDPOINT_COLUMNS = (
    "id, url, events, description, created_at, disabled_at, disabled_reason, failing_since,"
    " secret, previous_secret, previous_until"
)
ATTEMPT_COLUMNS = (
    "id, event_id, attempt, attempted_at, outcome, response_status, duration_ms, response, error"
)
MESSAGE_COLUMNS = (
    "id, endpoint_id, event_seq, event_id, task_key, committed_at, attempts, scheduled,"
    " manual, resume_at, claim"
)


class Tx(Protocol):
    """One write transaction of a backend, as the webhook writes see it."""

    #: The head predicate on a messages row, as the backend's partial indexes spell it.
    head: str
    #: Appended to a SELECT of endpoints: lock the rows until the transaction ends.
    lock: str

    async def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """The first row of ``sql``, or None."""

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Every row of ``sql`` (a SELECT, or a change with RETURNING)."""

    async def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a change; how many rows it changed."""

    #: SQL saying ``column`` is one of ``values`` (not empty), and its parameters: the
    #: store's ``_in``.
    any_of: AnyOf

    def lease_now(self, now: float) -> tuple[str, list[Any]]:
        """SQL for the current time on the lease clock, and its parameters."""

    async def lease_clock(self, now: float) -> float:
        """The current time on the lease clock (``now`` is the process's)."""

    async def feed_end(self) -> int:
        """The seq of the last event committed (0: none yet); pruning does not lower it."""


def endpoint_row(row: Sequence[Any]) -> Endpoint:
    """An ``Endpoint`` from a row selected as ``ENDPOINT_COLUMNS`` (events kept as JSON)."""
    ident, url, events = row[:3]
    return Endpoint(ident, url, tuple(json.loads(events)) if events is not None else None, *row[3:])


def attempt_row(row: Sequence[Any]) -> tuple[int, Attempt]:
    """(row id, attempt) of a row selected as ``ATTEMPT_COLUMNS``."""
    ident, event_id, number, at, outcome, status, duration, response, error = row
    return ident, Attempt(event_id, number, at, outcome, status, duration, response, error)


async def get_endpoint(tx: Tx, ident: str, *, lock: bool = False) -> Endpoint | None:
    """The endpoint, or None; ``lock``: lock its row for the transaction (see ``Tx.lock``)."""
    row = await tx.one(
        f"SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id = ?{tx.lock if lock else ''}",
        (ident,),
    )
    return endpoint_row(row) if row else None
