"""Group commit on PostgreSQL: concurrent requests share one transaction and one WAL flush.

Every ingest waits in one queue. ``WRITERS`` writer tasks each take every
request waiting (up to ``MAX_GROUP``), apply them all in one transaction on a
pooled connection and COMMIT once; each caller's future settles only after
that COMMIT returned, so a 200 still means "on disk" (``synchronous_commit``
is on). Under load groups grow by themselves: while one group's COMMIT waits
for its WAL flush, the next requests queue for the other writer.
``scripts/bench_pg_driver.py`` measured this against a transaction per
request (README, "Several replicas").

Failure, as callers see it:

- A group that fails on a bad request (a constraint, a value PostgreSQL
  refuses) is rolled back and its requests are retried one by one, so only
  the bad one fails: one request never spoils another.
- A deadlock or serialization failure is retried once, then reported.
- A lost connection or an unreachable server fails every request of the
  group with ``StoreUnavailable`` (503): a COMMIT that did not answer may or
  may not have happened, and the caller is never told it did.
- Past ``MAX_QUEUED_JOBS`` requests or ``MAX_QUEUED_BYTES`` body bytes
  waiting, ``run`` refuses at once with ``Overloaded`` (503, Retry-After).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Generic, TypeVar

import psycopg
from psycopg import errors as pg_errors

from server.errors import Overloaded, StoreClosed, StoreUnavailable
from server.store.postgres.connection import is_connection_error

log = logging.getLogger("taskhook.store.postgres")

R = TypeVar("R")
S = TypeVar("S")

#: Applies a group of requests in one transaction on ``conn``; one result per request.
ApplyFn = Callable[[psycopg.AsyncConnection, Sequence[R]], Awaitable[list[S]]]
ConnectionFn = Callable[[], AbstractAsyncContextManager[psycopg.AsyncConnection]]

WRITERS = 2
MAX_GROUP = 256
MAX_QUEUED_JOBS = 10_000
MAX_QUEUED_BYTES = 64 * 1024 * 1024
OVERLOADED_RETRY_AFTER = 1

#: Errors worth one more try: another transaction got in the way.
RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)


@dataclass
class _Job(Generic[R, S]):
    request: R
    future: asyncio.Future[S]
    size: int


class GroupWriter(Generic[R, S]):
    """Queues requests and commits them in groups; see the module docstring."""

    def __init__(
        self,
        connection: ConnectionFn,
        apply: ApplyFn[R, S],
        *,
        writers: int = WRITERS,
        on_commit: Callable[[int, float], None] | None = None,
        max_jobs: int = MAX_QUEUED_JOBS,
        max_bytes: int = MAX_QUEUED_BYTES,
    ) -> None:
        self._connection = connection
        self._apply = apply
        self._writers = max(1, writers)
        self.on_commit = on_commit  # (group size, seconds in the transaction) for metrics
        self.max_jobs, self.max_bytes = max_jobs, max_bytes
        self._queue: asyncio.Queue[_Job[R, S] | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._queued_jobs = 0
        self._queued_bytes = 0
        self._closed = False

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._loop(), name=f"taskhook-pg-writer-{n}")
                for n in range(self._writers)
            ]

    @property
    def queued(self) -> tuple[int, int]:
        """(requests, body bytes) waiting now."""
        return self._queued_jobs, self._queued_bytes

    async def run(self, request: R, *, size: int = 0) -> S:
        """Apply ``request`` with whatever else is waiting; its result once committed."""
        if self._closed or not self._tasks:
            raise StoreClosed("the store is closed (or was never opened); no write was made")
        if self._queued_jobs and (
            self._queued_jobs >= self.max_jobs or self._queued_bytes + size > self.max_bytes
        ):
            raise Overloaded(
                f"{self._queued_jobs} writes ({self._queued_bytes} bytes) are waiting for the"
                f" database; retry in {OVERLOADED_RETRY_AFTER}s",
                headers={"Retry-After": str(OVERLOADED_RETRY_AFTER)},
            )
        future: asyncio.Future[S] = asyncio.get_running_loop().create_future()
        self._queued_jobs += 1
        self._queued_bytes += size
        self._queue.put_nowait(_Job(request, future, size))
        return await future

    async def close(self) -> None:
        """Commit everything queued, then stop the writers. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for _ in self._tasks:
            self._queue.put_nowait(None)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    # -- the writers -------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            group = [first]
            stop = False
            while len(group) < MAX_GROUP and not self._queue.empty():
                job = self._queue.get_nowait()
                if job is None:
                    stop = True
                    break
                group.append(job)
            for job in group:
                self._queued_jobs -= 1
                self._queued_bytes -= job.size
            try:
                await self._commit(group)
            except Exception:  # never let a writer die: report, and go on
                log.exception("the group writer failed; its requests got an error")
                _fail(group, StoreUnavailable("the write failed unexpectedly; retry later"))
            if stop:
                return

    async def _commit(self, group: list[_Job[R, S]], retried: bool = False) -> None:
        started = time.perf_counter()
        try:
            async with self._connection() as conn:
                results = await self._apply(conn, [job.request for job in group])
        except Exception as exc:
            if is_connection_error(exc):
                _fail(group, _unavailable(exc))
            elif isinstance(exc, RETRYABLE) and not retried:
                await self._commit(group, retried=True)
            elif len(group) > 1:
                for job in group:  # find the bad one: each alone
                    await self._commit([job], retried=retried)
            else:
                _fail(group, exc)
            return
        if self.on_commit is not None:
            self.on_commit(len(group), time.perf_counter() - started)
        for job, result in zip(group, results, strict=True):
            if not job.future.done():
                job.future.set_result(result)


def _unavailable(exc: BaseException) -> StoreUnavailable:
    error = StoreUnavailable(
        "the database did not confirm the write (connection lost or server unreachable);"
        " nothing is acknowledged, retry later"
    )
    error.__cause__ = exc
    return error


def _fail(group: Sequence[_Job[R, S]], exc: BaseException) -> None:
    for job in group:
        if not job.future.done():  # a cancelled caller's future is done already
            job.future.set_exception(exc)
