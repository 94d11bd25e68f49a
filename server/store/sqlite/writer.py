"""The single writer: one thread owns the write connection and commits in groups.

Every write is a function ``fn(conn) -> value`` run inside a transaction on
the writer thread. Callers await the commit, so an HTTP 200 goes out only
after its data is on disk.

Why a thread of our own rather than aiosqlite's per-statement calls: a
callback needs several statements (read the task, insert the delivery, update
the task, write its events). Sent one by one through aiosqlite, each costs a
round trip between the event loop and the connection thread. Here the writer
drains every job waiting in its queue, runs them all in one ``BEGIN
IMMEDIATE`` transaction (each inside a savepoint, so one failing job does not
spoil its neighbours; a job alone, or a group of jobs that may run twice such
as ingests, skips the savepoints and is run again guarded if one fails) and
pays for one commit and one fsync per group. Under
load the group grows by itself: while one commit is on disk, the next
requests queue.

Bounds and failure (what callers can rely on):

- The queue holds at most ``MAX_QUEUED_JOBS`` jobs and ``MAX_QUEUED_BYTES``
  bytes of bodies; past either, ``run`` raises ``Overloaded`` at once (one
  job is always admitted into an empty queue, however large).
- A thread that dies of anything (any ``BaseException``) fails the jobs it
  held and every later ``run`` at once with ``StoreUnavailable``; ``dead``
  says why, and one log line says it too.
- A full disk (``SQLITE_FULL``, ``ENOSPC``) fails the group's jobs with
  ``StorageFull``, logged once a minute at most, without a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from server.errors import Overloaded, StorageFull, StoreClosed, StoreUnavailable
from server.store.sqlite.checkpoint import WRITER_AUTOCHECKPOINT

log = logging.getLogger("taskhook.writer")

T = TypeVar("T")
WriteFn = Callable[[sqlite3.Connection], T]
#: What kinds of work a job's committed value made (for ``wait_for_work``).
SignalFn = Callable[[T], Iterable[str]]

#: The most jobs one transaction takes; bounds the latency a large group adds.
MAX_GROUP = 512
#: The most jobs waiting for the writer; past it writes are refused (503 overloaded).
MAX_QUEUED_JOBS = 10_000
#: The most body bytes waiting for the writer; past it writes are refused.
MAX_QUEUED_BYTES = 64 * 1024 * 1024
#: Seconds a refused writer asks callers to wait (``Retry-After``).
OVERLOADED_RETRY_AFTER = 1
STORAGE_FULL_RETRY_AFTER = 60
#: At most one "disk full" log line per this many seconds.
FULL_LOG_INTERVAL = 60.0


@dataclass
class _Job(Generic[T]):
    fn: WriteFn[T]
    future: asyncio.Future[T]
    loop: asyncio.AbstractEventLoop
    size: int
    signal: SignalFn[T] | None
    rerun: bool = False


#: A job, its committed value, or the error it failed with.
_Outcome = tuple[_Job[Any], Any, BaseException | None]

_STOP = object()


def connect(path: Path, *, synchronous: str = "full", readonly: bool = False) -> sqlite3.Connection:
    """Open a connection with the pragmas every taskhook connection uses."""
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
        )
    else:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA foreign_keys=ON")
    # Each job runs in a savepoint; its statement journal (a copy of every page it
    # changes that the group had changed already) stays in memory, not in a temp file:
    # with events appended by every job, the file cost four times the writes.
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


def storage_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the database's size limit) is full."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


class Writer:
    """Serialises every write of one database through one thread."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "full",
        on_commit: Callable[[int, float], None] | None = None,
        on_signal: Callable[[set[str]], None] | None = None,
        max_jobs: int = MAX_QUEUED_JOBS,
        max_bytes: int = MAX_QUEUED_BYTES,
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.on_commit = on_commit  # (group size, seconds in the transaction) for metrics
        self.on_signal = on_signal  # kinds of work a commit made, called on the writer thread
        self.max_jobs, self.max_bytes = max_jobs, max_bytes
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._queued_jobs = 0
        self._queued_bytes = 0
        #: Why the writer thread died (None while it lives).
        self.dead: str | None = None
        self._full_logged_at = -FULL_LOG_INTERVAL

    def start(self) -> None:
        """Open the connection (in the caller's thread, so errors surface here)."""
        if self._thread is not None:
            return
        self._conn = connect(self.path, synchronous=self.synchronous)
        # Checkpoints run in their own thread (``checkpoint.Checkpointer``); this is a backstop.
        self._conn.execute(f"PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT}")
        self._thread = threading.Thread(target=self._main, name="taskhook-writer", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> tuple[int, int]:
        """(jobs, body bytes) waiting for the writer now."""
        return self._queued_jobs, self._queued_bytes

    async def run(
        self,
        fn: WriteFn[T],
        *,
        size: int = 0,
        signal: SignalFn[T] | None = None,
        rerun: bool = False,
    ) -> T:
        """Run ``fn(conn)`` in a write transaction; return its value once committed.

        ``size``: the body bytes the job carries (for the queue's byte bound).
        ``signal(value)``: the kinds of work the committed value made.
        ``rerun``: ``fn`` may run twice (it changes nothing but the database),
        so a group of such jobs runs without a savepoint per job (see
        ``_commit_group``).
        """
        if self._closed or self._thread is None:
            raise StoreClosed("the store is closed (or was never opened); no write was made")
        if self.dead is not None:
            raise StoreUnavailable(f"the database writer stopped ({self.dead}); no write was made")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            jobs, held = self._queued_jobs, self._queued_bytes
            if jobs and (jobs >= self.max_jobs or held + size > self.max_bytes):
                raise Overloaded(
                    f"{jobs} writes ({held} bytes) are waiting for the database; "
                    f"retry in {OVERLOADED_RETRY_AFTER}s",
                    headers={"Retry-After": str(OVERLOADED_RETRY_AFTER)},
                )
            self._queued_jobs += 1
            self._queued_bytes += size
        self._queue.put(_Job(fn, future, loop, size, signal, rerun))
        if self.dead is not None:  # died meanwhile: its drain may have missed this job
            self._fail_queued()
        return await future

    async def close(self) -> None:
        """Finish every queued write, then stop. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(self._thread.join)

    # -- the writer thread --------------------------------------------------

    def _main(self) -> None:
        assert self._conn is not None
        conn = self._conn
        group: list[_Job[Any]] = []
        try:
            stopping = False
            while not stopping:
                group = []
                first = self._queue.get()
                if first is _STOP:
                    break
                group.append(first)
                while len(group) < MAX_GROUP:
                    try:
                        job = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is _STOP:
                        stopping = True
                        break
                    group.append(job)
                self._commit_group(conn, group)
                group = []
        except BaseException as exc:  # the thread is dying: say why, fail everything fast
            self.dead = f"{type(exc).__name__}: {exc}"
            log.critical("database writer stopped: %s; every write now fails", self.dead)
            with contextlib.suppress(BaseException):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            failure = StoreUnavailable(f"the database writer stopped ({self.dead})")
            self._settle([(job, None, failure) for job in group])
            self._fail_queued()
        finally:
            with contextlib.suppress(BaseException):
                conn.close()

    def _fail_queued(self) -> None:
        failure = StoreUnavailable(f"the database writer stopped ({self.dead})")
        failed: list[_Outcome] = []
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP:
                failed.append((job, None, failure))
        self._settle(failed)

    def _commit_group(self, conn: sqlite3.Connection, group: list[_Job[Any]]) -> None:
        started = time.perf_counter()
        outcomes: list[_Outcome] = []
        kinds: set[str] = set()
        try:
            conn.execute("BEGIN IMMEDIATE")
            unguarded = len(group) == 1 or all(job.rerun for job in group)
            done = self._run_jobs(conn, group, guarded=False) if unguarded else None
            outcomes = done or self._run_jobs(conn, group, guarded=True) or []
            conn.execute("COMMIT")
        except Exception as exc:
            failure = self._translate(exc)
            if not isinstance(failure, StorageFull):
                log.error("write transaction failed: %s", exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(job, None, failure) for job in group]
        else:
            for job, value, error in outcomes:
                if error is None and job.signal is not None:
                    kinds.update(job.signal(value))
        if self.on_commit is not None:
            self.on_commit(len(group), time.perf_counter() - started)
        if kinds and self.on_signal is not None:
            self.on_signal(kinds)
        self._settle(outcomes)

    def _run_jobs(
        self, conn: sqlite3.Connection, group: list[_Job[Any]], *, guarded: bool
    ) -> list[_Outcome] | None:
        """Every job of the group, in order; ``guarded``: each in its own savepoint.

        Guarded, a failing job is rolled back to its savepoint and its
        neighbours go on. A savepoint and its release cost about as much as a
        small insert, on every job of every group, so a job alone, or a group
        of jobs that may run twice, runs unguarded: then a failing job spoils
        the whole transaction, which is rolled back and begun again; a job
        alone answers its error, a group answers None (run it again, guarded).
        Either way the neighbours' writes commit as if the failing job had
        never been there.
        """
        outcomes: list[_Outcome] = []
        for job in group:
            if guarded:
                conn.execute("SAVEPOINT job")
            try:
                value = job.fn(conn)
            except Exception as exc:
                if not conn.in_transaction:
                    raise  # SQLite rolled the whole group back (full disk, I/O error)
                if not guarded:
                    conn.execute("ROLLBACK")
                    conn.execute("BEGIN IMMEDIATE")
                    return [(job, None, self._translate(exc))] if len(group) == 1 else None
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes.append((job, None, self._translate(exc)))
            else:
                if guarded:
                    conn.execute("RELEASE job")
                outcomes.append((job, value, None))
        return outcomes

    def _translate(self, exc: Exception) -> BaseException:
        """A full disk becomes ``StorageFull`` (one log line a minute); the rest as raised."""
        if not storage_full(exc):
            return exc
        now = time.monotonic()
        if now - self._full_logged_at >= FULL_LOG_INTERVAL:
            self._full_logged_at = now
            log.error("database disk is full (%s); writes answer 503 until space is freed", exc)
        return StorageFull(
            "the disk under the database is full; nothing was written, retry later",
            headers={"Retry-After": str(STORAGE_FULL_RETRY_AFTER)},
        )

    def _settle(self, outcomes: list[_Outcome]) -> None:
        with self._lock:
            self._queued_jobs -= len(outcomes)
            self._queued_bytes -= sum(job.size for job, _, _ in outcomes)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, Any]]] = {}
        for job, value, exc in outcomes:
            by_loop.setdefault(job.loop, []).append((job.future, value, exc))
        for loop, settled in by_loop.items():
            # One wake-up per event loop for the whole group, not one per job.
            # RuntimeError: that loop is closed, so nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, value, exc in settled:
        if future.cancelled():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)
