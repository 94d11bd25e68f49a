"""What both SQL backends share above their own connections, written once.

``SQLStore`` is the class each backend (``server.store.sqlite.store``,
``server.store.postgres.store``) derives from. It adds to the shared reads
(``server.store.queries``) the work signals (a ``WorkSignals`` the backend
makes with its own cross-process probe) and the order of a prune; the
backend keeps how a write runs (one writer thread, a pool and a group writer)
and gives the transactions these run: the retention steps
(``_prune_bodies``, ``_cap_quarantine_*``), an archive copy's
(``_settle_archive``) and the submit records' (``_begin_submit``,
``_finish_submit``).
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Sequence
from typing import Any

from server.settings import Settings
from server.store import statements
from server.store.base import Pruned, WorkKind
from server.store.queries import SQLReads
from server.store.records import ArchiveJob, SubmitRecord, SubmitStart
from server.store.signals import WorkSignals

#: Called after each group commit with (items in it, seconds in the transaction); the web
#: app passes ``server.observe.metrics.observe_commit`` (the store knows no metrics).
OnCommit = Callable[[int, float], None] | None


class SQLStore(SQLReads):
    """The skeleton both SQL backends share (see the module docstring)."""

    settings: Settings
    _signals: WorkSignals

    # -- operations --------------------------------------------------------------------

    @abc.abstractmethod
    async def _prune_bodies(self, cutoff: float) -> tuple[int, int, bool]:
        """One small transaction of ``prune``: (bodies dropped, their bytes, more to do)."""

    @abc.abstractmethod
    async def _cap_quarantine_rows(self, cap: int) -> tuple[int, int]:
        """Hold the quarantine to ``cap`` rows, oldest out first; (rows, bytes) dropped."""

    @abc.abstractmethod
    async def _cap_quarantine_bytes(self, cap: int) -> tuple[int, int]:
        """Hold the quarantine to ``cap`` bytes, oldest out first; (rows, bytes) dropped."""

    async def prune(self, cutoff: float | None) -> Pruned:
        """Small transactions (see the backend's ``retention``): writes commit between them."""
        bodies = size = 0
        while cutoff is not None:
            dropped, freed, more = await self._prune_bodies(cutoff)
            bodies, size = bodies + dropped, size + freed
            if not more:
                break
        max_rows, max_bytes = self.settings.quarantine_max_rows, self.settings.quarantine_max_bytes
        by_rows = await self._cap_quarantine_rows(max_rows)
        by_bytes = await self._cap_quarantine_bytes(max_bytes)
        return Pruned(bodies, size, by_rows[0] + by_bytes[0], by_rows[1] + by_bytes[1])

    # -- the archive queue -------------------------------------------------------------

    @abc.abstractmethod
    async def _settle_archive(
        self, what: str, key: str, statement: str, params: Sequence[Any], final: bool, now: float
    ) -> None:
        """Settle one copy of task ``key`` with ``statement`` (``statements.FINISH_ARCHIVE``
        or ``FAIL_ARCHIVE``) in one transaction; when ``final`` and it was the task's last
        copy, commit ``task.archived`` with it and wake the event readers."""

    async def finish_archive(
        self, job: ArchiveJob, holder: str, sha256: str, size: int, content_type: str
    ) -> None:
        now = time.time()
        params = statements.finish_archive(job, holder, sha256, size, content_type, now)
        what, statement = "recording an archive copy", statements.FINISH_ARCHIVE
        await self._settle_archive(what, job.task_key, statement, params, True, now)

    async def fail_archive(
        self, job: ArchiveJob, holder: str, error: str, message: str, retry_at: float | None
    ) -> None:
        now = time.time()
        params = statements.fail_archive(job, holder, error, message, retry_at, now)
        what, statement = "recording an archive failure", statements.FAIL_ARCHIVE
        await self._settle_archive(what, job.task_key, statement, params, retry_at is None, now)

    # -- submits -----------------------------------------------------------------------

    @abc.abstractmethod
    async def _begin_submit(self, start: SubmitStart, now: float) -> tuple[SubmitRecord, bool]:
        """``begin_submit`` as one transaction (``statements``: forget, let go, hold, insert)."""

    @abc.abstractmethod
    async def _finish_submit(
        self, submit_id: int, params: Sequence[Any], size: int
    ) -> SubmitRecord:
        """``statements.FINISH_SUBMIT`` with ``params`` (``size``: the body's bytes)."""

    async def begin_submit(self, start: SubmitStart) -> tuple[SubmitRecord, bool]:
        return await self._begin_submit(start, time.time())

    async def finish_submit(
        self,
        submit_id: int,
        status: int,
        body: str,
        *,
        task_id: str | None = None,
        trace_id: str | None = None,
        hold_for: float | None = None,
    ) -> SubmitRecord:
        now = time.time()
        params = statements.finish_submit(submit_id, status, body, task_id, trace_id, hold_for, now)
        return await self._finish_submit(submit_id, params, len(body))

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
