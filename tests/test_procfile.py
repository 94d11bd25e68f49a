"""The Procfile's processes, run as a platform runs them (``bash -c`` with ``$PORT`` set)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from scripts.fake_upstream import FakeConfig, running_fake

from .harness import ROOT, ServerProcess, eventually, free_port

pytestmark = pytest.mark.e2e


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def platform_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """What a Heroku-style platform gives a process: PORT, config vars, python on PATH."""
    env = ServerProcess(tmp_path / "t.db").env()
    for name in ("HOST", "PORT", "RECONCILER", "FORWARDED_ALLOW_IPS"):
        env.pop(name, None)  # the Procfile or the platform decides these
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


def run(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            ["bash", "-c", command],  # as Heroku runs a Procfile line
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as a whole below
        )


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


def test_the_procfile_has_a_web_and_a_worker_process():
    processes = procfile()
    assert set(processes) == {"web", "worker"}
    assert "python -m server serve" in processes["web"] and "HOST=0.0.0.0" in processes["web"]
    assert "python -m server reconcile --loop" in processes["worker"]


def test_web_listens_on_all_interfaces_on_port_and_trusts_the_router(tmp_path):
    port = free_port()
    log = tmp_path / "web.log"
    web = run(procfile()["web"], platform_env(tmp_path, PORT=str(port)), log)
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert web.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        from .harness import wait_until

        wait_until(up, what="the web process")
        forwarded = httpx.get(f"{url}/healthz", headers={"X-Forwarded-For": "203.0.113.7"})
        assert forwarded.status_code == 200
    finally:
        stop(web)
    text = log.read_text()
    assert f"taskhook listening on http://0.0.0.0:{port}" in text
    assert "203.0.113.7" in text  # the access line names the client the router saw


async def test_a_web_process_without_tokens_leaves_the_passes_to_the_worker(tmp_path):
    web_log, worker_log = tmp_path / "web.log", tmp_path / "worker.log"
    port = free_port()
    async with running_fake(FakeConfig(seed=3)) as fake_url:
        common = {"RECONCILE_INTERVAL": "0.3"}
        web = run(procfile()["web"], platform_env(tmp_path, PORT=str(port), **common), web_log)
        worker_env = platform_env(
            tmp_path,
            ACEDATA_BASE_URL=fake_url,
            SEEDANCE2_BASE_URL=fake_url,
            ACEDATA_API_TOKEN=FakeConfig.acedata_token,
            SEEDANCE2_API_KEY=FakeConfig.seedance2_key,
            **common,
        )
        worker = None
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:

                async def ready() -> bool:
                    assert web.poll() is None, web_log.read_text()
                    try:
                        return (await http.get("/healthz")).status_code == 200
                    except httpx.HTTPError:
                        return False

                await eventually(ready, "the web process")
                worker = run(procfile()["worker"], worker_env, worker_log)

                def worker_holder() -> str | None:
                    marker = "reconciler loop every 0.3s as "
                    text = worker_log.read_text()
                    return text.partition(marker)[2].split()[0] if marker in text else None

                holder = await eventually(worker_holder, "the worker to start", within=30)

                async def worker_passed() -> dict | None:
                    check = (await http.get("/readyz")).json()["checks"]["reconciler"]
                    last = check.get("last_pass") or {}
                    return check if last.get("holder") == holder else None

                check = await eventually(worker_passed, "a pass by the worker", within=30)
                assert "has no provider token" in check["tokens"]  # the web says why it waits
                assert check["ok"] is True
        finally:
            stop(web)
            if worker is not None:
                await asyncio.to_thread(stop, worker)


def test_the_worker_without_tokens_keeps_running(tmp_path):
    log = tmp_path / "worker.log"
    worker = run(procfile()["worker"], platform_env(tmp_path), log)
    try:
        from .harness import wait_until

        wait_until(lambda: "reconciler loop idle" in log.read_text(), what="the idle line")
        assert worker.poll() is None
    finally:
        assert stop(worker) == 0
    assert log.read_text().count("no provider token is set") == 1
