"""Retention: old raw bodies dropped (hashes kept, repeats still recognised), the quarantine
held to QUARANTINE_MAX_BYTES as bodies arrive, ``prune`` and its figures in /metrics.

On both backends (``database_url``); the command's end-to-end test on SQLite."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import replace

import httpx
import psycopg
import pytest

from server.ingest import receive
from server.retention import DAY, RetentionService, prune
from server.settings import Settings
from server.store import open_store

from .conftest import callback_path, serve_app
from .harness import ServerProcess, eventually, run_cli
from .payloads import dumps, seedance


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path}/t.db"


def settings_for(database_url: str, **values) -> Settings:
    return Settings(database_url=database_url, archive=False, **values)


def run_sql(url: str, sql: str, params: tuple = ()) -> None:
    """One statement on the database behind the store's back (``?`` placeholders)."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///") :]) as conn:
            conn.execute(sql, params)
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.replace("?", "%s"), params)


def age_tasks(url: str, days: float) -> None:
    """Make every final task look final for ``days`` already (as if time passed)."""
    run_sql(
        url,
        "UPDATE tasks SET completed_at = completed_at - ? WHERE completed_at IS NOT NULL",
        (days * DAY,),
    )


def callback(task_id: str, status: str = "succeeded") -> bytes:
    return dumps(seedance(task_id, status))


async def test_prune_drops_old_bodies_keeps_hashes_and_recent_ones(database_url):
    settings = settings_for(database_url, retention_days=30)
    async with open_store(settings) as store:
        old_bodies = [callback(f"old-{i}") for i in range(5)]
        for body in old_bodies:
            await receive(store, "seedance", body)
        await receive(store, "seedance", callback("running", status="running"))
        age_tasks(settings.database_url, 31)
        await receive(store, "seedance", callback("recent"))
        before = {d.sha256 for d in await store.deliveries("old-0")}

        pruned = await prune(store, settings)
        assert pruned.bodies == 5 and pruned.bytes > 0
        old = await store.deliveries("old-0")
        assert [d.body for d in old] == [b""] and {d.sha256 for d in old} == before
        assert (await store.deliveries("recent"))[0].body != b""
        assert (await store.deliveries("running"))[0].body != b""  # not final: kept
        assert await store.counter("pruned_bytes") == pruned.bytes

        repeat = await receive(store, "seedance", old_bodies[0])  # the dropped body again
        assert repeat.duplicate is True
        assert (await prune(store, settings)).bodies == 0  # nothing twice


async def test_a_late_delivery_to_a_task_long_final_is_pruned_too(database_url):
    settings = settings_for(database_url, retention_days=1)
    async with open_store(settings) as store:
        await receive(store, "seedance", callback("t"))
        age_tasks(settings.database_url, 2)
        await prune(store, settings)
        late = dumps({**seedance("t"), "note": "sent again, not byte-identical"})
        await receive(store, "seedance", late)
        assert [bool(d.body) for d in await store.deliveries("t")] == [False, True]
        assert (await prune(store, settings)).bodies == 1
        assert [bool(d.body) for d in await store.deliveries("t")] == [False, False]


async def test_retention_days_0_keeps_bodies_forever(database_url):
    settings = settings_for(database_url, retention_days=0)
    async with open_store(settings) as store:
        await receive(store, "seedance", callback("t"))
        age_tasks(settings.database_url, 10_000)
        assert (await prune(store, settings)).bodies == 0
        assert (await store.deliveries("t"))[0].body != b""


async def test_the_quarantine_is_held_to_its_byte_cap_as_bodies_arrive(database_url):
    settings = settings_for(database_url, quarantine_max_bytes=10_000)
    body = b"x" * 3000
    async with open_store(settings) as store:
        ids = [await store.quarantine("seedance", body, {}, "not_json", "m") for _ in range(5)]
        page, _ = await store.list_quarantine(limit=10)
        assert [item.id for item in page] == ids[:1:-1]  # the two oldest went first
        assert await store.counter("quarantine_bytes") == 9000
        assert await store.counter("quarantine_dropped") == 2
        assert await store.counter("quarantine_dropped_bytes") == 6000
    # Another process with a lower cap: prune applies it now; counts agree.
    lower = replace(settings, quarantine_max_bytes=4000)
    async with open_store(lower) as store:
        pruned = await prune(store, lower)
        assert (pruned.quarantine_rows, pruned.quarantine_bytes) == (2, 6000)
        assert await store.counter("quarantine_bytes") == 3000
        assert await store.counter("quarantine_dropped") == 4


async def test_quarantine_bytes_follow_every_insert_and_delete(database_url):
    settings = settings_for(database_url)
    async with open_store(settings) as store:
        kept = await store.quarantine("seedance", b"{not json", {}, "not_json", "m")
        await store.quarantine("seedance", b"12345", {}, "not_json", "m")
        assert await store.counter("quarantine_bytes") == 14
    run_sql(settings.database_url, "DELETE FROM quarantine WHERE id = ?", (kept,))  # any delete
    async with open_store(settings) as store:
        assert await store.counter("quarantine_bytes") == 5


async def test_the_retention_service_prunes_once_a_day_across_processes(database_url):
    settings = settings_for(database_url, retention_days=1)
    async with open_store(settings) as store:
        await receive(store, "seedance", callback("t"))
        age_tasks(settings.database_url, 2)
        first = RetentionService(store, settings, first_delay=0)
        await first.start()
        await eventually(lambda: store.get_value("retention.last_run"), "a first run")
        assert (await store.deliveries("t"))[0].body == b""
        ran_at = (await store.get_value("retention.last_run"))["at"]
        second = RetentionService(store, settings, first_delay=0)  # another process
        await second.start()
        status = await second.status()
        await first.stop()
        await second.stop()
        assert (await store.get_value("retention.last_run"))["at"] == ran_at  # not run again
        assert status["ok"] and status["last_run"]["bodies"] == 1


async def test_metrics_show_database_size_and_what_was_dropped(database_url):
    settings = settings_for(database_url, retention_days=1, reconciler="off")
    async with open_store(settings) as store:
        await receive(store, "seedance", callback("t2"))
        age_tasks(settings.database_url, 2)
        pruned = await prune(store, settings)
    async with serve_app(settings) as client:
        text = (await client.get("/metrics")).text
    size = float(re.search(r"^taskhook_database_bytes (\S+)$", text, re.M).group(1))
    if settings.database_url.startswith("sqlite:///"):
        assert size >= settings.database_path.stat().st_size
    else:
        assert size > 0
    freed = float(re.search(r"^taskhook_pruned_bytes_total (\S+)$", text, re.M).group(1))
    assert freed == pruned.bytes > 0
    assert re.search(r"^taskhook_quarantine_bytes 0\.0$", text, re.M)


@pytest.mark.e2e
def test_the_prune_command_prints_what_it_freed(tmp_path):
    server = ServerProcess(tmp_path / "t.db", env={"RETENTION_DAYS": "1"}).start()
    try:
        token_path = callback_path("seedance")
        for i in range(3):
            ok = httpx.post(server.url + token_path, content=dumps(seedance(f"t{i}")), timeout=10)
            assert ok.status_code == 200
        age_tasks(f"sqlite:///{tmp_path / 't.db'}", 2)
        result = run_cli("prune", env=server.env(), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "dropped 3 raw bodies" in result.stdout and "kept 1 days" in result.stdout
        shown = httpx.get(
            f"{server.url}/tasks/t0/deliveries",
            headers={"Authorization": "Bearer test-api-token"},
            timeout=10,
        ).json()["deliveries"]
        assert shown[0]["body"] is None and shown[0]["body_dropped"] is True
        assert len(shown[0]["sha256"]) == 64
    finally:
        server.stop()
