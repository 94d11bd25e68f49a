"""Work signals: how a commit wakes whoever waits for that kind of work.

Backend-neutral; a backend owns one ``WorkSignals`` and calls ``notify``
when it committed work of a kind (from any thread, through
``notify_threadsafe``). Work committed by *another* process is noticed by
``probe``: a cheap backend check (SQLite: ``PRAGMA data_version``; PostgreSQL
would use LISTEN/NOTIFY and keep the probe as a fallback) run at most once
per ``probe_interval`` while anyone waits, never a query of the data itself.

Each kind has a counter; ``wait`` returns as soon as the counter moves past
the mark it started from (or the mark the caller took before its read), so a
signal between a read and the wait is never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterable

#: How often waiters check for commits made by other processes.
PROBE_INTERVAL = 1.0

#: Every kind of work there is (``server.store.base.WorkKind``).
KINDS = ("archive", "events", "webhooks")

Probe = Callable[[], Awaitable[bool]]


class WorkSignals:
    """Per-kind counters and wake-ups, bound to the event loop that opened the store."""

    def __init__(self, probe: Probe | None = None, probe_interval: float = PROBE_INTERVAL):
        self._probe = probe
        self.probe_interval = probe_interval
        self._counts: dict[str, int] = {}
        self._events: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._probe_lock: asyncio.Lock | None = None
        self._last_probe = 0.0
        self._waiting: dict[str, int] = {}
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop whose coroutines wait (the one that opened the store)."""
        self._loop = loop

    def mark(self, kind: str) -> int:
        return self._counts.get(kind, 0)

    def waiting(self, kind: str) -> int:
        """How many coroutines wait for ``kind`` now (for tests and status pages)."""
        return self._waiting.get(kind, 0)

    def notify(self, kind: str) -> None:
        """Wake every waiter of ``kind`` (call on the bound loop)."""
        self.notify_many((kind,))

    def notify_many(self, kinds: Iterable[str]) -> None:
        with self._lock:
            for kind in kinds:
                self._counts[kind] = self._counts.get(kind, 0) + 1
        self._wake(kinds)

    def _wake(self, kinds: Iterable[str]) -> None:
        for kind in kinds:
            event = self._events.pop(kind, None)
            if event is not None:
                event.set()

    def notify_threadsafe(self, kinds: Iterable[str]) -> None:
        """``notify_many`` from another thread (the SQLite writer, after its commit).

        The counters move at once; the loop is woken only when someone waits
        (a waiter registers its wake-up before it compares the counter, so
        it either sees the new count or is woken).
        """
        kinds = tuple(kinds)
        with self._lock:
            for kind in kinds:
                self._counts[kind] = self._counts.get(kind, 0) + 1
            waited = [kind for kind in kinds if kind in self._events]
        if not waited or self._loop is None:
            return
        # RuntimeError: the loop is closed, so nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._wake, waited)

    async def wait(
        self,
        kind: str,
        timeout: float,  # noqa: ASYNC109 - the answer says whether a signal came in time
        after: int | None = None,
    ) -> bool:
        """True once ``kind`` was signalled after ``after`` (default: now); False at timeout."""
        loop = asyncio.get_running_loop()
        start = self.mark(kind) if after is None else after
        deadline = loop.time() + max(0.0, timeout)
        self._waiting[kind] = self._waiting.get(kind, 0) + 1
        try:
            return await self._wait(kind, start, deadline, loop)
        finally:
            self._waiting[kind] -= 1

    async def _wait(
        self, kind: str, start: int, deadline: float, loop: asyncio.AbstractEventLoop
    ) -> bool:
        while True:
            event = self._events.setdefault(kind, asyncio.Event())  # before the comparison
            if self.mark(kind) != start:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            slice_ = remaining if self._probe is None else min(remaining, self.probe_interval)
            try:
                async with asyncio.timeout(slice_):
                    await event.wait()
            except TimeoutError:
                await self._maybe_probe(loop)

    async def _maybe_probe(self, loop: asyncio.AbstractEventLoop) -> None:
        """Ask the backend whether another process committed; at most once per interval."""
        if self._probe is None:
            return
        if self._probe_lock is None:
            self._probe_lock = asyncio.Lock()
        async with self._probe_lock:
            if loop.time() - self._last_probe < self.probe_interval * 0.9:
                return
            self._last_probe = loop.time()
            try:
                changed = await self._probe()
            except Exception:  # a failed probe is a missed wake-up, never an error
                return
        if changed:
            self.notify_many(set(self._counts) | set(self._events) | set(KINDS))
