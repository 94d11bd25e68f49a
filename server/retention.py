"""Retention: what ``RETENTION_DAYS``, the quarantine caps and ``EVENT_RETENTION`` let go.

``prune`` asks the store to drop the raw bodies of deliveries of tasks final
for longer than ``RETENTION_DAYS`` (0 keeps them forever) and to hold the
quarantine to its caps. ``RetentionService`` runs it in the web process once
a day; the time of the last run is kept in the database, so several
processes on one database prune once a day between them, not once each.
``EventRetention`` drops the outbox's events older than ``EVENT_RETENTION``
(and the webhook rows as old) once an hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from server.core.types import iso_time
from server.service import cancel
from server.settings import Settings
from server.store import Store
from server.store.base import Pruned

log = logging.getLogger("taskhook.retention")

DAY = 86400.0
LAST_RUN_KEY = "retention.last_run"
#: The first look comes this long after start-up (start-up stays quick).
FIRST_DELAY = 60.0
#: After a failed run, try again this much later.
RETRY_DELAY = 3600.0


def cutoff(settings: Settings, now: float) -> float | None:
    """Tasks final before this have their raw bodies dropped; None with RETENTION_DAYS=0."""
    return None if settings.retention_days == 0 else now - settings.retention_days * DAY


async def prune(store: Store, settings: Settings, now: float | None = None) -> Pruned:
    """Drop what retention allows now, and note when it ran (shared by every process)."""
    started = time.time() if now is None else now
    pruned = await store.prune(cutoff(settings, started))
    await store.set_value(LAST_RUN_KEY, {"at": started, **pruned.__dict__})
    return pruned


def describe(pruned: Pruned) -> str:
    return (
        f"dropped {pruned.bodies} raw bodies ({pruned.bytes} bytes) of tasks final for longer "
        f"than RETENTION_DAYS, {pruned.quarantine_rows} quarantined deliveries "
        f"({pruned.quarantine_bytes} bytes) beyond the caps"
    )


class RetentionService:
    """``prune`` once a day in the background of the web process."""

    name = "retention"

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        interval: float = DAY,
        first_delay: float = FIRST_DELAY,
    ) -> None:
        self.store, self.settings = store, settings
        self.interval, self.first_delay = interval, first_delay
        self.last_error: str | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._run(), name="retention")
        return self._task

    async def stop(self) -> None:
        self._stop.set()
        await cancel(self._task)  # a prune step is one transaction: cancelling is safe

    async def status(self) -> dict[str, Any]:
        last = await self.store.get_value(LAST_RUN_KEY)
        body: dict[str, Any] = {
            "ok": True,
            "retention_days": self.settings.retention_days,
            "last_run_at": iso_time(last["at"]) if last else None,
            "last_run": last,
        }
        if self.last_error:
            body["last_error"] = self.last_error
        return body

    async def _sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` unless stopped first; True when it is time to work."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return not self._stop.is_set()

    async def _run(self) -> None:
        if not await self._sleep(self.first_delay):
            return
        while True:
            last = await self._last_run()
            due_in = 0.0 if last is None else last + self.interval - time.time()
            if due_in > 0:
                if not await self._sleep(due_in):
                    return
                continue
            wait = self.interval
            try:
                pruned = await prune(self.store, self.settings)
                self.last_error = None
                log.info("retention %s", describe(pruned))
            except Exception as exc:  # a failed run is retried; it never ends the loop
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("retention run failed, next try in 1h: %s", self.last_error)
                wait = RETRY_DELAY
            if not await self._sleep(min(wait, self.interval)):
                return

    async def _last_run(self) -> float | None:
        last = await self.store.get_value(LAST_RUN_KEY)
        return float(last["at"]) if last else None


#: Seconds between two prunes of the outbox.
EVENT_PRUNE_INTERVAL = 3600.0


class EventRetention:
    """Prunes the outbox once at start, then every ``interval`` seconds: events older
    than ``EVENT_RETENTION``, and the webhook attempts and finished messages as old.

    Policy over the contract (``Store.prune_events``), so every backend gets it.
    Several processes may run it at once: pruning is idempotent.
    """

    name = "event_retention"

    def __init__(
        self, store: Store, retention: float, interval: float = EVENT_PRUNE_INTERVAL
    ) -> None:
        self.store, self.retention, self.interval = store, retention, interval
        self._task: asyncio.Task[None] | None = None
        self.last_at: float | None = None
        self.last_pruned = 0

    async def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._run(), name=self.name)
        return self._task

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel(task)

    async def prune(self) -> int:
        """Drop the events older than the retention now; how many."""
        now = time.time()
        pruned = await self.store.prune_events(now - self.retention)
        webhooks = await self.store.prune_webhooks(now - self.retention)
        self.last_at, self.last_pruned = now, pruned
        if pruned or webhooks:
            log.info(
                "pruned %d event(s) and %d webhook row(s) older than %gs",
                pruned,
                webhooks,
                self.retention,
            )
        return pruned

    async def _run(self) -> None:
        while True:
            try:
                await self.prune()
            except Exception:  # the next round retries; old events only wait longer
                log.warning("could not prune events", exc_info=True)
            await asyncio.sleep(self.interval)

    async def status(self) -> dict[str, Any]:
        return {
            "ok": True,
            "retention": self.retention,
            "last_pruned_at": iso_time(self.last_at),
            "last_pruned": self.last_pruned,
        }
