"""The delivery service: claims due webhook attempts from the store and sends them.

One loop per process. Each round it asks the store to fan out newly committed
events and claim due head messages (``Store.claim_messages``: exclusive claims
with a lease, at most ``DELIVERY_ENDPOINT_CONCURRENCY`` live ones per endpoint),
then sends each claimed attempt in its own task, at most
``DELIVERY_CONCURRENCY`` at once in this process. An attempt is signed
(``signing``), sent with one deadline (``sender``), judged (``schedule``) and
settled in the store, which records it.

It sleeps until one of: a commit made events or made messages due by hand
(``wait_for_work("events" | "webhooks")``: from this process at once, from
others within about a second), an attempt
of its own finished (a slot is free, or a task's next event may go), the next
retry falls due, or ``poll_interval`` passed (claims that lapsed, work queued by
another process's redelivery).

Guarantees: at least once (a message is settled only after its answer; a
crash leaves its claim to lapse and the attempt is made again), never two
attempts of one message at once (the lease is longer than any attempt), and
the order of one task's events per endpoint (only heads are claimed). Sending
never blocks callbacks: it runs in its own tasks, and the store's writes for
it are small transactions on the shared writer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from server.core.delivery_schedule import after_attempt
from server.delivery import sender, signing
from server.observe.logs import event
from server.observe.metrics import WEBHOOK_ATTEMPTS, WEBHOOK_DISABLED, WEBHOOK_LATENCY
from server.service import Inflight, cancel, holder_id
from server.settings import Settings
from server.store import Store, WorkKind
from server.store.webhooks import Attempt, Claim

log = logging.getLogger("taskhook.delivery")

#: How often the loop looks for work nobody signalled (lapsed claims, other processes).
POLL_INTERVAL = 2.0
#: A claim outlives the longest attempt (DELIVERY_TIMEOUT) by this much.
LEASE_MARGIN = 10.0
#: On shutdown, attempts in flight get this long to finish before they are cancelled.
STOP_GRACE = 5.0
#: After a store error the loop waits this long before trying again.
ERROR_PAUSE = 1.0
#: Signals that may mean new work: events committed, messages made due by hand.
WAKE_KINDS: tuple[WorkKind, ...] = ("events", "webhooks")


class Delivery:
    """Sends every event to every endpoint subscribed to it; a service of the web process."""

    name = "delivery"

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        http: httpx.AsyncClient | None = None,
        poll_interval: float = POLL_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self.store = settings, store
        self.holder = holder_id()
        self.slots = settings.delivery_concurrency
        self.per_endpoint = settings.delivery_endpoint_concurrency
        self.timeout = settings.delivery_timeout
        self.lease = settings.delivery_timeout + LEASE_MARGIN
        self.schedule = settings.retry_schedule
        self.poll_interval = poll_interval
        self._clock = clock
        self._http, self._own_http = http, http is None
        self._wake = asyncio.Event()
        self._inflight: Inflight[None] = Inflight(log, "webhook attempt crashed", self._wake.set)
        self._loop: asyncio.Task[None] | None = None
        self._stopping = False
        self.attempts = 0  # attempts settled by this process (status)

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> asyncio.Task[None]:
        if self._http is None:
            self._http = sender.client(self.slots)
        self._loop = asyncio.create_task(self._run(), name="delivery")
        return self._loop

    async def stop(self) -> None:
        """Stop claiming; give attempts in flight ``STOP_GRACE`` s, cancel the rest and give
        their claims back (they are attempted again, by this process's successor or another)."""
        self._stopping = True
        self._wake.set()
        await cancel(self._loop)
        await self._inflight.wait(STOP_GRACE)
        await self._inflight.cancel()
        try:
            released = await self.store.release_messages(self.holder)
        except Exception:  # the store may be closed already: the claims lapse by themselves
            log.warning("delivery could not give back its claims; they lapse later", exc_info=True)
        else:
            if released:
                log.info("delivery gave back %d attempt(s) in flight at shutdown", released)
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def status(self) -> dict[str, Any]:
        """Endpoints, what waits for them and which are disabled (a disabled endpoint is
        the application's to fix: it does not make this process unready)."""
        backlog = await self.store.webhook_backlog()
        now = self._clock()
        oldest = [b.oldest_pending for b in backlog if b.oldest_pending is not None]
        return {
            "ok": True,
            "endpoints": len(backlog),
            "pending": sum(b.pending for b in backlog),
            "oldest_pending_age_s": round(now - min(oldest), 3) if oldest else None,
            "in_flight": len(self._inflight),
            "disabled": [
                {"endpoint": b.endpoint_id, "reason": b.disabled_reason}
                for b in backlog
                if b.disabled_at is not None
            ],
        }

    # -- the loop -----------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            marks = {kind: self.store.work_mark(kind) for kind in WAKE_KINDS}
            free = self.slots - len(self._inflight)
            wait = self.poll_interval
            if free > 0:
                try:
                    claims = await self.store.claim_messages(
                        self.holder, free, self.per_endpoint, self.lease
                    )
                except Exception:  # a store hiccup must not end the loop
                    log.exception("delivery could not claim attempts")
                    wait = ERROR_PAUSE
                else:
                    for claim in claims.items:
                        self._inflight.spawn(self.attempt(claim), f"webhook {claim.event_id}")
                    if len(claims.items) == free:
                        continue  # maybe more is due: claim again once slots free up
                    if claims.next_due is not None:
                        wait = min(wait, max(0.0, claims.next_due - self._clock()))
            await self._sleep(wait, marks)

    async def _sleep(self, timeout: float, marks: dict[WorkKind, int]) -> None:  # noqa: ASYNC109
        """Until work is signalled (since ``marks``), an attempt of ours ends, or ``timeout``."""
        if self._wake.is_set():
            self._wake.clear()
            return
        waiters = [
            asyncio.ensure_future(self.store.wait_for_work(kind, timeout, after=mark))
            for kind, mark in marks.items()
        ]
        waiters.append(asyncio.ensure_future(self._wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        self._wake.clear()

    # -- one attempt --------------------------------------------------------

    async def attempt(self, claim: Claim) -> None:
        """Send one claimed attempt and settle it in the store."""
        assert self._http is not None, "start() first"
        body = claim.body.encode()
        started = self._clock()
        headers = signing.headers(claim.event_id, body, claim.secrets, started)
        sent = await sender.send(self._http, claim.url, headers, body, self.timeout)
        nxt = after_attempt(
            sent.answer,
            schedule=self.schedule,
            scheduled=claim.scheduled,
            manual=claim.manual,
            resume_at=claim.resume_at,
            now=self._clock(),
        )
        record = Attempt(
            event_id=claim.event_id,
            attempt=claim.attempt,
            attempted_at=started,
            outcome=nxt.outcome,
            response_status=sent.answer.status,
            duration_ms=sent.duration_ms,
            response=sent.response,
            error=sent.answer.error,
        )
        settled = await self.store.finish_message(claim, self.holder, record, nxt)
        self.attempts += 1
        WEBHOOK_ATTEMPTS.labels(claim.endpoint_id, settled.outcome).inc()
        if settled.outcome == "delivered" and sent.answered_at is not None:
            WEBHOOK_LATENCY.observe(max(0.0, sent.answered_at - claim.committed_at))
        if settled.outcome == "failed":
            event(
                log,
                "webhook_failed",
                logging.WARNING,
                endpoint=claim.endpoint_id,
                event_id=claim.event_id,
                attempt=claim.attempt,
                status=sent.answer.status,
                error=sent.answer.error,
            )
        if settled.disabled is not None:
            WEBHOOK_DISABLED.labels("gone" if nxt.disable else "failing").inc()
            event(
                log,
                "webhook_endpoint_disabled",
                logging.ERROR,
                endpoint=claim.endpoint_id,
                reason=settled.disabled,
            )
