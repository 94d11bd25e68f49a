"""Wake-ups across replicas: ``LISTEN taskhook_work``, with polling as the fallback.

A transaction that makes work (an archive row to copy, an event to read)
calls ``pg_notify('taskhook_work', kind)``; PostgreSQL delivers it to every
listening session when, and only if, the transaction commits. The
``Listener`` keeps one connection of its own listening and turns each
notification into a local wake-up (``WorkSignals.notify``).

When the listening connection is lost, the listener reconnects with a growing
delay; meanwhile ``listening`` is false and ``WorkSignals``' probe wakes the
waiters every second, so they poll the database instead of trusting silence.
After every reconnection it wakes everyone once: a notification sent while
nobody listened is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

import psycopg

from server.service import cancel
from server.store.postgres.connection import CONNECT_KWARGS, conninfo, label
from server.store.signals import KINDS

log = logging.getLogger("taskhook.store.postgres")

CHANNEL = "taskhook_work"
#: Delays between reconnection attempts, in seconds (the last one repeats).
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)


class Listener:
    """One connection listening on ``CHANNEL``; calls ``notify(kinds)`` for what it hears."""

    def __init__(self, url: str, notify: Callable[[Iterable[str]], None]) -> None:
        self._url = url
        self._notify = notify
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        #: True while a connection is listening: silence then means no work.
        self.listening = False

    async def start(self, wait: float = 5.0) -> None:
        """Start listening; returns once the first LISTEN is in place (or after ``wait``)."""
        if self._task is None:
            self._ready = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="taskhook-pg-listener")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._ready.wait()

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel(task)
        self.listening = False

    async def probe(self) -> bool:
        """For ``WorkSignals``: True (wake up and look) whenever nobody is listening."""
        return not self.listening

    async def _run(self) -> None:
        failures = 0
        first = True
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(conninfo(self._url), **CONNECT_KWARGS)
            except (psycopg.Error, OSError) as exc:
                failures += 1
                if failures == 1:
                    log.warning("cannot listen for wake-ups at %s: %s", label(self._url), exc)
                await asyncio.sleep(_delay(failures))
                continue
            try:
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening = True
                    self._ready.set()
                    if not first or failures:
                        log.info("listening for wake-ups again")
                        self._notify(KINDS)  # whatever was sent while nobody listened
                    first, failures = False, 0
                    async for note in conn.notifies():
                        self._notify((note.payload,))
            except (psycopg.Error, OSError) as exc:
                failures += 1
                if failures == 1:
                    log.warning("lost the wake-up connection (%s); polling until it is back", exc)
            finally:
                self.listening = False
            await asyncio.sleep(_delay(failures))


def _delay(failures: int) -> float:
    return RETRY_DELAYS[min(max(failures, 1), len(RETRY_DELAYS)) - 1]
