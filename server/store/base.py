"""The store contract: what every backend guarantees.

Everything taskhook keeps goes through a ``Store``. The rest of the code sees
only this class and its records (``server.store.records``, exported here
too), so a backend (SQLite, PostgreSQL) is one subclass that translates them
into its own SQL. What a backend must implement is every
``@abc.abstractmethod`` below and in the parts this class inherits
(``server.store.claims``, ``server.store.submits``,
``server.store.webhooks``); the domain decisions it applies are written
once, above it (``server.core.decide``, the renderer in
``server.core.render``), never in a backend.

Guarantees every backend gives (the contract suite in
``tests/store/test_contract.py`` checks each one):

- **Durable, atomic writes.** A write method returns only after its
  transaction committed, and a call is all or nothing: when it raises, none
  of its effects is visible (a bulk write is one transaction). Concurrent
  calls never spoil each other, however the backend groups their commits.
- **Per-task serial order, across processes.** Items about one task are
  applied one after another, each seeing the state the previous one left,
  whichever process or replica applies them.
- **Byte-identical repeats are recognised**: a body kept once for a task is
  never kept again, and a repeated callback changes nothing.
- **Events are written in the same transaction as the change that causes
  them** and read back in commit order (``events_after``).
- **Claims are exclusive and lapse.** A claimed archive row is held by one
  holder until its lease runs out; the holder renews it while it works. A dead
  holder's rows are taken over once their lease lapsed: liveness is never
  guessed from process ids, so it works across hosts.
- **Leases carry a term.** ``take_lease`` returns a new term when the holder
  changes; only the holder of the current term can renew it. (Leases and
  archive claims: ``server.store.claims.ClaimStore``.)
- **Cursors are opaque strings.** Callers pass back what they were given; a
  string the store did not hand out raises ``BadCursor``.
- **Webhooks** (endpoints, their messages and attempts) are stated in
  ``server.store.webhooks.WebhookStore``, which this contract inherits:
  exact fan-out from the outbox, order per task, claims with a lease.
- **Work is signalled through the store.** ``wait_for_work`` wakes when a
  commit (of this process, or of another one within about a second) may have
  made work of that kind.
- **Closing** finishes queued writes and is idempotent; using a closed store
  raises ``StoreClosed``.
- **Submit records hold idempotency keys across processes.** At most one
  record holds a given ``Idempotency-Key`` at a time, whichever process or
  replica asks (``begin_submit``); the guarantees are on the methods
  (``server.store.submits.SubmitStore``).

Errors a backend raises (all in ``server.errors``): ``StoreClosed``,
``StoreUnavailable`` (the database cannot be used now: 503), ``Overloaded``
(too much waiting to be written: 503 with Retry-After), ``StorageFull`` (the
disk is full: 503 with Retry-After), ``ProviderMismatch`` (409),
``BadCursor`` (400), ``SchemaTooNew``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from server.core.decide import Incoming
from server.core.ids import task_key
from server.core.types import TaskRecord
from server.errors import ConfigError, ProviderMismatch
from server.store.claims import ClaimStore
from server.store.records import (
    ArchiveJob,
    Delivery,
    DueTask,
    Event,
    IngestOutcome,
    Pruned,
    QuarantineItem,
    Registration,
    SubmitRecord,
    SubmitStart,
)
from server.store.submits import SubmitStore
from server.store.webhooks import WebhookStore

__all__ = [
    "CONCERNS",
    "ArchiveJob",
    "Pruned",
    "Delivery",
    "DueTask",
    "Event",
    "Incoming",
    "IngestOutcome",
    "QuarantineItem",
    "Registration",
    "Store",
    "SubmitRecord",
    "SubmitStart",
    "WorkKind",
]

#: Tasks an operator should look at: ``conflicts`` (a later final report disagreed
#: with the final state held; recorded, not applied), ``archive_failed`` (a result
#: copy failed for good, or failed and waits for its next try), ``gap_filled`` (the
#: final state came from the reconciler: the callback never came).
CONCERNS: tuple[str, ...] = ("conflicts", "archive_failed", "gap_filled")

#: What ``wait_for_work`` can wait for: archive copies to claim, events to read,
#: webhook messages made due by hand (redelivery, recovery, a re-enabled endpoint).
WorkKind = Literal["archive", "events", "webhooks"]


# -- the contract ----------------------------------------------------------------------


class Store(ClaimStore, SubmitStore, WebhookStore, abc.ABC):
    """Every operation taskhook does on its database, whatever the backend."""

    # -- lifecycle ---------------------------------------------------------------------

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, migrate the schema once (whoever starts first), be ready to serve.

        Raises ``SchemaTooNew`` for a database of a newer taskhook and
        ``StoreUnavailable`` when the database cannot be reached.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish every queued write, then release everything. Idempotent."""

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abc.abstractmethod
    async def check_writable(self) -> None:
        """Commit a tiny real write now, or raise (``/readyz``, ``check``)."""

    # -- tasks -------------------------------------------------------------------------

    @abc.abstractmethod
    async def ingest_many(self, items: Sequence[Incoming]) -> list[IngestOutcome]:
        """Apply the items in order, in one transaction; one outcome per item.

        All or nothing: if an item fails (a bug, an unreadable row), the call
        raises and none of the items is applied. Each item: the task is read
        and locked in the transaction, the pure ``core.decide`` decides, then
        the decision is written: the raw body (unless the store keeps these
        bytes for this task already), the task row, the archive rows to queue,
        the removal of a replayed quarantine row and the decision's events.
        An item naming a task held under another provider changes nothing;
        its body is quarantined (reason ``provider_mismatch``) and its outcome
        says
        ``mismatch``.
        """

    async def ingest(self, item: Incoming) -> IngestOutcome:
        """``ingest_many`` of one item; raises ``ProviderMismatch`` for a mismatch."""
        outcome = await self._ingest_one(item)
        if outcome.mismatch:
            raise ProviderMismatch(
                f"task {outcome.task_id!r} is held under provider {outcome.provider!r}, not"
                f" {item.provider!r}; the body was kept (quarantine id {outcome.quarantine_id})"
            )
        return outcome

    async def _ingest_one(self, item: Incoming) -> IngestOutcome:
        """One item's outcome, with the guarantees of ``ingest_many``.

        A backend may gather concurrent calls into one ``ingest_many`` (the
        SQLite backend does: ``sqlite.coalesce``); each caller still gets
        its own outcome, after its commit, or its own error.
        """
        return (await self.ingest_many([item]))[0]

    @abc.abstractmethod
    async def register(self, regs: Sequence[Registration]) -> list[TaskRecord]:
        """Create the tasks not known yet (a known task is left exactly as it is).

        Returns every named task as stored afterwards, in order. Registering
        causes no event.
        """

    async def get_task(self, task_id: str) -> TaskRecord | None:
        """The task, matched by ``task_key`` (no case, no dashes), or None."""
        records = await self.get_tasks_by_key([task_key(task_id)])
        return records[0] if records else None

    @abc.abstractmethod
    async def get_tasks_by_key(self, keys: Sequence[str]) -> list[TaskRecord]:
        """The known tasks among ``keys``, in the order asked, each once, with archives."""

    @abc.abstractmethod
    async def list_tasks(
        self,
        *,
        status: str | None = None,
        provider: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[TaskRecord], str | None]:
        """Newest first (by registration); ``(page, next_cursor)``, None after the last.

        Keyset pagination: a page is stable under concurrent inserts (new
        tasks come before the first page, never inside a later one).
        """

    @abc.abstractmethod
    async def deliveries(self, task_id: str) -> list[Delivery]:
        """Every distinct body kept for the task, oldest first."""

    @abc.abstractmethod
    async def due_tasks(
        self,
        now: float,
        limit: int,
        *,
        providers: Sequence[str] | None = None,
        task_ids: Sequence[str] | None = None,
        ignore_schedule: bool = False,
    ) -> list[DueTask]:
        """Unfinished tasks whose next check is at or before ``now``, the longest waiting first."""

    @abc.abstractmethod
    async def overdue_tasks(
        self, created_before: float, limit: int, *, providers: Sequence[str] | None = None
    ) -> list[DueTask]:
        """Unfinished tasks registered before ``created_before``, the oldest first."""

    @abc.abstractmethod
    async def stuck_tasks(self, created_before: float, limit: int = 100) -> list[TaskRecord]:
        """``overdue_tasks`` as records (the dashboard), the oldest first."""

    @abc.abstractmethod
    async def count_by_status(self) -> dict[str, int]:
        """How many tasks have each status (statuses with none are absent)."""

    @abc.abstractmethod
    async def unfinished_summary(self) -> tuple[int, float | None]:
        """How many tasks are unfinished, and when the oldest of them was registered."""

    # -- quarantine --------------------------------------------------------------------

    @abc.abstractmethod
    async def quarantine(
        self, provider: str, body: bytes, headers: Mapping[str, str], reason: str, message: str
    ) -> int:
        """Keep a delivery that could not be merged; returns its id.

        Beyond ``QUARANTINE_MAX_ROWS`` the oldest are dropped in the same
        transaction and counted (``counter("quarantine_dropped")``).
        """

    @abc.abstractmethod
    async def list_quarantine(
        self, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[QuarantineItem], str | None]:
        """Newest first; ``(page, next_cursor)``, None after the last page."""

    @abc.abstractmethod
    async def get_quarantined(self, quarantine_id: int) -> QuarantineItem | None:
        """One quarantined delivery, or None (also for ids no row could have)."""

    @abc.abstractmethod
    async def discard_quarantined(self, quarantine_id: int) -> bool:
        """Delete a quarantined delivery for good; true when it was there (False for ids
        no row could have)."""

    # -- what an operator should look at (the dashboard) -------------------------------

    @abc.abstractmethod
    async def find_tasks(self, prefix: str, limit: int = 50) -> list[TaskRecord]:
        """Tasks whose ``task_key`` starts with ``task_key(prefix)``, by key, with archives."""

    @abc.abstractmethod
    async def count_concerns(self) -> dict[str, int]:
        """How many tasks there are of each ``CONCERNS`` kind, by kind."""

    @abc.abstractmethod
    async def list_concern(
        self, concern: str, *, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[TaskRecord], str | None]:
        """The tasks of one ``CONCERNS`` kind, newest first, paged like ``list_tasks``."""

    # -- small values, counters, secrets -----------------------------------------------

    @abc.abstractmethod
    async def get_value(self, key: str, default: Any = None) -> Any:
        """A JSON value kept under ``key`` (shared by every process), or ``default``."""

    @abc.abstractmethod
    async def set_value(self, key: str, value: Any) -> None:
        """Keep a JSON value under ``key``, replacing the one held."""

    @abc.abstractmethod
    async def counter(self, name: str) -> int:
        """A counter kept in the database, so every process reports the same (0 if never)."""

    @abc.abstractmethod
    async def ensure_secret(self, name: str, candidate: str) -> tuple[str, bool]:
        """The secret stored under ``name``; stores ``candidate`` first if there is none.

        Returns ``(value, stored_now)``. Atomic across processes: when several
        start at once exactly one candidate is stored and all get it. The
        caller generates candidates (``server.secrets``), the store never does.
        """

    @abc.abstractmethod
    async def get_secret(self, name: str) -> str | None:
        """The secret stored under ``name``, or None."""

    # -- operations --------------------------------------------------------------------

    @abc.abstractmethod
    async def prune(self, cutoff: float | None) -> Pruned:
        """Drop what retention allows now; safe beside running writers.

        The raw bodies of deliveries of tasks that became final before
        ``cutoff`` (None: none) are dropped, each delivery's row staying with
        its ``sha256`` and metadata, so a repeat is still recognised as one;
        the quarantine is held to ``QUARANTINE_MAX_ROWS`` and
        ``QUARANTINE_MAX_BYTES``, oldest first. Works in small transactions,
        each costing what a day brought, not the whole history. Counters
        ``pruned_bodies``, ``pruned_bytes``, ``quarantine_dropped`` and
        ``quarantine_dropped_bytes`` add up what was dropped, and
        ``quarantine_bytes`` is what the quarantine holds, as bodies arrive.
        """

    @abc.abstractmethod
    async def database_bytes(self) -> int:
        """The database's size on disk (bytes), for ``/metrics``."""

    async def backup(self, path: str) -> int:
        """Write a consistent copy of the live database to the new file ``path``; its bytes.

        Backends whose database has its own tools for this (PostgreSQL:
        ``pg_dump``) raise ``ConfigError`` saying which.
        """
        raise ConfigError("this database is backed up with its own tools, not by taskhook")

    @abc.abstractmethod
    async def replace_secret(self, name: str, expected: str, value: str) -> bool:
        """Store ``value`` under ``name`` only if it still holds ``expected`` (compare-and-set).

        True when replaced. Atomic across processes: of two replacements of the
        same ``expected`` exactly one succeeds.
        """

    # -- the outbox --------------------------------------------------------------------

    @abc.abstractmethod
    async def events_after(
        self, cursor: str | None, types: set[str] | None = None, limit: int = 100
    ) -> tuple[list[Event], str]:
        """Events committed after ``cursor``, in commit order, oldest first.

        ``cursor`` None means the start. Returns ``(events, next_cursor)``;
        ``next_cursor`` is always set: after the last event returned, or the
        given cursor (the start's, for None) when there is none. Reading again
        from one cursor gives the same events: no gap, no duplicate, across
        restarts and processes (until retention prunes them). ``types``
        keeps only those types. Raises ``BadCursor`` for a string the store
        did not hand out.
        """

    @abc.abstractmethod
    async def prune_events(self, before: float) -> int:
        """Drop the events committed before ``before`` (EVENT_RETENTION); how many."""

    # -- work signals ------------------------------------------------------------------

    @abc.abstractmethod
    def work_mark(self, kind: WorkKind) -> int:
        """A counter of the work signals of ``kind`` seen so far (pass it to ``wait_for_work``)."""

    @abc.abstractmethod
    async def wait_for_work(
        self,
        kind: WorkKind,
        timeout: float,  # noqa: ASYNC109 - the answer says whether work came in time
        *,
        after: int | None = None,
    ) -> bool:
        """Wait until work of ``kind`` may be there, or ``timeout``; True when signalled.

        A commit that makes such work signals it: at once in this process,
        within about a second from another process. With ``after`` (a
        ``work_mark`` taken before reading), a signal that came since returns
        at once, so nothing committed between a read and the wait is missed.
        """

    @abc.abstractmethod
    def notify_work(self, kind: WorkKind) -> None:
        """Wake this process's waiters for ``kind`` (e.g. a worker freed a slot)."""
