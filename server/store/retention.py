"""Event retention: a background service that drops events older than EVENT_RETENTION,
and the webhook attempts and finished messages as old.

Policy over the contract (``Store.prune_events``), so every backend gets it.
Several processes may run it at once: pruning is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from server.core.types import iso_time
from server.service import cancel
from server.store.base import Store

log = logging.getLogger("taskhook.retention")

#: Seconds between two prunes.
PRUNE_INTERVAL = 3600.0


class EventRetention:
    """Prunes the outbox once at start, then every ``interval`` seconds."""

    name = "event_retention"

    def __init__(self, store: Store, retention: float, interval: float = PRUNE_INTERVAL) -> None:
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
