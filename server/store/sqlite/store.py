"""The SQLite backend of the store contract (``server.store.base.Store``).

Writes go through one ``Writer`` (one thread, group commit, bounded queue);
reads use a small pool of aiosqlite connections and never wait behind a
write (WAL mode). Every write function lives in ``writes``, ``values``,
``archive_writes`` and ``events``; this class only schedules them. The reads
and what else both SQL backends share are ``server.store.sql.SQLStore``'s;
this class gives it ``_select``, ``_in`` and the legacy cursor form.
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
from server.errors import StoreClosed
from server.settings import Settings
from server.store.base import Incoming, IngestOutcome, Registration
from server.store.queries import MAX_ROW_ID, concern_conditions, row_cursor
from server.store.rows import TASK_COLUMNS, task_record
from server.store.signals import WorkSignals
from server.store.sql import OnCommit, SQLStore
from server.store.sqlite import backup as sqlite_backup
from server.store.sqlite import batch, retention, values, writes
from server.store.sqlite.archive_queue import ArchiveQueue
from server.store.sqlite.checkpoint import Checkpointer
from server.store.sqlite.coalesce import Coalescer
from server.store.sqlite.schema import migrate
from server.store.sqlite.submits import SubmitRecords
from server.store.sqlite.webhooks import WebhookQueue
from server.store.sqlite.writer import Writer, connect

T = TypeVar("T")
READERS = 3


def _ingest_signals(outcomes: list[IngestOutcome]) -> Iterable[str]:
    if any(o.archive_queued for o in outcomes):
        yield "archive"
    if any(o.events for o in outcomes):
        yield "events"


def _webhook_signals(_: object) -> Iterable[str]:
    return ("webhooks",)


class SQLiteStore(SubmitRecords, ArchiveQueue, WebhookQueue, SQLStore):
    """The embedded backend: one SQLite file in WAL mode."""

    _concerns = concern_conditions("json_array_length(state, '$.conflicts')")

    def __init__(self, settings: Settings, *, on_commit: OnCommit = None) -> None:
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
        # Callbacks of one event-loop turn share one writer job (see ``coalesce``).
        self._coalescer = Coalescer(self.ingest_many)

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
        await self._coalescer.drain()  # callbacks taken before close are queued writes too
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

    async def _select(
        self, what: str, sql: str, params: Sequence[Any] = ()
    ) -> Sequence[Sequence[Any]]:
        return await self._fetchall(sql, params)

    def _in(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} IN ({','.join('?' * len(values))})", list(values)

    def _cursor(self, text: str | None) -> int | None:
        """A decimal row id cursor (the legacy API form, base64 of it, is accepted too)."""
        if text is not None and text.startswith("M"):  # base64, as GET /tasks handed out before
            with contextlib.suppress(ValueError, binascii.Error):
                return row_cursor(base64.urlsafe_b64decode(text.encode()).decode())
        return row_cursor(text)

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
            lambda c: batch.ingest_many(c, items, now, rules),
            size=size,
            signal=_ingest_signals,
            rerun=True,  # it writes nothing but the database
        )

    async def _ingest_one(self, item: Incoming) -> IngestOutcome:
        return await self._coalescer.ingest(item)

    async def register(self, regs: Sequence[Registration]) -> list[TaskRecord]:
        now, grace = time.time(), self.settings.reconcile_grace
        keys = await self._writer.run(lambda c: writes.register(c, regs, now, grace))
        return await self.get_tasks_by_key(keys)

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

    # -- small values -------------------------------------------------------

    async def set_value(self, key: str, value: Any) -> None:
        encoded = json.dumps(value)
        await self._writer.run(lambda c: values.set_value(c, key, encoded))

    async def ensure_secret(self, name: str, candidate: str) -> tuple[str, bool]:
        return await self._writer.run(lambda c: values.ensure_secret(c, name, candidate))

    async def replace_secret(self, name: str, expected: str, value: str) -> bool:
        return await self._writer.run(lambda c: values.replace_secret(c, name, expected, value))

    async def backup(self, path: str) -> int:
        return await asyncio.to_thread(sqlite_backup.backup, self.path, Path(path))

    async def _prune_bodies(self, cutoff: float) -> tuple[int, int, bool]:
        step = await self._writer.run(partial(retention.prune_step, cutoff=cutoff))
        return step.bodies, step.bytes, step.more

    async def _cap_quarantine_rows(self, cap: int) -> tuple[int, int]:
        return await self._writer.run(lambda c: retention.enforce_quarantine_rows(c, cap))

    async def _cap_quarantine_bytes(self, cap: int) -> tuple[int, int]:
        return await self._writer.run(lambda c: retention.enforce_quarantine_bytes(c, cap))

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

    async def prune_events(self, before: float) -> int:
        return await self._writer.run(
            lambda c: c.execute("DELETE FROM events WHERE created_at < ?", (before,)).rowcount
        )

    async def _data_version_changed(self) -> bool:
        """Whether another connection committed since the last look (``PRAGMA data_version``)."""
        if self._watcher is None or self._closed:
            return False
        rows = list(await self._watcher.execute_fetchall("PRAGMA data_version"))
        version = int(rows[0][0])
        changed = self._data_version is not None and version != self._data_version
        self._data_version = version
        return changed
