"""End to end: the real server with its embedded reconciler against the fake upstream.

Callbacks are dropped, duplicated, reordered and preceded by ``{}``; the
reconciler must fill every gap so that each task ends as the fake says, and
then stop calling upstream.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import httpx
import pytest

from scripts.fake_upstream import CallbackPolicy, FakeConfig, create_app, serving
from scripts.fake_upstream_payloads import acedata_response, acedata_wrapper, seedance2_body
from server.core.tokens import callback_url
from server.providers import NAMES as PROVIDERS
from server.providers.parse import parse_payload

from .harness import API_TOKEN, CALLBACK_SECRET, ROOT, ServerProcess, eventually

pytestmark = [
    pytest.mark.e2e,
    # tests/harness.py leaves the child's log file handle to the garbage collector.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def server_env(fake_url: str, **extra: str) -> dict[str, str]:
    env = {
        "ACEDATA_BASE_URL": fake_url,
        "SEEDANCE2_BASE_URL": fake_url,
        "ACEDATA_API_TOKEN": FakeConfig.acedata_token,
        "SEEDANCE2_API_KEY": FakeConfig.seedance2_key,
        "RECONCILER": "embedded",
        "RECONCILE_INTERVAL": "0.3",
        "RECONCILE_GRACE": "0.001",  # settings want a positive number
        "PYTHONPATH": str(ROOT),  # the harness starts the child outside the checkout
    }
    env.update(extra)
    return env


def expected(fake, task) -> tuple[str, set[str]]:
    """The final status and result URLs (query dropped) from the fake's own record."""
    now = time.time()
    if task.provider == "seedance2":
        payload = seedance2_body(task, now, fake.config.result_url_ttl)
    else:
        payload = acedata_wrapper(task, acedata_response(task, now) or {})
    obs = parse_payload(task.provider, payload)
    return obs.status.value, {r.url.split("?")[0] for r in obs.results}


async def all_tasks(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    return (await api.get("/tasks", params={"limit": 500})).json()["tasks"]


async def passes_seen(api: httpx.AsyncClient) -> str | None:
    body = (await api.get("/readyz")).json()
    return body["checks"]["reconciler"]["last_pass_at"]


async def test_every_task_converges_despite_lost_callbacks(tmp_path, database_url):
    policy = CallbackPolicy(drop=0.33, duplicate=0.2, reorder=0.5, empty_first=0.2)
    app = create_app(FakeConfig(seed=7, acedata_pending="empty", callbacks=policy))
    fake = app.state.fake
    async with serving(app) as fake_url:
        server = ServerProcess(
            tmp_path / "t.db", database_url=database_url, env=server_env(fake_url)
        )
        await asyncio.to_thread(server.start)
        try:
            async with (
                httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=10) as api,
                httpx.AsyncClient(base_url=fake_url, timeout=10) as up,
            ):
                await up.post("/_fake/faults", json={"provider": "seedance", "next": ["429"]})
                await up.post("/_fake/faults", json={"provider": "dreamina", "next": ["500"]})
                specs = [
                    {
                        "provider": PROVIDERS[i % 4],
                        "outcome": "failed" if i % 10 == 9 else "succeeded",
                        "finish_after": 0 if i % 2 else 1.0,
                        "callback_url": callback_url(server.url, CALLBACK_SECRET, PROVIDERS[i % 4]),
                    }
                    for i in range(200)
                ]
                created = (await up.post("/_fake/tasks", json={"tasks": specs})).json()["tasks"]
                regs = [{"provider": t["provider"], "task_id": t["task_id"]} for t in created]
                assert (await api.post("/tasks", json={"tasks": regs})).status_code == 201

                async def converged():
                    tasks = await all_tasks(api)
                    final = [t for t in tasks if t["status"] in ("succeeded", "failed")]
                    return tasks if len(final) == 200 else None

                tasks = await eventually(converged, "every task final", within=25)
                for task in tasks:
                    held = fake.find(task["provider"], task["task_id"])
                    status, urls = expected(fake, held)
                    assert task["status"] == status, task["task_id"]
                    assert {r["url"].split("?")[0] for r in task["results"]} == urls
                    assert task["checks"] <= 3, task  # polled no more than needed

                stats = (await up.get("/_fake/stats")).json()
                assert stats["callbacks"]["dropped"] > 30  # the gaps were real
                assert stats["faults_by_provider"]["seedance"] == {"429": 1}
                assert stats["faults_by_provider"]["dreamina"] == {"500": 1}
                gaps = sum(t["last_source"] == "reconcile" for t in tasks)
                assert gaps >= stats["callbacks"]["dropped"] // 2
                for provider in ("seedream", "seedance", "dreamina"):
                    # 50 tasks, batch size 50: a handful of calls, not one per task.
                    assert stats["calls"][provider]["retrieve_batch"] <= 8, stats["calls"]
                    assert stats["calls"][provider].get("retrieve", 0) == 0
                assert stats["calls"]["seedance2"]["seedance2_get"] <= 50 * 3 + 2

                # Once every task is final, passes go on but upstream hears nothing more.
                first = await passes_seen(api)
                await eventually(lambda: _later(api, first), "a pass after convergence", within=10)
                second = await passes_seen(api)
                await eventually(lambda: _later(api, second), "another pass", within=10)
                after = (await up.get("/_fake/stats")).json()["calls"]
                assert after == stats["calls"]
        finally:
            await asyncio.to_thread(server.stop)


async def _later(api: httpx.AsyncClient, seen: str | None) -> bool:
    now = await passes_seen(api)
    return now is not None and now != seen


async def test_expiry_and_rejected_token(tmp_path, database_url):
    app = create_app(FakeConfig(seed=3))
    async with serving(app) as fake_url:
        env = server_env(fake_url, ACEDATA_API_TOKEN="wrong-token", RECONCILE_MAX_AGE="1")
        server = ServerProcess(tmp_path / "t.db", database_url=database_url, env=env)
        await asyncio.to_thread(server.start)
        try:
            async with (
                httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=10) as api,
                httpx.AsyncClient(base_url=fake_url, timeout=10) as up,
            ):
                specs = [
                    {"provider": "seedance2", "finish_after": 1000},
                    {"provider": "seedance", "finish_after": 1000},
                ]
                created = (await up.post("/_fake/tasks", json={"tasks": specs})).json()["tasks"]
                regs = [{"provider": t["provider"], "task_id": t["task_id"]} for t in created]
                await api.post("/tasks", json={"tasks": regs})

                async def rejected():
                    # Await the reason itself: a busy machine may first be red for another one.
                    response = await api.get("/readyz")
                    reason = response.json()["checks"]["reconciler"].get("reason") or ""
                    if response.status_code == 503 and "token rejected by seedance" in reason:
                        return response
                    return None

                response = await eventually(
                    rejected, "/readyz reporting the rejected token", within=10
                )
                check = response.json()["checks"]["reconciler"]
                assert "token rejected by seedance" in check["reason"]
                assert "wrong-token" not in response.text
                assert check["providers"]["seedance"]["state"] == "unauthorized"
                assert check["providers"]["seedance2"]["state"] == "ok"

                async def both_expired():
                    tasks = await all_tasks(api)
                    return all(t["status"] == "expired" for t in tasks) and tasks

                await eventually(both_expired, "tasks expired after RECONCILE_MAX_AGE", within=10)
                # One call: the 60 s probe delay holds (not one call per pass), and the
                # AceData providers without unfinished tasks are not called at all.
                stats = (await up.get("/_fake/stats")).json()
                assert stats["unauthorized"] == {"seedance": 1}
        finally:
            await asyncio.to_thread(server.stop)


async def test_a_huge_retry_after_pauses_an_hour_at_most_and_readyz_says_until_when(
    tmp_path, database_url
):
    app = create_app(FakeConfig(seed=5, retry_after=1e12))
    async with serving(app) as fake_url:
        server = ServerProcess(
            tmp_path / "t.db", database_url=database_url, env=server_env(fake_url)
        )
        await asyncio.to_thread(server.start)
        try:
            async with (
                httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=10) as api,
                httpx.AsyncClient(base_url=fake_url, timeout=10) as up,
            ):
                await up.post("/_fake/faults", json={"provider": "seedance", "next": ["429"]})
                spec = {"provider": "seedance", "finish_after": 1000}
                created = (await up.post("/_fake/tasks", json={"tasks": [spec]})).json()["tasks"]
                task = {"provider": "seedance", "task_id": created[0]["task_id"]}
                assert (await api.post("/tasks", json=task)).status_code == 201

                async def rate_limited():
                    response = await api.get("/readyz")
                    shown = response.json()["checks"]["reconciler"]["providers"]["seedance"]
                    return response if shown["state"] == "rate_limited" else None

                response = await eventually(rate_limited, "seedance paused in /readyz", within=10)
                assert response.status_code == 200  # a rate limit is not a readiness failure
                shown = response.json()["checks"]["reconciler"]["providers"]["seedance"]
                until = datetime.fromisoformat(shown["paused_until"].replace("Z", "+00:00"))
                assert shown["paused_until"].endswith("Z")  # ISO 8601, UTC
                assert time.time() < until.timestamp() <= time.time() + 3600
                assert shown["paused_for"] <= 3600
                # Passes go on and keep writing the providers' health.
                seen = await passes_seen(api)
                await eventually(lambda: _later(api, seen), "a later pass recorded", within=10)
        finally:
            await asyncio.to_thread(server.stop)


@pytest.mark.parametrize("shape", ["list", "raw"])
async def test_seedance_answers_as_a_list_or_under_content_video_url_all_succeed(
    tmp_path, database_url, shape
):
    app = create_app(FakeConfig(seed=11, seedance_shape=shape))
    fake = app.state.fake
    async with serving(app) as fake_url:
        server = ServerProcess(
            tmp_path / "t.db", database_url=database_url, env=server_env(fake_url)
        )
        await asyncio.to_thread(server.start)
        try:
            async with (
                httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=10) as api,
                httpx.AsyncClient(base_url=fake_url, timeout=10) as up,
            ):
                # No callback_url: every result has to come from retrieve_batch answers.
                specs = [{"provider": "seedance", "finish_after": 0} for _ in range(20)]
                created = (await up.post("/_fake/tasks", json={"tasks": specs})).json()["tasks"]
                regs = [{"provider": "seedance", "task_id": t["task_id"]} for t in created]
                assert (await api.post("/tasks", json={"tasks": regs})).status_code == 201

                async def all_succeeded():
                    tasks = await all_tasks(api)
                    return tasks if all(t["status"] == "succeeded" for t in tasks) else None

                tasks = await eventually(all_succeeded, f"every {shape} answer read", within=20)
                assert len(tasks) == 20
                for task in tasks:
                    held = fake.find("seedance", task["task_id"])
                    assert [r["url"] for r in task["results"]] == [held.file_url()]
                    assert task["upstream"]["upstream_task_id"] == held.upstream_id
                    assert task["last_source"] == "reconcile"
                sample = tasks[0]["task_id"]
                kept = (await api.get(f"/tasks/{sample}/deliveries")).json()["deliveries"]
                data = kept[-1]["body"]["response"]["data"]
                assert isinstance(data, list) if shape == "list" else "content" in data
        finally:
            await asyncio.to_thread(server.stop)
