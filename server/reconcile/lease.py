"""A lease in the store that fences work: lose the lease and the work is cancelled.

``Lease.acquire()`` takes the named lease for ``ttl`` seconds and remembers
its term. ``Lease.run(work)`` runs ``work`` while renewing the lease with that
term every ``renew_every`` seconds, and guarantees that ``work`` does not run
past the moment the lease may have gone to someone else:

* a refused renewal (another holder has a newer term, or the lease lapsed)
  cancels ``work`` at once;
* a renewal that does not come back in time (a stalled database, a paused
  process) cancels ``work`` when the lease's time runs out, measured on this
  process's monotonic clock from *before* the last successful take or renewal,
  less a safety margin, so that it ends before the store lets another holder in.

Either way ``run`` raises ``LeaseLost``. So two holders never do the fenced
work at the same time, whatever their stores or event loops do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from server.service import cancel

if TYPE_CHECKING:
    from server.store import Store

log = logging.getLogger("taskhook.reconciler")

T = TypeVar("T")


class LeaseLost(Exception):
    """The lease was lost while work ran under it; the work was cancelled."""


class Lease:
    """One named lease, held (or not) by ``holder`` in ``store``."""

    def __init__(
        self,
        store: Store,
        name: str,
        holder: str,
        ttl: float,
        *,
        renew_every: float | None = None,
        margin: float | None = None,
    ) -> None:
        self.store = store
        self.name = name
        self.holder = holder
        self.ttl = ttl
        self.renew_every = renew_every if renew_every is not None else ttl / 3
        #: Work stops this long before the lease could lapse in the store.
        self.margin = margin if margin is not None else ttl / 10
        #: The term this holder holds, or None.
        self.term: int | None = None
        self._valid_until = 0.0  # loop.time() after which the lease may be someone else's

    @property
    def held(self) -> bool:
        return self.term is not None

    async def acquire(self) -> bool:
        """Take the lease (or extend it if held); True when this holder holds it now."""
        started = asyncio.get_running_loop().time()
        self.term = await self.store.take_lease(self.name, self.holder, self.ttl)
        if self.term is not None:
            self._valid_until = started + self.ttl - self.margin
        return self.term is not None

    async def release(self) -> None:
        """Give the lease up so another holder can take it at once; best effort."""
        self.term = None
        with contextlib.suppress(Exception):
            await self.store.release_lease(self.name, self.holder)

    async def run(self, work: Callable[[], Awaitable[T]]) -> T:
        """``work()`` under the lease; ``LeaseLost`` (work cancelled) once it may be lost."""
        if self.term is None:
            raise LeaseLost(f"lease {self.name} is not held by {self.holder}")
        lost: list[str] = []
        try:
            async with asyncio.timeout_at(self._valid_until) as fence:
                keeper = asyncio.create_task(self._keep(fence, lost), name=f"lease {self.name}")
                try:
                    return await work()
                finally:
                    await cancel(keeper)
        except TimeoutError:
            if not fence.expired():
                raise  # the work's own timeout, not ours
            self.term = None
            raise LeaseLost(lost[0] if lost else "no renewal came back before it ran out") from None

    async def _keep(self, fence: asyncio.Timeout, lost: list[str]) -> None:
        """Renew every ``renew_every``; move the fence on success, drop it on refusal."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.renew_every)
            started = loop.time()
            try:
                renewed = await self._renew()
            except Exception as exc:  # the store is in trouble: the fence still holds
                log.warning("lease renewal failed lease=%s error=%s", self.name, type(exc).__name__)
                continue
            if not renewed:
                lost.append("a renewal was refused: the lease lapsed or another holder took it")
                fence.reschedule(loop.time())  # cancel the work now
                return
            self._valid_until = started + self.ttl - self.margin
            fence.reschedule(self._valid_until)

    async def _renew(self) -> bool:
        assert self.term is not None
        return await self.store.renew_lease(self.name, self.holder, self.term, self.ttl)
