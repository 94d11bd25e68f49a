"""The PostgreSQL backend of the store contract (``server.store.base.Store``).

Several replicas, on any hosts, share one database. Each process has a pool
of ``DATABASE_POOL_SIZE`` connections: reads take one for a statement;
ingests go through the group writer (``writer``: one transaction and one
WAL flush for every request waiting); the other writes run as their own short
transactions. A LISTEN connection (``listener``) turns other replicas'
commits into wake-ups.

What PostgreSQL adds to the contract's guarantees, and how:

- per-task serial order across replicas: the task row is locked ``FOR
  UPDATE`` for the whole transaction (``ingest``);
- byte-identical repeats across replicas: checked under that lock, with
  ``UNIQUE (task_key, sha256)`` behind it;
- events in commit order: numbered under the ``event_counter`` row lock
  (``events``);
- claims with ``FOR UPDATE SKIP LOCKED`` and leases on the server's clock
  (``archive``, ``values``);
- a lost server: every operation fails with ``StoreUnavailable`` (503) while
  it is away, and works again when it is back, without a restart.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import psycopg

from server.core import schedule
from server.core.codec import state_to_dict
from server.core.decide import new_task
from server.core.ids import task_key
from server.core.types import Status, TaskRecord
from server.errors import BadCursor, ConfigError, StoreClosed
from server.settings import Settings
from server.store.base import (
    CONCERNS,
    ArchiveJob,
    Delivery,
    DueTask,
    Event,
    Incoming,
    IngestOutcome,
    Pruned,
    QuarantineItem,
    Registration,
    Store,
    WorkKind,
)
from server.store.postgres import archive, connection, ingest, retention, values
from server.store.postgres import events as outbox
from server.store.postgres.listener import Listener
from server.store.postgres.rows import (
    DELIVERY_COLUMNS,
    DUE_COLUMNS,
    QUARANTINE_COLUMNS,
    TASK_COLUMNS,
    delivery,
    due_task,
    dumps,
    event_row,
    quarantined,
    task_record,
)
from server.store.postgres.schema import migrate
from server.store.postgres.submits import PostgresSubmits
from server.store.postgres.webhooks import PostgresWebhooks
from server.store.postgres.writer import RETRYABLE, GroupWriter
from server.store.signals import KINDS, WorkSignals

T = TypeVar("T")
MAX_ROW_ID = 2**63 - 1
#: ``CONCERNS`` as SQL conditions on ``tasks`` (see ``server.store.base.CONCERNS``). The
#: state is read as ``json``, not ``jsonb``: it may hold ``\u0000``, which jsonb refuses.
_CONCERNS: dict[str, str] = {
    "conflicts": "status IN ('succeeded', 'failed')"
    " AND json_array_length(state::json -> 'conflicts') > 0",
    "archive_failed": "key IN (SELECT task_key FROM archives WHERE status = 'failed'"
    " OR (status IN ('pending', 'running') AND error IS NOT NULL))",
    "gap_filled": "final_source = 'reconcile'",
}
#: A health check's write must find a connection within this long.
CHECK_TIMEOUT = 2.0


def _observe_commit(size: int, seconds: float) -> None:
    from server.observe.metrics import observe_commit

    observe_commit(size, seconds)


def _row_cursor(text: str | None) -> int | None:
    """A decimal row id cursor, as handed out; ``BadCursor`` for anything else."""
    if text is None:
        return None
    if text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= MAX_ROW_ID:
        return int(text)
    raise BadCursor(f"cursor {text[:40]!r} is not one this API gave out")


class PostgresStore(PostgresSubmits, PostgresWebhooks, Store):
    """The store on a PostgreSQL server (``DATABASE_URL=postgresql://…``)."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_commit: Callable[[int, float], None] | None = _observe_commit,
    ) -> None:
        self.settings = settings
        self._url = settings.database_url
        self._pool = connection.open_pool(self._url, settings.database_pool_size)
        self._listener = Listener(self._url, self._notify_many)
        self._signals = WorkSignals(probe=self._listener.probe)
        self._rules = ingest.Rules(
            grace=settings.reconcile_grace,
            archive=settings.archive,
            quarantine_max_rows=settings.quarantine_max_rows,
            quarantine_max_bytes=settings.quarantine_max_bytes,
        )
        self._writer: GroupWriter[Sequence[Incoming], list[IngestOutcome]] = GroupWriter(
            self._pool.connection,
            self._apply_ingests,
            writers=max(1, min(2, settings.database_pool_size // 2)),
            on_commit=on_commit,
        )
        self._opened = False
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Check the server answers, migrate once, open the pool, listen, start the writer.

        Raises ``ConfigError`` (one line naming DATABASE_URL, password hidden)
        when the server cannot be reached or refuses us.
        """
        await connection.reach(self._url)
        conn = await connection.connect(self._url)
        async with conn:
            await migrate(conn)
        await self._pool.open(wait=True, timeout=connection.POOL_TIMEOUT * 2)
        self._signals.bind(asyncio.get_running_loop())
        await self._listener.start()
        self._writer.start()
        self._opened = True

    async def close(self) -> None:
        """Commit queued writes, stop listening, close every connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._writer.close()
        await self._listener.stop()
        await self._pool.close()

    def _usable(self) -> None:
        if self._closed or not self._opened:
            raise StoreClosed("the store is closed (or was never opened); nothing was done")

    async def _fetchall(self, what: str, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        self._usable()
        async with connection.unavailable(self._url, what), self._pool.connection() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchall()

    async def _fetchone(self, what: str, sql: str, params: Any = ()) -> tuple[Any, ...] | None:
        rows = await self._fetchall(what, sql, params)
        return rows[0] if rows else None

    async def _write(
        self,
        what: str,
        fn: Callable[[psycopg.AsyncConnection], Awaitable[T]],
        *,
        wait: float | None = None,
    ) -> T:
        """``fn(conn)`` in one transaction; returns once committed (retried once on deadlock)."""
        self._usable()
        for attempt in (1, 2):
            try:
                async with (
                    connection.unavailable(self._url, what),
                    self._pool.connection(timeout=wait) as conn,
                    conn.transaction(),
                ):
                    return await fn(conn)
            except RETRYABLE:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def check_writable(self) -> None:
        now = time.time()
        await self._write(
            "the health check",
            lambda c: values.set_value(c, "heartbeat", repr(now)),
            wait=CHECK_TIMEOUT,
        )

    # -- tasks -------------------------------------------------------------------------

    async def _apply_ingests(
        self, conn: psycopg.AsyncConnection, requests: Sequence[Sequence[Incoming]]
    ) -> list[list[IngestOutcome]]:
        return await ingest.apply_group(conn, requests, time.time(), self._rules)

    async def ingest_many(self, items: Sequence[Incoming]) -> list[IngestOutcome]:
        if not items:
            return []
        self._usable()
        size = sum(len(i.body) for i in items if i.body is not None)
        outcomes = await self._writer.run(items, size=size)
        if any(o.archive_queued for o in outcomes):
            self._signals.notify("archive")
        if any(o.events for o in outcomes):
            self._signals.notify("events")
        return outcomes

    async def register(self, regs: Sequence[Registration]) -> list[TaskRecord]:
        now, grace = time.time(), self.settings.reconcile_grace
        rows = []
        for reg in regs:
            state = new_task(reg.task_id, reg.provider, trace_id=reg.trace_id)
            rows.append(
                (
                    task_key(reg.task_id),
                    state.task_id,
                    reg.provider,
                    state.status.value,
                    dumps(state_to_dict(state)),
                    dumps(dict(reg.metadata or {})),
                    now,
                    now,
                    schedule.first_check(now, grace),
                )
            )

        async def insert(conn: psycopg.AsyncConnection) -> None:
            async with conn.pipeline():
                # Key order, like every writer, so concurrent writers cannot deadlock.
                for row in sorted(rows, key=lambda r: r[0]):
                    await conn.execute(
                        "INSERT INTO tasks (key, task_id, provider, status, state, metadata,"
                        " created_at, updated_at, next_check_at)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                        " ON CONFLICT (key) DO NOTHING",
                        row,
                    )

        await self._write("registering tasks", insert)
        return await self.get_tasks_by_key([r[0] for r in rows])

    async def get_tasks_by_key(self, keys: Sequence[str]) -> list[TaskRecord]:
        unique = list(dict.fromkeys(keys))
        if not unique:
            return []
        rows = await self._fetchall(
            "reading tasks",
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE key = ANY(%s)",
            (unique,),
        )
        found = {row[0]: task_record(row) for row in rows}
        return await self._with_archives([found[k] for k in unique if k in found])

    async def _with_archives(self, records: list[TaskRecord]) -> list[TaskRecord]:
        keys = [task_key(r.state.task_id) for r in records if r.state.status is Status.SUCCEEDED]
        if not keys:
            return records
        self._usable()
        async with (
            connection.unavailable(self._url, "reading archive outcomes"),
            self._pool.connection() as conn,
        ):
            by_key = await archive.shown(conn, keys)
        return [
            replace(r, archives=by_key[k]) if (k := task_key(r.state.task_id)) in by_key else r
            for r in records
        ]

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        provider: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[TaskRecord], str | None]:
        """Newest first; keyset pagination on ``seq`` (the cursor: the last seq seen)."""
        after = _row_cursor(cursor)
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("status", status), ("provider", provider)):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        if after is not None:
            where.append("seq < %s")
            params.append(after)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._fetchall(
            "listing tasks",
            f"SELECT seq, {TASK_COLUMNS} FROM tasks {clause} ORDER BY seq DESC LIMIT %s",
            [*params, limit + 1],
        )
        records = [task_record(r[1:]) for r in rows[:limit]]
        next_cursor = str(rows[limit - 1][0]) if len(rows) > limit else None
        return await self._with_archives(records), next_cursor

    async def deliveries(self, task_id: str) -> list[Delivery]:
        rows = await self._fetchall(
            "reading deliveries",
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE task_key = %s ORDER BY id",
            (task_key(task_id),),
        )
        return [delivery(r) for r in rows]

    async def due_tasks(
        self,
        now: float,
        limit: int,
        *,
        providers: Sequence[str] | None = None,
        task_ids: Sequence[str] | None = None,
        ignore_schedule: bool = False,
    ) -> list[DueTask]:
        where = ["next_check_at IS NOT NULL"]
        params: list[Any] = []
        if not ignore_schedule:
            where.append("next_check_at <= %s")
            params.append(now)
        if providers:
            where.append("provider = ANY(%s)")
            params.append(list(providers))
        if task_ids:
            where.append("key = ANY(%s)")
            params.append([task_key(t) for t in task_ids])
        rows = await self._fetchall(
            "reading due tasks",
            f"SELECT {DUE_COLUMNS} FROM tasks WHERE {' AND '.join(where)}"
            " ORDER BY next_check_at LIMIT %s",
            [*params, limit],
        )
        return [due_task(r) for r in rows]

    async def overdue_tasks(
        self, created_before: float, limit: int, *, providers: Sequence[str] | None = None
    ) -> list[DueTask]:
        where = ["next_check_at IS NOT NULL", "created_at < %s"]
        params: list[Any] = [created_before]
        if providers:
            where.append("provider = ANY(%s)")
            params.append(list(providers))
        rows = await self._fetchall(
            "reading overdue tasks",
            f"SELECT {DUE_COLUMNS} FROM tasks WHERE {' AND '.join(where)}"
            " ORDER BY created_at LIMIT %s",
            [*params, limit],
        )
        return [due_task(r) for r in rows]

    async def stuck_tasks(self, created_before: float, limit: int = 100) -> list[TaskRecord]:
        rows = await self._fetchall(
            "reading stuck tasks",
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE next_check_at IS NOT NULL"
            " AND created_at < %s ORDER BY created_at LIMIT %s",
            (created_before, limit),
        )
        return [task_record(r) for r in rows]

    async def count_by_status(self) -> dict[str, int]:
        rows = await self._fetchall(
            "counting tasks",
            "SELECT status, count(*) FROM tasks GROUP BY status",
        )
        return {r[0]: r[1] for r in rows}

    async def unfinished_summary(self) -> tuple[int, float | None]:
        row = await self._fetchone(
            "counting unfinished tasks",
            "SELECT count(*), min(created_at) FROM tasks WHERE next_check_at IS NOT NULL",
        )
        assert row is not None
        return int(row[0]), row[1]

    # -- quarantine --------------------------------------------------------------------

    async def quarantine(
        self, provider: str, body: bytes, headers: Mapping[str, str], reason: str, message: str
    ) -> int:
        now, cap = time.time(), self.settings.quarantine_max_rows
        max_bytes = self.settings.quarantine_max_bytes

        async def keep(conn: psycopg.AsyncConnection) -> int:
            cur = await values.insert_quarantine(
                conn, provider, body, headers, reason, message, now
            )
            row = await cur.fetchone()
            assert row is not None
            await values.cap_quarantine(conn, cap, max_bytes)
            return int(row[0])

        return await self._write("keeping a delivery in quarantine", keep)

    async def list_quarantine(
        self, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[QuarantineItem], str | None]:
        before = _row_cursor(cursor)
        rows = await self._fetchall(
            "listing the quarantine",
            f"SELECT {QUARANTINE_COLUMNS} FROM quarantine WHERE id < %s ORDER BY id DESC LIMIT %s",
            (MAX_ROW_ID if before is None else before, limit + 1),
        )
        items = [quarantined(r) for r in rows[:limit]]
        return items, (str(items[-1].id) if len(rows) > limit else None)

    async def get_quarantined(self, quarantine_id: int) -> QuarantineItem | None:
        if not 0 < quarantine_id <= MAX_ROW_ID:
            return None
        row = await self._fetchone(
            "reading the quarantine",
            f"SELECT {QUARANTINE_COLUMNS} FROM quarantine WHERE id = %s",
            (quarantine_id,),
        )
        return quarantined(row) if row else None

    async def discard_quarantined(self, quarantine_id: int) -> bool:
        if not 0 < quarantine_id <= MAX_ROW_ID:
            return False

        async def discard(conn: psycopg.AsyncConnection) -> bool:
            cur = await conn.execute("DELETE FROM quarantine WHERE id = %s", (quarantine_id,))
            return cur.rowcount == 1

        return await self._write("discarding a quarantined delivery", discard)

    # -- what an operator should look at -----------------------------------------------

    async def find_tasks(self, prefix: str, limit: int = 50) -> list[TaskRecord]:
        """Keys compared byte by byte (``COLLATE "C"``, index ``tasks_key_bytes``), as SQLite."""
        start = task_key(prefix)
        if not start:
            return []
        after = min(ord(start[-1]) + 1, 0x10FFFF)
        end = start[:-1] + chr(0xE000 if 0xD800 <= after <= 0xDFFF else after)  # no surrogate
        rows = await self._fetchall(
            "finding tasks",
            f"SELECT {TASK_COLUMNS} FROM tasks"
            ' WHERE key COLLATE "C" >= %s AND key COLLATE "C" < %s AND starts_with(key, %s)'
            ' ORDER BY key COLLATE "C" LIMIT %s',
            (start, end, start, limit),
        )
        return await self._with_archives([task_record(r) for r in rows])

    async def count_concerns(self) -> dict[str, int]:
        counts = (f"(SELECT count(*) FROM tasks WHERE {_CONCERNS[c]})" for c in CONCERNS)
        row = await self._fetchone("counting concerns", "SELECT " + ", ".join(counts))
        assert row is not None
        return {c: int(n) for c, n in zip(CONCERNS, row, strict=True)}

    async def list_concern(
        self, concern: str, *, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[TaskRecord], str | None]:
        after = _row_cursor(cursor)
        where: list[str] = [_CONCERNS[concern]]
        params: list[Any] = []
        if after is not None:
            where.append("seq < %s")
            params.append(after)
        rows = await self._fetchall(
            "listing concerns",
            f"SELECT seq, {TASK_COLUMNS} FROM tasks WHERE {' AND '.join(where)}"
            " ORDER BY seq DESC LIMIT %s",
            [*params, limit + 1],
        )
        records = [task_record(r[1:]) for r in rows[:limit]]
        next_cursor = str(rows[limit - 1][0]) if len(rows) > limit else None
        return await self._with_archives(records), next_cursor

    # -- small values, counters, secrets -----------------------------------------------

    async def get_value(self, key: str, default: Any = None) -> Any:
        row = await self._fetchone(
            "reading a value", "SELECT value FROM settings WHERE key = %s", (key,)
        )
        return json.loads(row[0]) if row else default

    async def set_value(self, key: str, value: Any) -> None:
        encoded = json.dumps(value)
        await self._write("keeping a value", lambda c: values.set_value(c, key, encoded))

    async def counter(self, name: str) -> int:
        row = await self._fetchone(
            "reading a counter", "SELECT value FROM settings WHERE key = %s", (f"counter.{name}",)
        )
        return int(row[0]) if row else 0

    async def ensure_secret(self, name: str, candidate: str) -> tuple[str, bool]:
        return await self._write(
            "keeping a secret", lambda c: values.ensure_secret(c, name, candidate)
        )

    async def get_secret(self, name: str) -> str | None:
        row = await self._fetchone(
            "reading a secret", "SELECT value FROM settings WHERE key = %s", (f"secret.{name}",)
        )
        return str(row[0]) if row else None

    async def replace_secret(self, name: str, expected: str, value: str) -> bool:
        return await self._write(
            "replacing a secret", lambda c: values.replace_secret(c, name, expected, value)
        )

    # -- operations --------------------------------------------------------------------

    async def prune(self, cutoff: float | None) -> Pruned:
        """Small transactions (see ``retention``): callbacks commit between them."""
        bodies = size = 0
        while cutoff is not None:
            step = await self._write(
                "pruning old bodies", lambda c: retention.prune_step(c, cutoff)
            )
            bodies, size = bodies + step.bodies, size + step.bytes
            if not step.more:
                break
        max_rows, max_bytes = self.settings.quarantine_max_rows, self.settings.quarantine_max_bytes
        by_rows = await self._write(
            "holding the quarantine to its rows",
            lambda c: retention.enforce_quarantine_rows(c, max_rows),
        )
        by_bytes = await self._write(
            "holding the quarantine to its bytes",
            lambda c: retention.enforce_quarantine_bytes(c, max_bytes),
        )
        return Pruned(bodies, size, by_rows[0] + by_bytes[0], by_rows[1] + by_bytes[1])

    async def database_bytes(self) -> int:
        row = await self._fetchone(
            "measuring the database", "SELECT pg_database_size(current_database())"
        )
        return int(row[0]) if row else 0

    async def backup(self, path: str) -> int:
        raise ConfigError(
            f"DATABASE_URL={connection.label(self._url)!r} is PostgreSQL: back it up with its own"
            f" tools, e.g. pg_dump --format=custom --file={path} '<DATABASE_URL>',"
            " or your provider's backups"
        )

    # -- leases ------------------------------------------------------------------------

    async def take_lease(self, name: str, holder: str, ttl: float) -> int | None:
        return await self._write(
            "taking a lease", lambda c: values.take_lease(c, name, holder, ttl)
        )

    async def renew_lease(self, name: str, holder: str, term: int, ttl: float) -> bool:
        return await self._write(
            "renewing a lease", lambda c: values.renew_lease(c, name, holder, term, ttl)
        )

    async def release_lease(self, name: str, holder: str) -> None:
        await self._write("releasing a lease", lambda c: values.release_lease(c, name, holder))

    # -- the archive queue -------------------------------------------------------------

    async def enqueue_missing_archives(self) -> int:
        now = time.time()
        added = await self._write(
            "queueing archive copies", lambda c: archive.enqueue_missing(c, now)
        )
        if added:
            self._signals.notify("archive")
        return added

    async def claim_archives(
        self, holder: str, limit: int, lease: float, due_by: float | None = None
    ) -> list[ArchiveJob]:
        now = time.time()
        return await self._write(
            "claiming archive copies",
            lambda c: archive.claim(c, holder, limit, lease, now, due_by),
        )

    async def renew_archive_claims(self, holder: str, lease: float) -> int:
        return await self._write(
            "renewing archive claims", lambda c: archive.renew(c, holder, lease)
        )

    async def reschedule_archives(self, include_failed: bool = False) -> float:
        now = time.time()
        if await self._write(
            "rescheduling archive copies", lambda c: archive.reschedule(c, now, include_failed)
        ):
            self._signals.notify("archive")
        return now

    async def finish_archive(
        self, job: ArchiveJob, holder: str, sha256: str, size: int, content_type: str
    ) -> None:
        now = time.time()
        ids = await self._write(
            "recording an archive copy",
            lambda c: archive.finish(c, job, holder, sha256, size, content_type, now),
        )
        if ids:
            self._signals.notify("events")

    async def fail_archive(
        self, job: ArchiveJob, holder: str, error: str, message: str, retry_at: float | None
    ) -> None:
        now = time.time()
        ids = await self._write(
            "recording an archive failure",
            lambda c: archive.fail(c, job, holder, error, message, retry_at, now),
        )
        if ids:
            self._signals.notify("events")

    async def release_archives(self, holder: str) -> int:
        now = time.time()
        released = await self._write(
            "releasing archive claims", lambda c: archive.release(c, holder, now)
        )
        if released:
            self._signals.notify("archive")
        return released

    async def archive_counts(self) -> dict[str, int]:
        rows = await self._fetchall(
            "counting archive copies", "SELECT status, count(*) FROM archives GROUP BY status"
        )
        return {r[0]: r[1] for r in rows}

    async def archived_file(self, sha256: str) -> tuple[str, int] | None:
        row = await self._fetchone(
            "finding an archived file",
            "SELECT content_type, bytes FROM archives WHERE sha256 = %s AND status = 'done'"
            " LIMIT 1",
            (sha256,),
        )
        return (row[0], row[1]) if row else None

    # -- the outbox --------------------------------------------------------------------

    async def events_after(
        self, cursor: str | None, types: set[str] | None = None, limit: int = 100
    ) -> tuple[list[Event], str]:
        after = outbox.parse_cursor(cursor)
        where: list[str] = ["seq > %s"]
        params: list[Any] = [after]
        if types:
            where.append("type = ANY(%s)")
            params.append(sorted(types))
        rows = await self._fetchall(
            "reading events",
            f"SELECT seq, id, type, task_key, provider, created_at, body FROM events"
            f" WHERE {' AND '.join(where)} ORDER BY seq LIMIT %s",
            [*params, limit],
        )
        read = [event_row(r) for r in rows]
        next_cursor = str(read[-1][0]) if read else (cursor or outbox.START)
        return [event for _, event in read], next_cursor

    async def prune_events(self, before: float) -> int:
        async def prune(conn: psycopg.AsyncConnection) -> int:
            cur = await conn.execute("DELETE FROM events WHERE created_at < %s", (before,))
            return max(cur.rowcount, 0)

        return await self._write("pruning events", prune)

    # -- work signals ------------------------------------------------------------------

    def work_mark(self, kind: WorkKind) -> int:
        return self._signals.mark(kind)

    async def wait_for_work(
        self,
        kind: WorkKind,
        timeout: float,  # noqa: ASYNC109 - the contract's signature
        *,
        after: int | None = None,
    ) -> bool:
        return await self._signals.wait(kind, timeout, after)

    def notify_work(self, kind: WorkKind) -> None:
        self._signals.notify(kind)

    def _notify_many(self, kinds: Any) -> None:
        self._signals.notify_many(k for k in kinds if k in KINDS)
