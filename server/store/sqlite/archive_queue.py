"""The archive queue's side of the SQLite store: queue, claim, renew, finish and read copies.

A mixin of ``SQLiteStore``: it uses the store's writer and readers, and keeps
the archive's SQL here in the backend with the rest.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any

from server.core.ids import task_key
from server.core.types import ArchiveOutcome, Status, TaskRecord
from server.store.base import ArchiveJob, Store
from server.store.rows import ARCHIVE_COLUMNS, SHOWN_ARCHIVES, archive_outcome
from server.store.sqlite import archive_writes
from server.store.sqlite.writer import Writer


def _archive_signals(added: int) -> Iterable[str]:
    return ("archive",) if added else ()


def _event_signals(event_ids: tuple[str, ...]) -> Iterable[str]:
    return ("events",) if event_ids else ()


class ArchiveQueue(Store):
    _writer: Writer

    # Provided by SQLiteStore: its read helpers.
    _fetchall: Callable[..., Awaitable[list[Any]]]
    _fetchone: Callable[..., Awaitable[Any]]

    async def _with_archives(self, records: list[TaskRecord]) -> list[TaskRecord]:
        """Attach each succeeded task's archive outcome per result URL (one query a page)."""
        keys = [task_key(r.state.task_id) for r in records if r.state.status is Status.SUCCEEDED]
        by_key: dict[str, dict[str, ArchiveOutcome]] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = await self._fetchall(
                f"SELECT {ARCHIVE_COLUMNS} FROM archives"
                f" WHERE task_key IN ({','.join('?' * len(chunk))}) AND {SHOWN_ARCHIVES}",
                chunk,
            )
            for key, url, outcome in map(archive_outcome, rows):
                by_key.setdefault(key, {})[url] = outcome
        return [
            replace(r, archives=by_key[k]) if (k := task_key(r.state.task_id)) in by_key else r
            for r in records
        ]

    async def enqueue_missing_archives(self) -> int:
        now = time.time()
        return await self._writer.run(
            lambda c: archive_writes.enqueue_missing_archives(c, now), signal=_archive_signals
        )

    async def claim_archives(
        self, holder: str, limit: int, lease: float, due_by: float | None = None
    ) -> list[ArchiveJob]:
        now = time.time()
        return await self._writer.run(
            lambda c: archive_writes.claim_archives(c, holder, now, limit, lease, due_by)
        )

    async def renew_archive_claims(self, holder: str, lease: float) -> int:
        now = time.time()
        return await self._writer.run(lambda c: archive_writes.renew_claims(c, holder, lease, now))

    async def reschedule_archives(self, include_failed: bool = False) -> float:
        now = time.time()
        await self._writer.run(
            lambda c: archive_writes.reschedule_archives(c, now, include_failed),
            signal=_archive_signals,
        )
        return now

    async def finish_archive(
        self, job: ArchiveJob, holder: str, sha256: str, size: int, content_type: str
    ) -> None:
        now = time.time()
        await self._writer.run(
            lambda c: archive_writes.finish_archive(
                c, job, holder, sha256, size, content_type, now
            ),
            signal=_event_signals,
        )

    async def fail_archive(
        self, job: ArchiveJob, holder: str, error: str, message: str, retry_at: float | None
    ) -> None:
        now = time.time()
        await self._writer.run(
            lambda c: archive_writes.fail_archive(c, job, holder, error, message, now, retry_at),
            signal=_event_signals,
        )

    async def release_archives(self, holder: str) -> int:
        now = time.time()
        return await self._writer.run(
            lambda c: archive_writes.release_archives(c, holder, now), signal=_archive_signals
        )

    async def archive_counts(self) -> dict[str, int]:
        rows = await self._fetchall("SELECT status, count(*) FROM archives GROUP BY status")
        return {r[0]: r[1] for r in rows}

    async def archived_file(self, sha256: str) -> tuple[str, int] | None:
        row = await self._fetchone(
            "SELECT content_type, bytes FROM archives WHERE sha256 = ? AND status = 'done' LIMIT 1",
            (sha256,),
        )
        return (row[0], row[1]) if row else None
