"""The reconciler loop: one lease holder across loops on one database, status, lifespan."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from server.reconcile.loop import (
    LAST_PASS_KEY,
    PROVIDERS_KEY,
    ReconcilerLoop,
    reconciler_status,
)
from server.reconcile.report import PassReport
from server.store import open_store

from .conftest import serve_app
from .harness import eventually
from .test_reconciler import make_settings


class Instrumented:
    """A pass function that records how many passes run at once, across loops."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.by: dict[str, int] = {}

    def for_loop(self, name: str):
        async def one_pass() -> PassReport:
            self.running += 1
            self.most = max(self.most, self.running)
            self.by[name] = self.by.get(name, 0) + 1
            try:
                await asyncio.sleep(0.02)  # a pass takes time; another loop must not start one
            finally:
                self.running -= 1
            return PassReport(started_at=time.time())

        return one_pass


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path, reconcile_interval=0.01, reconciler="embedded")


async def test_two_loops_on_one_database_never_pass_at_once(settings):
    counter = Instrumented()
    async with open_store(settings) as a, open_store(settings) as b:
        loops = [
            ReconcilerLoop(a, settings, {}, holder="a", lease_ttl=5, run=counter.for_loop("a")),
            ReconcilerLoop(b, settings, {}, holder="b", lease_ttl=5, run=counter.for_loop("b")),
        ]
        for loop in loops:
            loop.start()
        await eventually(lambda: sum(counter.by.values()) >= 20, what="20 passes")
        holders = set(counter.by)
        for loop in loops:
            await loop.stop()  # the first to stop releases the lease; the other may take it
    assert counter.most == 1
    assert len(holders) == 1  # while both ran, the holder kept renewing; the other never ran


async def test_lease_lapses_when_the_holder_stops_renewing(settings):
    counter = Instrumented()
    async with open_store(settings) as a, open_store(settings) as b:
        crashed = ReconcilerLoop(
            a, settings, {}, holder="a", lease_ttl=0.3, run=counter.for_loop("a")
        )
        assert await crashed.tick() is not None  # "a" holds the lease, then dies without release
        other = ReconcilerLoop(
            b, settings, {}, holder="b", lease_ttl=0.3, run=counter.for_loop("b")
        )
        assert await other.tick() is None  # still held by "a"
        other.start()
        await eventually(lambda: counter.by.get("b", 0) >= 1, what="b takes over")
        await other.stop()
    assert counter.most == 1


async def test_status_ok_after_a_pass_and_stale_after_three_intervals(settings):
    # 5 s: "a pass within 3 intervals" holds however loaded the machine is (0.01 s did not).
    settings = replace(settings, reconcile_interval=5.0)
    async with open_store(settings) as store:
        loop = ReconcilerLoop(store, settings, {}, holder="a", run=Instrumented().for_loop("a"))
        await loop.tick()
        status = await loop.status()
        assert status["ok"] is True
        assert status["last_pass_at"] is not None
        assert status["providers"]["seedance"] == {
            "state": "skipped",
            "reason": "no token configured",
        }
        long_ago = time.time() - 60
        await store.set_value(LAST_PASS_KEY, {"at": long_ago})
        stale = await reconciler_status(store, settings, long_ago, {})
        assert stale["ok"] is False
        assert "no reconcile pass completed" in stale["reason"]


async def test_status_not_ok_while_a_token_is_rejected(settings):
    async with open_store(settings) as store:
        await store.set_value(LAST_PASS_KEY, {"at": time.time()})
        await store.set_value(PROVIDERS_KEY, {"seedance2": {"state": "unauthorized"}})
        status = await reconciler_status(store, settings, time.time(), {"seedance2": object()})
        assert status["ok"] is False
        assert "token rejected by seedance2" in status["reason"]


async def test_readyz_embedded_runs_passes_and_reports_skipped_providers(settings):
    # An AceData token only: Seedance 2.0 is skipped (no task is due, so no call goes out).
    # A 5 s interval keeps "ran within 3 intervals" true however loaded the machine is.
    async with serve_app(
        replace(settings, acedata_api_token="t", reconcile_interval=5.0)
    ) as client:

        async def passed():
            body = (await client.get("/readyz")).json()
            return body if body["checks"]["reconciler"]["last_pass_at"] else None

        body = await eventually(passed, what="a pass reported in /readyz")
        check = body["checks"]["reconciler"]
        assert body["ok"] is True
        assert check["providers"]["seedance2"]["state"] == "skipped"
        assert check["unfinished"] == 0


async def test_readyz_with_reconciler_off(settings):
    async with serve_app(replace(settings, reconciler="off")) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["reconciler"] == {"ok": True, "reconciler": "off"}
