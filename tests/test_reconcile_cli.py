"""``python -m server reconcile`` as a user runs it, against the fake upstream."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx
import pytest

from scripts.fake_upstream import FakeConfig, running_fake
from server.settings import Settings
from server.store import Registration, open_store

from . import harness
from .harness import ROOT

pytestmark = pytest.mark.e2e


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env}
    return harness.run_cli("reconcile", *args, env=environment, cwd=ROOT)


async def registered(db: str, tasks: list[dict]) -> None:
    settings = Settings(database_url=f"sqlite:///{db}", reconciler="off")
    async with open_store(settings) as store:
        await store.register([Registration(t["provider"], t["task_id"]) for t in tasks])


async def statuses(db: str) -> dict[str, str]:
    async with open_store(Settings(database_url=f"sqlite:///{db}")) as store:
        records, _ = await store.list_tasks(limit=100)
    return {r.state.task_id: r.state.status.value for r in records}


async def test_dry_run_then_real_pass_then_failing_upstream(tmp_path):
    db = str(tmp_path / "t.db")
    async with running_fake(FakeConfig(seed=5)) as fake_url:
        async with httpx.AsyncClient(base_url=fake_url) as up:
            specs = [{"provider": "seedance", "finish_after": 0}] * 3 + [
                {"provider": "seedance2", "finish_after": 0},
                {"provider": "seedance2", "finish_after": 1000},
            ]
            created = (await up.post("/_fake/tasks", json={"tasks": specs})).json()["tasks"]
        await registered(db, created)
        env = {
            "DATABASE_URL": f"sqlite:///{db}",
            "ACEDATA_BASE_URL": fake_url,
            "SEEDANCE2_BASE_URL": fake_url,
            "ACEDATA_API_TOKEN": FakeConfig.acedata_token,
            "SEEDANCE2_API_KEY": FakeConfig.seedance2_key,
        }

        dry = await asyncio.to_thread(run_cli, env, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "dry run: nothing written" in dry.stdout
        assert dry.stdout.count("pending -> succeeded") == 4
        assert "seedance: checked 3 of 3" in dry.stderr
        assert set((await statuses(db)).values()) == {"pending"}

        real = await asyncio.to_thread(run_cli, env, "--provider", "seedance2")
        assert real.returncode == 0, real.stderr
        assert "seedance2  2/2" in real.stdout
        after = await statuses(db)
        assert sorted(after[t["task_id"]] for t in created[3:]) == ["queued", "succeeded"]
        assert {after[t["task_id"]] for t in created[:3]} == {"pending"}

        one = created[0]["task_id"]
        only = await asyncio.to_thread(run_cli, env, "--task-id", one)
        assert only.returncode == 0, only.stderr
        assert (await statuses(db))[one] == "succeeded"
        assert (await statuses(db))[created[1]["task_id"]] == "pending"

        rejected = await asyncio.to_thread(run_cli, {**env, "ACEDATA_API_TOKEN": "nope"})
        assert rejected.returncode == 1
        assert "unauthorized=1" in rejected.stdout
        assert "nope" not in rejected.stdout + rejected.stderr


async def test_provider_without_token_is_a_usage_error(tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/t.db", "ACEDATA_API_TOKEN": "x"}
    result = await asyncio.to_thread(run_cli, env, "--provider", "seedance2")
    assert result.returncode == 2
    assert "set SEEDANCE2_API_KEY" in result.stderr


async def test_an_unknown_task_id_is_named_and_exits_1(tmp_path):
    db = str(tmp_path / "t.db")
    await registered(db, [{"provider": "seedance", "task_id": "known-1"}])
    env = {"DATABASE_URL": f"sqlite:///{db}", "ACEDATA_API_TOKEN": "x"}
    result = await asyncio.to_thread(run_cli, env, "--task-id", "no-such-task", "--dry-run")
    assert result.returncode == 1
    assert "unknown task id 'no-such-task'" in result.stderr
    assert "reconcile pass" not in result.stdout  # nothing was asked


def test_loop_without_tokens_keeps_running_says_why_once_and_stops_on_sigterm(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "reconcile", "--loop"],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": f"sqlite:///{tmp_path}/t.db",
            "RECONCILE_INTERVAL": "0.05",
        },
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # blocks until the process has said why it waits
        assert "reconciler loop idle: no provider token is set" in first
        assert "ACEDATA_API_TOKEN" in first
        assert proc.poll() is None  # still running: a platform would not restart it
    finally:
        proc.terminate()
        _, rest = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "no provider token" not in rest  # said once
