"""The PostgreSQL backend of the store contract (``server.store.base.Store``).

Several replicas, on any hosts, share one database. Each process has a pool
of ``DATABASE_POOL_SIZE`` connections: reads take one for a statement;
ingests go through the group writer (``writer``: one transaction and one
WAL flush for every request waiting); the other writes run as their own short
transactions. A LISTEN connection (``listener``) turns other replicas'
commits into wake-ups. The reads and what else both SQL backends share are
``server.store.sql.SQLStore``'s (its ``?`` placeholders become ``%s`` in
``_select``); the archive queue is ``archive.PostgresArchives``.

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
from typing import Any, TypeVar

import psycopg

from server.core import schedule
from server.core.codec import state_to_dict
from server.core.decide import new_task
from server.core.ids import task_key
from server.core.types import TaskRecord
from server.errors import ConfigError, StoreClosed
from server.settings import Settings
from server.store.base import Incoming, IngestOutcome, Registration
from server.store.postgres import connection, ingest, retention, values
from server.store.postgres.archive import PostgresArchives
from server.store.postgres.listener import Listener
from server.store.postgres.rows import dumps
from server.store.postgres.schema import migrate
from server.store.postgres.submits import PostgresSubmits
from server.store.postgres.webhooks import PostgresWebhooks
from server.store.postgres.writer import RETRYABLE, GroupWriter
from server.store.queries import MAX_ROW_ID, concern_conditions
from server.store.rows import TASK_COLUMNS, task_record
from server.store.signals import KINDS, WorkSignals
from server.store.sql import OnCommit, SQLStore

T = TypeVar("T")
#: A health check's write must find a connection within this long.
CHECK_TIMEOUT = 2.0


class PostgresStore(PostgresSubmits, PostgresArchives, PostgresWebhooks, SQLStore):
    """The store on a PostgreSQL server (``DATABASE_URL=postgresql://…``)."""

    #: The state is read as ``json``, not ``jsonb``: it may hold ``\u0000``, which jsonb refuses.
    _concerns = concern_conditions("json_array_length(state::json -> 'conflicts')")

    def __init__(self, settings: Settings, *, on_commit: OnCommit = None) -> None:
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

    async def _select(
        self, what: str, sql: str, params: Sequence[Any] = ()
    ) -> Sequence[Sequence[Any]]:
        return await self._fetchall(what, connection.pyformat(sql), params)

    def _in(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(?)", [list(values)]

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

    # -- small values, counters, secrets -----------------------------------------------

    async def set_value(self, key: str, value: Any) -> None:
        encoded = json.dumps(value)
        await self._write("keeping a value", lambda c: values.set_value(c, key, encoded))

    async def ensure_secret(self, name: str, candidate: str) -> tuple[str, bool]:
        return await self._write(
            "keeping a secret", lambda c: values.ensure_secret(c, name, candidate)
        )

    async def replace_secret(self, name: str, expected: str, value: str) -> bool:
        return await self._write(
            "replacing a secret", lambda c: values.replace_secret(c, name, expected, value)
        )

    # -- operations --------------------------------------------------------------------

    async def _prune_bodies(self, cutoff: float) -> tuple[int, int, bool]:
        step = await self._write("pruning old bodies", lambda c: retention.prune_step(c, cutoff))
        return step.bodies, step.bytes, step.more

    async def _cap_quarantine_rows(self, cap: int) -> tuple[int, int]:
        return await self._write(
            "holding the quarantine to its rows",
            lambda c: retention.enforce_quarantine_rows(c, cap),
        )

    async def _cap_quarantine_bytes(self, cap: int) -> tuple[int, int]:
        return await self._write(
            "holding the quarantine to its bytes",
            lambda c: retention.enforce_quarantine_bytes(c, cap),
        )

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

    # -- the outbox --------------------------------------------------------------------

    async def prune_events(self, before: float) -> int:
        async def prune(conn: psycopg.AsyncConnection) -> int:
            cur = await conn.execute("DELETE FROM events WHERE created_at < %s", (before,))
            return max(cur.rowcount, 0)

        return await self._write("pruning events", prune)

    # -- work signals ------------------------------------------------------------------

    def _notify_many(self, kinds: Any) -> None:
        self._signals.notify_many(k for k in kinds if k in KINDS)
