"""The single writer: one thread owns the write connection and commits in groups.

Every write is a function ``fn(conn) -> value`` run inside a transaction on
the writer thread. Callers await the commit, so an HTTP 200 goes out only
after its data is on disk.

Why a thread of our own rather than aiosqlite's per-statement calls: a
callback needs four statements (read the task, insert the delivery, merge,
update the task). Sent one by one through aiosqlite, each costs a round trip
between the event loop and the connection thread. Here the writer drains
every job waiting in its queue, runs them all in one ``BEGIN IMMEDIATE``
transaction (each inside a savepoint, so one failing job does not spoil its
neighbours) and pays for one commit and one fsync per group. Under load the
group grows by itself: while one commit is on disk, the next requests queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from server.errors import StoreClosed

log = logging.getLogger("taskhook.writer")

T = TypeVar("T")
WriteFn = Callable[[sqlite3.Connection], T]

#: The most jobs one transaction takes; bounds the latency a large group adds.
MAX_GROUP = 512


@dataclass
class _Job:
    fn: WriteFn
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


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
    return conn


class Writer:
    """Serialises every write of one database through one thread."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "full",
        on_commit: Callable[[int, float], None] | None = None,
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.on_commit = on_commit  # (group size, seconds in the transaction) for metrics
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._conn: sqlite3.Connection | None = None

    def start(self) -> None:
        """Open the connection (in the caller's thread, so errors surface here)."""
        if self._thread is not None:
            return
        self._conn = connect(self.path, synchronous=self.synchronous)
        self._thread = threading.Thread(target=self._run, name="taskhook-writer", daemon=True)
        self._thread.start()

    async def run(self, fn: WriteFn[T]) -> T:
        """Run ``fn(conn)`` in a write transaction; return its value once committed."""
        if self._closed or self._thread is None:
            raise StoreClosed("the store is closed (or was never opened); no write was made")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Job(fn, future, loop))
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

    def _run(self) -> None:
        assert self._conn is not None
        conn = self._conn
        stopping = False
        try:
            while not stopping:
                first = self._queue.get()
                if first is _STOP:
                    break
                group = [first]
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
        finally:
            conn.close()

    def _commit_group(self, conn: sqlite3.Connection, group: list[_Job]) -> None:
        started = time.perf_counter()
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in group:
                conn.execute("SAVEPOINT job")
                try:
                    value = job.fn(conn)
                except Exception as exc:  # a failing job must not spoil its neighbours
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((job, None, exc))
                else:
                    conn.execute("RELEASE job")
                    outcomes.append((job, value, None))
            conn.execute("COMMIT")
        except Exception as exc:
            log.error("write transaction failed: %s", exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(job, None, exc) for job in group]
        if self.on_commit is not None:
            self.on_commit(len(group), time.perf_counter() - started)
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for job, value, exc in outcomes:
            by_loop.setdefault(job.loop, []).append((job.future, value, exc))
        for loop, settled in by_loop.items():
            # One wake-up per event loop for the whole group, not one per job.
            # RuntimeError: that loop is closed, so nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[asyncio.Future, Any, BaseException | None]]) -> None:
    for future, value, exc in settled:
        if future.cancelled():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)
