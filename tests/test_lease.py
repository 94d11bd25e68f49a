"""A reconciler that lost its lease stops: its pass is cancelled, never run beside another.

Real loops on one real SQLite database; the store is wrapped only to refuse or
stall one loop's lease calls (what a lost term or a paused process looks like
from inside), and the upstream is an httpx MockTransport that records every id
being asked, so two loops asking for the same ids at once cannot go unseen.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from typing import Any, Literal

import httpx
import pytest

from server.providers.acedata import AceDataClient
from server.reconcile.lease import Lease, LeaseLost
from server.reconcile.loop import LEASE_NAME, ReconcilerLoop
from server.reconcile.report import PassReport
from server.store import Registration, Store, open_store

from .harness import eventually
from .test_reconciler import make_settings

Trouble = Literal["none", "refuse", "stall"]


class TroubledLeases:
    """A real store whose lease calls after the first take are refused or stall on demand."""

    def __init__(self, store: Store, trouble: Trouble = "none") -> None:
        self._store = store
        self.trouble: Trouble = trouble
        self.takes = 0
        self.stalled = asyncio.Event()  # set once a lease call hangs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def _troubled(self) -> bool:
        if self.trouble == "stall":
            self.stalled.set()
            await asyncio.Event().wait()  # a database (or a process) that does not answer
        return self.trouble == "refuse"

    async def take_lease(self, name: str, holder: str, ttl: float) -> int | None:
        self.takes += 1
        if self.takes > 1 and await self._troubled():
            return None
        return await self._store.take_lease(name, holder, ttl)

    async def renew_lease(self, name: str, holder: str, term: int, ttl: float) -> bool:
        if await self._troubled():
            return False
        return await self._store.renew_lease(name, holder, term, ttl)


class RecordingUpstream:
    """A retrieve_batch endpoint that answers "not yet" slowly and records overlapping asks."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.in_flight: Counter[str] = Counter()
        self.overlaps: list[str] = []
        self.calls: Counter[str] = Counter()  # by the asking client's token

    async def handler(self, request: httpx.Request) -> httpx.Response:
        ids = json.loads(request.content)["ids"]
        self.calls[request.headers["authorization"]] += 1
        self.overlaps += [i for i in ids if self.in_flight[i]]
        self.in_flight.update(ids)
        try:
            await asyncio.sleep(self.latency)
        finally:  # a cancelled call is over too
            self.in_flight.subtract(ids)
        return httpx.Response(200, json={"items": [], "count": 0})


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(tmp_path, request):
    """One database both loops share: a SQLite file, or a PostgreSQL database (see pgserver)."""
    extra = {}
    if request.param == "postgresql":
        extra["database_url"] = request.getfixturevalue("postgres_url")
    return make_settings(
        tmp_path, reconcile_interval=0.05, reconcile_batch_size=5, reconciler="embedded", **extra
    )


def client(http: httpx.AsyncClient, token: str) -> dict[str, Any]:
    return {"seedance": AceDataClient("seedance", "https://ace.test", token, http)}


async def test_two_loops_never_ask_upstream_for_the_same_ids_at_once(settings):
    upstream = RecordingUpstream(latency=0.1)
    transport = httpx.MockTransport(upstream.handler)
    async with (
        open_store(settings) as store_a,
        open_store(settings) as store_b,
        httpx.AsyncClient(transport=transport) as http,
    ):
        ids = [str(uuid.uuid4()) for _ in range(40)]
        await store_a.register([Registration("seedance", i) for i in ids])
        troubled = TroubledLeases(store_a)
        a = ReconcilerLoop(troubled, settings, client(http, "a"), holder="a", lease_ttl=0.6)
        b = ReconcilerLoop(store_b, settings, client(http, "b"), holder="b", lease_ttl=0.6)
        a.start()
        await eventually(lambda: upstream.calls["Bearer a"] >= 1, what="a polling")
        troubled.trouble = "stall"  # a's lease calls stop coming back from here on
        b.start()
        await eventually(lambda: b.passes >= 1, what="b's pass over every task", within=20)
        await b.stop()
        await a.stop(grace=0.1)  # a is stuck in a lease call that never returns
        checks = [(await store_b.get_task(i)).checks for i in ids]
    assert troubled.stalled.is_set()
    assert a.passes == 0  # a's pass was cancelled, not finished beside b's
    assert upstream.calls["Bearer b"] >= 1
    assert min(checks) >= 1  # between them, every task was asked about
    assert upstream.overlaps == []


async def test_a_refused_renewal_cancels_the_running_pass_at_once(settings):
    cancelled = asyncio.Event()

    async def endless_pass() -> PassReport:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    async with open_store(settings) as store:
        troubled = TroubledLeases(store, trouble="refuse")
        loop = ReconcilerLoop(
            troubled, settings, {}, holder="a", lease_ttl=60, renew_every=0.05, run=endless_pass
        )
        # Without the cancel, tick() would wait for the endless pass; 10 s only stops a hang.
        assert await asyncio.wait_for(loop.tick(), 10) is None
    assert cancelled.is_set()
    assert not loop.holding
    assert loop.passes == 0


async def test_a_stalled_renewal_cancels_the_pass_before_the_lease_can_lapse(settings):
    async with open_store(settings) as store:
        troubled = TroubledLeases(store, trouble="stall")
        lease = Lease(troubled, LEASE_NAME, "a", ttl=1.0, renew_every=0.05, margin=0.5)
        assert await lease.acquire()
        with pytest.raises(LeaseLost, match="no renewal came back"):
            await asyncio.wait_for(lease.run(lambda: asyncio.Event().wait()), 10)
        # The store still holds a's lease when the work stopped: nobody else could have it yet.
        assert await store.take_lease(LEASE_NAME, "b", 30) is None
    assert not lease.held


async def test_a_renewed_lease_lets_a_long_pass_run_to_its_end(settings):
    async with open_store(settings) as store:
        lease = Lease(store, LEASE_NAME, "a", ttl=0.6, renew_every=0.05)
        assert await lease.acquire()
        assert await lease.run(lambda: asyncio.sleep(1.0, result="done")) == "done"
        assert lease.held


async def test_the_works_own_timeout_is_not_a_lost_lease(settings):
    async def times_out() -> None:
        raise TimeoutError("the work's own")

    async with open_store(settings) as store:
        lease = Lease(store, LEASE_NAME, "a", ttl=30)
        assert await lease.acquire()
        with pytest.raises(TimeoutError, match="the work's own"):
            await lease.run(times_out)
        assert lease.held


@pytest.mark.parametrize("interval", [1.0, 30.0, 300.0])
def test_a_dead_holders_lease_moves_within_three_intervals(tmp_path, interval):
    settings = make_settings(tmp_path, reconcile_interval=interval, reconciler="embedded")
    loop = ReconcilerLoop(None, settings, {})  # type: ignore[arg-type] - no store needed
    # It lapses lease_ttl after the holder's last renewal, and every other loop asks for it
    # once an interval: one of them holds it within 3 intervals of the holder's death.
    assert loop.lease_ttl + interval <= 3 * interval
    # A live holder renews within an interval of its last renewal during a pass (renew_every)
    # and between passes (its next tick), so the lease does not lapse under it.
    assert loop.lease_ttl > loop.lease.renew_every + interval
