"""The archive queue's side of the SQLite store: queue, claim, renew and finish copies.

A mixin of ``SQLiteStore``: it runs ``archive_writes`` on the store's writer;
the archive's reads are the shared ones (``server.store.queries``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from server.store.base import ArchiveJob
from server.store.sql import SQLStore
from server.store.sqlite import archive_writes
from server.store.sqlite.archive_writes import settle
from server.store.sqlite.writer import Writer


def _archive_signals(added: int) -> Iterable[str]:
    return ("archive",) if added else ()


def _event_signals(event_ids: tuple[str, ...]) -> Iterable[str]:
    return ("events",) if event_ids else ()


class ArchiveQueue(SQLStore):
    _writer: Writer

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

    async def _settle_archive(
        self, what: str, key: str, statement: str, params: Sequence[Any], final: bool, now: float
    ) -> None:
        await self._writer.run(
            lambda c: settle(c, key, statement, params, now, final), signal=_event_signals
        )

    async def release_archives(self, holder: str) -> int:
        now = time.time()
        return await self._writer.run(
            lambda c: archive_writes.release_archives(c, holder, now), signal=_archive_signals
        )
