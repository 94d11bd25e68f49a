"""The reconciler as a background loop: one pass every RECONCILE_INTERVAL seconds.

Several web workers (or a web process and a ``worker``) may share one
database; a lease with a term in the database lets exactly one of them run
passes. The holder renews its term while a pass runs, and the pass is
cancelled the moment a renewal is refused or the lease could have lapsed
(``lease.Lease``), so a loop that lost the lease never polls upstream beside
the new holder. If the holder dies the lease lapses after ``lease_ttl`` (2
intervals, at least ``MIN_LEASE_TTL``) and, as the others ask every interval,
another loop holds it within 3 intervals. The last pass and the providers'
health are written to the database, so ``/readyz`` on any worker reports them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from server.core.types import iso_time
from server.observe.logs import event
from server.providers import NAMES, Client, build_clients, token_settings
from server.providers.upstream import default_http_client
from server.reconcile.health import HealthBoard, PauseRules
from server.reconcile.lease import Lease, LeaseLost
from server.reconcile.reconciler import run_pass
from server.reconcile.report import PassReport
from server.service import cancel, holder_id
from server.settings import Settings
from server.store import Store

log = logging.getLogger("taskhook.reconciler")

LEASE_NAME = "reconciler"
LAST_PASS_KEY = "reconciler.last_pass"
PROVIDERS_KEY = "reconciler.providers"
#: How long ``stop()`` lets a running pass finish before cancelling it.
STOP_GRACE = 10.0
#: The shortest lease (for sub-second test intervals: a renewal gets time to come back).
MIN_LEASE_TTL = 2.0

PassFn = Callable[[], Awaitable[PassReport]]


class ReconcilerLoop:
    """Runs passes while it holds the lease; ``status()`` is what ``/readyz`` shows."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        clients: dict[str, Client],
        *,
        holder: str | None = None,
        lease_ttl: float | None = None,
        renew_every: float | None = None,
        run: PassFn | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clients = clients
        self.interval = settings.reconcile_interval
        self.holder = holder or holder_id()
        # A dead holder's lease lapses 2 intervals after its last renewal, and the others
        # ask every interval: another process holds it within 3 intervals of the death.
        self.lease_ttl = lease_ttl or max(2 * self.interval, MIN_LEASE_TTL)
        self.lease = Lease(store, LEASE_NAME, self.holder, self.lease_ttl, renew_every=renew_every)
        self.health = HealthBoard(PauseRules.for_interval(self.interval))
        self._run = run or self._default_pass
        self._stop = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.started_at = time.time()
        self.passes = 0

    async def _default_pass(self) -> PassReport:
        return await run_pass(self.store, self.clients, self.settings, health=self.health)

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Run passes in the background; the task returned ends only when the loop does."""
        self.started_at = time.time()
        self._task = asyncio.create_task(self._main(), name="reconciler")
        return self._task

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Ask the loop to stop, let a running pass finish within ``grace``, then cancel."""
        self._stop.set()
        task, self._task = self._task, None
        if task is None:
            self._stopped.set()
            return
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            event(
                log, "reconcile_pass_cancelled", logging.WARNING, reason="shutdown", grace_s=grace
            )
            await cancel(task)
        if self.lease.held:
            await self.lease.release()
        self._stopped.set()

    async def run_forever(self) -> None:
        """Run until ``stop()`` (for the ``reconcile --loop`` command)."""
        self.start()
        await self._stopped.wait()

    async def _main(self) -> None:
        while not self._stop.is_set():
            try:
                await self.tick()
            except Exception:  # a pass never takes the loop (or the server) down
                log.exception("reconciler_tick_failed retry_in_s=%s", self.interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    @property
    def holding(self) -> bool:
        """True while this loop holds the lease."""
        return self.lease.held

    async def tick(self) -> PassReport | None:
        """Take or renew the lease; run one pass under it if we hold it.

        None when another loop holds the lease, or when the lease was lost
        during the pass (the pass was cancelled; nothing more is recorded).
        """
        if not await self.lease.acquire():
            return None
        try:
            report = await self.lease.run(self._run)
        except LeaseLost as exc:
            event(
                log,
                "reconcile_pass_cancelled",
                logging.ERROR,
                lease="lost",
                holder=self.holder,
                reason=str(exc),
            )
            return None
        self.passes += 1
        await self._record(report)
        return report

    async def _record(self, report: PassReport) -> None:
        now = time.time()
        await self.store.set_value(
            LAST_PASS_KEY, {"at": now, "holder": self.holder, **report.to_json()}
        )
        await self.store.set_value(PROVIDERS_KEY, self.health.to_json(now))

    # -- status ---------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        return await reconciler_status(self.store, self.settings, self.started_at, self.clients)


async def reconciler_status(
    store: Store, settings: Settings, started_at: float, clients: dict[str, Any]
) -> dict[str, Any]:
    """The reconciler's health as any worker sees it, from what the lease holder wrote."""
    now = time.time()
    last = await store.get_value(LAST_PASS_KEY)
    providers: dict[str, Any] = await store.get_value(PROVIDERS_KEY) or {}
    unfinished, oldest = await store.unfinished_summary()
    for provider in NAMES:
        if provider not in clients:
            providers[provider] = {"state": "skipped", "reason": "no token configured"}
    body: dict[str, Any] = {
        "ok": True,
        "reconciler": settings.reconciler,
        "interval": settings.reconcile_interval,
        "last_pass_at": iso_time(last["at"]) if last else None,
        "last_pass": last,
        "providers": providers,
        "unfinished": unfinished,
        "oldest_unfinished_age": round(now - oldest, 3) if oldest is not None else None,
    }
    reasons = []
    since = max(started_at, last["at"] if last else 0.0)
    if now - since > 3 * settings.reconcile_interval:
        reasons.append(f"no reconcile pass completed in the last {now - since:.0f}s")
    rejected = [p for p, h in providers.items() if h.get("state") == "unauthorized"]
    if rejected:
        reasons.append(f"token rejected by {', '.join(rejected)}; a probe runs with growing delay")
    if reasons:
        body["ok"], body["reason"] = False, "; ".join(reasons)
    return body


class ReconcilerOff:
    """The ``/readyz`` entry when ``RECONCILER=off``."""

    name = "reconciler"

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def status(self) -> dict[str, Any]:
        return {"ok": True, "reconciler": "off"}


NO_TOKEN = (
    f"this process has no provider token (set {' and/or '.join(token_settings())}), "
    "so it runs no passes and leaves the lease to a process that has one"
)


class EmbeddedReconciler:
    """The reconciler loop as a service of the web process (``RECONCILER=embedded``).

    A process without any provider token runs no passes and never takes the
    lease (it would keep a worker that has the tokens from running); it says so
    once in the log and in its status, which turns red only when tasks wait
    and no process has completed a pass for 3 intervals.
    """

    name = "reconciler"

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store, self.settings = store, settings
        self.loop: ReconcilerLoop | None = None
        self._http: httpx.AsyncClient | None = None
        self.started_at = time.time()

    async def start(self) -> asyncio.Task[None] | None:
        self.started_at = time.time()
        self._http = default_http_client()
        clients = build_clients(self.settings, self._http)
        if not clients:
            event(log, "reconciler_idle", logging.WARNING, reason=NO_TOKEN)
            return None
        self.loop = ReconcilerLoop(self.store, self.settings, clients)
        return self.loop.start()

    async def stop(self) -> None:
        if self.loop is not None:
            await self.loop.stop()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def status(self) -> dict[str, Any]:
        if self.loop is not None:
            return await self.loop.status()
        body = await reconciler_status(self.store, self.settings, self.started_at, {})
        body["tokens"] = NO_TOKEN
        if not body["ok"] and not body["unfinished"]:
            body["ok"] = True  # nothing waits, so nothing is missed
            body.pop("reason", None)
        elif not body["ok"]:
            body["reason"] = f"{body['reason']}; {NO_TOKEN}"
        return body
