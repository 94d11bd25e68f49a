"""The archive queue's side of the store: queue, claim, finish and read copies.

A mixin of ``Store``: it uses the store's writer and readers, and keeps the
archive's SQL here in the store package with the rest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from server.core.ids import task_key
from server.core.types import TaskRecord
from server.store.sqlite import archive_writes
from server.store.sqlite.archive_writes import ArchiveJob
from server.store.sqlite.writer import Writer


class ArchiveQueue:
    writer: Writer
    archive_wakeup: asyncio.Event

    # Provided by Store: its read helpers.
    _fetchall: Callable[..., Awaitable[list[Any]]]
    _fetchone: Callable[..., Awaitable[Any]]

    async def _with_archives(self, records: list[TaskRecord]) -> list[TaskRecord]:
        """Attach each succeeded task's archive outcome per result URL (one query a page)."""
        keys = [task_key(r.state.task_id) for r in records if r.state.status == "succeeded"]
        by_key: dict[str, dict[str, dict[str, Any]]] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = await self._fetchall(
                "SELECT task_key, url, status, sha256, bytes, content_type, error, message,"
                f" attempts FROM archives WHERE task_key IN ({','.join('?' * len(chunk))})"
                " AND (status = 'done' OR error IS NOT NULL)",
                chunk,
            )
            for row in rows:
                by_key.setdefault(row[0], {})[row[1]] = _archive_view(row[2:])
        return [
            replace(r, archives=by_key[k]) if (k := task_key(r.state.task_id)) in by_key else r
            for r in records
        ]

    async def enqueue_missing_archives(self) -> int:
        now = time.time()
        added = await self.writer.run(lambda c: archive_writes.enqueue_missing_archives(c, now))
        if added:
            self.archive_wakeup.set()
        return added

    async def claim_archives(
        self,
        holder: str,
        limit: int,
        lease: float,
        due_by: float | None = None,
    ) -> list[ArchiveJob]:
        now = time.time()
        return await self.writer.run(
            lambda c: archive_writes.claim_archives(c, holder, now, limit, lease, due_by)
        )

    async def reschedule_archives(self, include_failed: bool = False) -> float:
        """Make every pending copy due now; returns that moment (a ``due_by`` for claims)."""
        now = time.time()
        await self.writer.run(lambda c: archive_writes.reschedule_archives(c, now, include_failed))
        return now

    async def finish_archive(
        self, job: ArchiveJob, holder: str, sha256: str, size: int, content_type: str
    ) -> None:
        now = time.time()
        await self.writer.run(
            lambda c: archive_writes.finish_archive(c, job, holder, sha256, size, content_type, now)
        )

    async def fail_archive(
        self, job: ArchiveJob, holder: str, error: str, message: str, retry_at: float | None
    ) -> None:
        now = time.time()
        await self.writer.run(
            lambda c: archive_writes.fail_archive(c, job, holder, error, message, now, retry_at)
        )

    async def release_archives(self, holders: Sequence[str]) -> int:
        now = time.time()
        return await self.writer.run(lambda c: archive_writes.release_archives(c, holders, now))

    async def archive_holders(self) -> list[str]:
        """Who holds running archive rows now (to release those of dead processes)."""
        rows = await self._fetchall(
            "SELECT DISTINCT claimed_by FROM archives WHERE status = 'running'"
        )
        return [r[0] for r in rows if r[0]]

    async def archive_counts(self) -> dict[str, int]:
        rows = await self._fetchall("SELECT status, count(*) FROM archives GROUP BY status")
        return {r[0]: r[1] for r in rows}

    async def archived_file(self, sha256: str) -> tuple[str, int] | None:
        """(content_type, bytes) of an archived file, or None if no copy has that digest."""
        row = await self._fetchone(
            "SELECT content_type, bytes FROM archives WHERE sha256 = ? AND status = 'done' LIMIT 1",
            (sha256,),
        )
        return (row[0], row[1]) if row else None


def _archive_view(row: Sequence[Any]) -> dict[str, Any]:
    """What a result shows: ``archived`` once copied, else the last ``archive_error``."""
    status, sha256, size, content_type, error, message, attempts = row
    if status == "done":
        return {
            "archived": {
                "url": f"/files/{sha256}",
                "sha256": sha256,
                "bytes": size,
                "content_type": content_type,
            }
        }
    return {
        "archive_error": {
            "code": error,
            "message": message,
            "attempts": attempts,
            "final": status == "failed",
        }
    }
