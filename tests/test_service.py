"""Services: started and stopped in one place; a dead loop is logged once and red in /readyz."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import httpx

from server.archive.archiver import Archiver
from server.reconcile.loop import EmbeddedReconciler, ReconcilerLoop
from server.service import Inflight, Service, Services, cancel, holder_id
from server.store import Registration
from server.web.app import create_app

from .conftest import callback_path, serve_app
from .harness import eventually
from .payloads import dumps, seedance


class Boom(BaseException):
    """Not an Exception: nothing inside a loop catches it, as with a real bug of that kind."""


class Looping:
    """A service whose loop runs until stopped, or dies when told to."""

    def __init__(self, name: str, journal: list[str]) -> None:
        self.name, self.journal = name, journal
        self.die = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        await self.die.wait()
        raise Boom("the loop hit a bug")

    async def start(self) -> asyncio.Task[None]:
        self.journal.append(f"start {self.name}")
        self.task = asyncio.create_task(self._run())
        return self.task

    async def stop(self) -> None:
        self.journal.append(f"stop {self.name}")
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def status(self) -> dict[str, object]:
        return {"ok": True, "name": self.name}


def test_the_loops_of_the_codebase_are_services(settings):
    assert isinstance(Looping("x", []), Service)
    assert isinstance(Archiver(settings, store=None), Service)  # type: ignore[arg-type]
    assert isinstance(EmbeddedReconciler(store=None, settings=settings), Service)  # type: ignore[arg-type]


async def test_services_start_in_order_and_stop_in_reverse_without_a_death(caplog):
    journal: list[str] = []
    services = Services()
    for name in ("a", "b", "c"):
        await services.start(Looping(name, journal))
    assert (await services.statuses())["b"] == {"ok": True, "name": "b"}
    await services.stop()
    await services.stop()  # idempotent
    assert journal == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
    assert all(s["ok"] for s in (await services.statuses()).values())
    assert "stopped working" not in caplog.text


async def test_a_loop_that_dies_is_logged_once_and_reported_until_restart(caplog):
    services = Services()
    dying = Looping("archive", [])
    await services.start(dying)
    await services.start(Looping("other", []))
    dying.die.set()
    await eventually(lambda: dying.task is not None and dying.task.done(), "the loop to die")
    await asyncio.sleep(0)  # the done-callback runs on the next turn of the loop
    status = await services.status("archive")
    assert status["ok"] is False
    assert "it died: Boom: the loop hit a bug" in status["reason"]
    assert (await services.status("other"))["ok"] is True
    await services.statuses()
    deaths = [r for r in caplog.records if "stopped working" in r.getMessage()]
    assert len(deaths) == 1 and deaths[0].levelno == logging.ERROR
    assert deaths[0].exc_info is not None  # the traceback says where
    await services.stop()


async def test_a_service_that_cannot_start_is_dead_and_the_others_still_start():
    class Broken(Looping):
        async def start(self) -> asyncio.Task[None]:
            raise OSError("ARCHIVE_DIR is on a read-only disk")

    journal: list[str] = []
    services = Services()
    await services.start(Broken("archive", journal))
    await services.start(Looping("reconciler", journal))
    statuses = await services.statuses()
    assert statuses["archive"]["ok"] is False
    reason = statuses["archive"]["reason"]
    assert "could not start: OSError: ARCHIVE_DIR is on a read-only disk" in reason
    assert statuses["reconciler"]["ok"] is True
    await services.stop()


async def test_a_status_that_raises_is_reported_not_raised():
    class Flaky(Looping):
        async def status(self) -> dict[str, object]:
            raise RuntimeError("year out of range")

    services = Services()
    await services.start(Flaky("reconciler", []))
    status = await services.status("reconciler")
    assert status == {"ok": False, "reason": "its status failed: RuntimeError: year out of range"}
    await services.stop()


async def test_readyz_is_503_with_the_reason_when_the_archive_loop_dies(settings, monkeypatch):
    async def fatal(self: Archiver) -> None:
        raise Boom("claim loop broke")

    monkeypatch.setattr(Archiver, "_fill_slots", fatal)
    async with serve_app(replace(settings, archive=True)) as client:

        async def red():
            response = await client.get("/readyz")
            return response if response.status_code == 503 else None

        response = await eventually(red, "readyz to turn red")
        body = response.json()
        assert body["checks"]["archive"]["ok"] is False
        assert any(
            r.startswith("archive: it died: Boom: claim loop broke") for r in body["reasons"]
        )
        assert body["checks"]["database"]["ok"] is True


async def test_readyz_is_503_not_500_when_a_status_raises(app, client):
    class Broken(Looping):
        async def status(self) -> dict[str, object]:
            raise ValueError("bad state")

    await app.state.taskhook.services.start(Broken("webhooks", []))
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reasons"] == ["webhooks: its status failed: ValueError: bad state"]


async def test_the_reconciler_loop_task_is_watched(settings, monkeypatch):
    async def fatal(self: ReconcilerLoop) -> None:
        raise Boom("tick broke")

    monkeypatch.setattr(ReconcilerLoop, "_main", fatal)
    configured = replace(settings, reconciler="embedded", acedata_api_token="t")
    async with serve_app(configured) as client:

        async def red():
            body = (await client.get("/readyz")).json()
            return body if not body["checks"]["reconciler"]["ok"] else None

        body = await eventually(red, "the reconciler to show red")
        assert "it died: Boom: tick broke" in body["checks"]["reconciler"]["reason"]


async def test_a_process_without_tokens_takes_no_lease_and_is_red_only_while_tasks_wait(settings):
    configured = replace(settings, reconciler="embedded", reconcile_interval=0.05)
    app = create_app(configured)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        store = app.state.taskhook.store
        await store.register([Registration("seedance", "t-1")])

        async def red():
            check = (await client.get("/readyz")).json()["checks"]["reconciler"]
            return check if not check["ok"] else None

        # Red means 3 intervals went by: a loop holding the lease would have passed by now.
        check = await eventually(red, "readyz to say that no pass runs")
        assert "no reconcile pass completed" in check["reason"]
        assert "ACEDATA_API_TOKEN" in check["reason"] and "has no provider token" in check["tokens"]
        assert check["last_pass_at"] is None
        assert await store.take_lease("reconciler", "a-worker", 30) is not None  # nobody held it

        done = await client.post(callback_path("seedance"), content=dumps(seedance("t-1")))
        assert done.status_code == 200
        check = (await client.get("/readyz")).json()["checks"]["reconciler"]
        assert check["ok"] is True and check["unfinished"] == 0
        assert "has no provider token" in check["tokens"]


# -- what services that claim work share ------------------------------------------------


async def test_inflight_logs_a_crash_and_calls_on_end_for_every_end(caplog):
    ends: list[int] = []
    running = Inflight[str](
        logging.getLogger("taskhook.test"), "piece crashed", lambda: ends.append(1)
    )
    gate = asyncio.Event()

    async def fine() -> str:
        return "ok"

    async def crash() -> str:
        raise RuntimeError("boom")

    async def waits() -> str:
        await gate.wait()
        return "late"

    await asyncio.gather(running.spawn(fine(), "fine"), return_exceptions=True)
    with caplog.at_level(logging.ERROR, logger="taskhook.test"):
        await asyncio.gather(running.spawn(crash(), "crash"), return_exceptions=True)
    assert [r.getMessage() for r in caplog.records if r.name == "taskhook.test"] == [
        "piece crashed"
    ]
    slow = running.spawn(waits(), "waits")
    assert len(running) == 1
    await running.wait(0.01)  # a bound, not a sleep: the piece is still running after it
    assert not slow.done()
    await running.cancel()
    assert slow.cancelled() and len(running) == 0
    assert len(ends) == 3


async def test_cancel_ends_loops_and_skips_none():
    loop = asyncio.create_task(asyncio.Event().wait())
    await cancel(None, loop)
    assert loop.cancelled()


def test_holder_ids_differ_per_call():
    assert holder_id() != holder_id()
