"""The SQLite backend of the store contract (``server.store.base.Store``).

Writes go through one ``Writer`` (one thread, group commit, bounded queue);
reads use a small pool of aiosqlite connections and never wait behind a
write (WAL mode). Every write function lives in ``writes``, ``values``,
``archive_writes`` and ``events``; this class only schedules them and reads.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from server.core.ids import task_key
from server.core.types import TaskRecord
from server.errors import BadCursor, StoreClosed
from server.settings import Settings
from server.store.base import (
    CONCERNS,
    Delivery,
    DueTask,
    Event,
    Incoming,
    IngestOutcome,
    Pruned,
    QuarantineItem,
    Registration,
    WorkKind,
)
from server.store.signals import WorkSignals
from server.store.sqlite import backup as sqlite_backup
from server.store.sqlite import batch, events, retention, values, writes
from server.store.sqlite.archive_queue import ArchiveQueue
from server.store.sqlite.checkpoint import Checkpointer
from server.store.sqlite.rows import (
    DELIVERY_COLUMNS,
    DUE_COLUMNS,
    QUARANTINE_COLUMNS,
    TASK_COLUMNS,
    delivery,
    due_task,
    quarantined,
    task_record,
)
from server.store.sqlite.schema import migrate
from server.store.sqlite.submits import SubmitRecords
from server.store.sqlite.webhooks import WebhookQueue
from server.store.sqlite.writer import Writer, connect

T = TypeVar("T")
READERS = 3
#: ``CONCERNS`` as SQL conditions on ``tasks`` (see ``server.store.base.CONCERNS``).
_CONCERNS: dict[str, str] = {
    "conflicts": "status IN ('succeeded', 'failed')"
    " AND json_array_length(state, '$.conflicts') > 0",
    "archive_failed": "key IN (SELECT task_key FROM archives WHERE status = 'failed'"
    " OR (status IN ('pending', 'running') AND error IS NOT NULL))",
    "gap_filled": "final_source = 'reconcile'",
}
#: SQLite's integers are 64-bit: no row id or cursor is at or past this.
MAX_ROW_ID = 2**63 - 1


def _observe_commit(size: int, seconds: float) -> None:
    from server.observe.metrics import observe_commit

    observe_commit(size, seconds)


def _ingest_signals(outcomes: list[IngestOutcome]) -> Iterable[str]:
    if any(o.archive_queued for o in outcomes):
        yield "archive"
    if any(o.events for o in outcomes):
        yield "events"


def _webhook_signals(_: object) -> Iterable[str]:
    return ("webhooks",)


def _seq_cursor(text: str | None) -> int | None:
    """A decimal row id cursor (the legacy API form, base64 of it, is accepted too)."""
    if text is None:
        return None
    if text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= MAX_ROW_ID:
        return int(text)
    if text.startswith("M"):  # base64 of a decimal, as GET /tasks handed out before
        with contextlib.suppress(ValueError, binascii.Error):
            return _seq_cursor(base64.urlsafe_b64decode(text.encode()).decode())
    raise BadCursor(f"cursor {text[:40]!r} is not one this API gave out")


class SQLiteStore(SubmitRecords, ArchiveQueue, WebhookQueue):
    """The embedded backend: one SQLite file in WAL mode."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_commit: Callable[[int, float], None] | None = _observe_commit,
    ) -> None:
        self.settings = settings
        self.path = settings.database_path
        self._signals = WorkSignals(probe=self._data_version_changed)
        self._writer = Writer(
            self.path,
            synchronous=settings.sqlite_synchronous,
            on_commit=on_commit,
            on_signal=self._signals.notify_threadsafe,
        )
        self._checkpointer = Checkpointer(self.path, synchronous=settings.sqlite_synchronous)
        self._readers: asyncio.Queue[aiosqlite.Connection] | None = None
        self._all_readers: list[aiosqlite.Connection] = []
        self._closed = False
        self._watcher: aiosqlite.Connection | None = None  # its own data_version
        self._data_version: int | None = None
        self._rules = writes.Rules(
            grace=settings.reconcile_grace,
            archive=settings.archive,
            quarantine_max_rows=settings.quarantine_max_rows,
            quarantine_max_bytes=settings.quarantine_max_bytes,
        )

    # -- lifecycle ----------------------------------------------------------

    async def open(self) -> None:
        """Create the folder and schema, start the writer and the readers."""
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def prepare() -> None:
            conn = connect(self.path, synchronous=self.settings.sqlite_synchronous)
            try:
                migrate(conn)
            finally:
                conn.close()

        await asyncio.to_thread(prepare)
        self._signals.bind(asyncio.get_running_loop())
        self._writer.start()
        self._checkpointer.start()
        self._readers = asyncio.Queue()
        for _ in range(READERS):
            reader = await aiosqlite.connect(self.path, isolation_level=None)
            await reader.execute("PRAGMA busy_timeout=10000")
            self._all_readers.append(reader)
            self._readers.put_nowait(reader)
        self._watcher = await aiosqlite.connect(self.path, isolation_level=None)
        await self._data_version_changed()  # the baseline: later commits are news

    async def close(self) -> None:
        """Finish queued writes, then close everything. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._writer.close()
        await asyncio.to_thread(self._checkpointer.stop)
        for reader in self._all_readers:
            await reader.close()
        self._all_readers.clear()
        if self._watcher is not None:
            await self._watcher.close()
            self._watcher = None

    @contextlib.asynccontextmanager
    async def _reader(self) -> AsyncIterator[aiosqlite.Connection]:
        if self._closed or self._readers is None:
            raise StoreClosed("the store is closed (or was never opened); nothing was read")
        conn = await self._readers.get()
        try:
            yield conn
        finally:
            self._readers.put_nowait(conn)

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        async with self._reader() as conn:
            return list(await conn.execute_fetchall(sql, params))

    async def _fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self._fetchall(sql, params)
        return rows[0] if rows else None

    async def _webhook_write(
        self, fn: Callable[[sqlite3.Connection], T], *, wake: bool = False
    ) -> T:
        """Run a webhook write; ``wake``: tell delivery loops (here and elsewhere) to look."""
        return await self._writer.run(fn, signal=_webhook_signals if wake else None)

    async def check_writable(self) -> None:
        now = time.time()
        await self._writer.run(lambda c: values.heartbeat(c, now))

    # -- tasks --------------------------------------------------------------

    async def ingest_many(self, items: Sequence[Incoming]) -> list[IngestOutcome]:
        now, rules = time.time(), self._rules
        size = sum(len(i.body) for i in items if i.body is not None)
        return await self._writer.run(
            lambda c: batch.ingest_many(c, items, now, rules), size=size, signal=_ingest_signals
        )

    async def register(self, regs: Sequence[Registration]) -> list[TaskRecord]:
        now, grace = time.time(), self.settings.reconcile_grace
        keys = await self._writer.run(lambda c: writes.register(c, regs, now, grace))
        return await self.get_tasks_by_key(keys)

    async def get_tasks_by_key(self, keys: Sequence[str]) -> list[TaskRecord]:
        found: dict[str, TaskRecord] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):  # stay under SQLite's variable limit
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = await self._fetchall(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE key IN ({marks})", chunk
            )
            found.update((row[0], task_record(row)) for row in rows)
        return await self._with_archives([found[k] for k in unique if k in found])

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        provider: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[TaskRecord], str | None]:
        """Newest first; keyset pagination on ``seq`` (the cursor: the last seq seen)."""
        after = _seq_cursor(cursor)
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("status", status), ("provider", provider)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if after is not None:
            where.append("seq < ?")
            params.append(after)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._fetchall(
            f"SELECT seq, {TASK_COLUMNS} FROM tasks {clause} ORDER BY seq DESC LIMIT ?",
            [*params, limit + 1],
        )
        records = [task_record(r[1:]) for r in rows[:limit]]
        next_cursor = str(rows[limit - 1][0]) if len(rows) > limit else None
        return await self._with_archives(records), next_cursor

    async def deliveries(self, task_id: str) -> list[Delivery]:
        rows = await self._fetchall(
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE task_key = ? ORDER BY id",
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
            where.append("next_check_at <= ?")
            params.append(now)
        if providers:
            where.append(f"provider IN ({','.join('?' * len(providers))})")
            params.extend(providers)
        if task_ids:
            where.append(f"key IN ({','.join('?' * len(task_ids))})")
            params.extend(task_key(t) for t in task_ids)
        rows = await self._fetchall(
            f"SELECT {DUE_COLUMNS} FROM tasks WHERE {' AND '.join(where)}"
            " ORDER BY next_check_at LIMIT ?",
            [*params, limit],
        )
        return [due_task(r) for r in rows]

    async def overdue_tasks(
        self, created_before: float, limit: int, *, providers: Sequence[str] | None = None
    ) -> list[DueTask]:
        where = ["next_check_at IS NOT NULL", "created_at < ?"]
        params: list[Any] = [created_before]
        if providers:
            where.append(f"provider IN ({','.join('?' * len(providers))})")
            params.extend(providers)
        rows = await self._fetchall(
            f"SELECT {DUE_COLUMNS} FROM tasks WHERE {' AND '.join(where)}"
            " ORDER BY created_at LIMIT ?",
            [*params, limit],
        )
        return [due_task(r) for r in rows]

    async def stuck_tasks(self, created_before: float, limit: int = 100) -> list[TaskRecord]:
        """Reads the partial index of unfinished tasks: its cost follows how many are unfinished."""
        rows = await self._fetchall(
            f"SELECT {TASK_COLUMNS} FROM tasks"
            " WHERE next_check_at IS NOT NULL AND created_at < ? ORDER BY created_at LIMIT ?",
            (created_before, limit),
        )
        return [task_record(r) for r in rows]

    async def count_by_status(self) -> dict[str, int]:
        rows = await self._fetchall("SELECT status, count(*) FROM tasks GROUP BY status")
        return {r[0]: r[1] for r in rows}

    async def unfinished_summary(self) -> tuple[int, float | None]:
        row = await self._fetchone(
            "SELECT count(*), min(created_at) FROM tasks WHERE next_check_at IS NOT NULL"
        )
        return row[0], row[1]

    # -- quarantine ---------------------------------------------------------

    async def quarantine(
        self, provider: str, body: bytes, headers: Mapping[str, str], reason: str, message: str
    ) -> int:
        now, cap = time.time(), self.settings.quarantine_max_rows
        max_bytes = self.settings.quarantine_max_bytes
        return await self._writer.run(
            lambda c: writes.quarantine(
                c, provider, body, headers, reason, message, now, cap, max_bytes
            ),
            size=len(body),
        )

    async def list_quarantine(
        self, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[QuarantineItem], str | None]:
        before = _seq_cursor(cursor)
        rows = await self._fetchall(
            f"SELECT {QUARANTINE_COLUMNS} FROM quarantine WHERE id < ? ORDER BY id DESC LIMIT ?",
            (MAX_ROW_ID if before is None else before, limit + 1),
        )
        items = [quarantined(r) for r in rows[:limit]]
        return items, (str(items[-1].id) if len(rows) > limit else None)

    async def get_quarantined(self, quarantine_id: int) -> QuarantineItem | None:
        if not 0 < quarantine_id <= MAX_ROW_ID:
            return None
        row = await self._fetchone(
            f"SELECT {QUARANTINE_COLUMNS} FROM quarantine WHERE id = ?", (quarantine_id,)
        )
        return quarantined(row) if row else None

    async def discard_quarantined(self, quarantine_id: int) -> bool:
        if not 0 < quarantine_id <= MAX_ROW_ID:
            return False
        return await self._writer.run(lambda c: writes.discard_quarantined(c, quarantine_id))

    # -- what an operator should look at ------------------------------------

    async def find_tasks(self, prefix: str, limit: int = 50) -> list[TaskRecord]:
        start = task_key(prefix)
        if not start:
            return []
        # Every key with this prefix sorts in [start, start with its last character + 1).
        end = start[:-1] + chr(min(ord(start[-1]) + 1, 0x10FFFF))
        rows = await self._fetchall(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE key >= ? AND key < ?"
            " AND substr(key, 1, ?) = ? ORDER BY key LIMIT ?",
            (start, end, len(start), start, limit),
        )
        return await self._with_archives([task_record(r) for r in rows])

    async def count_concerns(self) -> dict[str, int]:
        counts = (f"(SELECT count(*) FROM tasks WHERE {_CONCERNS[c]})" for c in CONCERNS)
        row = await self._fetchone("SELECT " + ", ".join(counts))
        return dict(zip(CONCERNS, row, strict=True))

    async def list_concern(
        self, concern: str, *, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[TaskRecord], str | None]:
        after = _seq_cursor(cursor)
        where, params = [_CONCERNS[concern]], []
        if after is not None:
            where.append("seq < ?")
            params.append(after)
        rows = await self._fetchall(
            f"SELECT seq, {TASK_COLUMNS} FROM tasks WHERE {' AND '.join(where)}"
            " ORDER BY seq DESC LIMIT ?",
            [*params, limit + 1],
        )
        records = [task_record(r[1:]) for r in rows[:limit]]
        next_cursor = str(rows[limit - 1][0]) if len(rows) > limit else None
        return await self._with_archives(records), next_cursor

    # -- small values -------------------------------------------------------

    async def get_value(self, key: str, default: Any = None) -> Any:
        row = await self._fetchone("SELECT value FROM settings WHERE key = ?", (key,))
        return json.loads(row[0]) if row else default

    async def set_value(self, key: str, value: Any) -> None:
        encoded = json.dumps(value)
        await self._writer.run(lambda c: values.set_value(c, key, encoded))

    async def counter(self, name: str) -> int:
        row = await self._fetchone("SELECT value FROM settings WHERE key = ?", (f"counter.{name}",))
        return int(row[0]) if row else 0

    async def ensure_secret(self, name: str, candidate: str) -> tuple[str, bool]:
        return await self._writer.run(lambda c: values.ensure_secret(c, name, candidate))

    async def get_secret(self, name: str) -> str | None:
        row = await self._fetchone("SELECT value FROM settings WHERE key = ?", (f"secret.{name}",))
        return str(row[0]) if row else None

    async def replace_secret(self, name: str, expected: str, value: str) -> bool:
        return await self._writer.run(lambda c: values.replace_secret(c, name, expected, value))

    async def backup(self, path: str) -> int:
        return await asyncio.to_thread(sqlite_backup.backup, self.path, Path(path))

    async def prune(self, cutoff: float | None) -> Pruned:
        bodies = size = 0
        while cutoff is not None:
            step = await self._writer.run(partial(retention.prune_step, cutoff=cutoff))
            bodies, size = bodies + step.bodies, size + step.bytes
            if not step.more:
                break
        max_rows, max_bytes = self.settings.quarantine_max_rows, self.settings.quarantine_max_bytes
        by_rows = await self._writer.run(lambda c: retention.enforce_quarantine_rows(c, max_rows))
        by_bytes = await self._writer.run(
            lambda c: retention.enforce_quarantine_bytes(c, max_bytes)
        )
        return Pruned(bodies, size, by_rows[0] + by_bytes[0], by_rows[1] + by_bytes[1])

    async def database_bytes(self) -> int:
        def size() -> int:
            files = (self.path, Path(f"{self.path}-wal"))
            return sum(f.stat().st_size for f in files if f.exists())

        return await asyncio.to_thread(size)

    # -- leases -------------------------------------------------------------

    async def take_lease(self, name: str, holder: str, ttl: float) -> int | None:
        now = time.time()
        return await self._writer.run(lambda c: values.take_lease(c, name, holder, ttl, now))

    async def renew_lease(self, name: str, holder: str, term: int, ttl: float) -> bool:
        now = time.time()
        return await self._writer.run(lambda c: values.renew_lease(c, name, holder, term, ttl, now))

    async def release_lease(self, name: str, holder: str) -> None:
        await self._writer.run(lambda c: values.release_lease(c, name, holder))

    # -- the outbox ---------------------------------------------------------

    async def events_after(
        self, cursor: str | None, types: set[str] | None = None, limit: int = 100
    ) -> tuple[list[Event], str]:
        after = events.parse_cursor(cursor)
        where: list[str] = ["seq > ?"]
        params: list[Any] = [after]
        if types:
            where.append(f"type IN ({','.join('?' * len(types))})")
            params.extend(sorted(types))
        rows = await self._fetchall(
            f"SELECT {events.EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)}"
            " ORDER BY seq LIMIT ?",
            [*params, limit],
        )
        read = [events.event_row(r) for r in rows]
        next_cursor = str(read[-1][0]) if read else (cursor or events.START)
        return [event for _, event in read], next_cursor

    async def prune_events(self, before: float) -> int:
        return await self._writer.run(
            lambda c: c.execute("DELETE FROM events WHERE created_at < ?", (before,)).rowcount
        )

    # -- work signals -------------------------------------------------------

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

    async def _data_version_changed(self) -> bool:
        """Whether another connection committed since the last look (``PRAGMA data_version``)."""
        if self._watcher is None or self._closed:
            return False
        rows = list(await self._watcher.execute_fetchall("PRAGMA data_version"))
        version = int(rows[0][0])
        changed = self._data_version is not None and version != self._data_version
        self._data_version = version
        return changed
