"""The real server: ``python -m server`` on a free loopback port with a real SQLite file."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from server.core.tokens import callback_token

from .fixtures import raw
from .harness import API_TOKEN, CALLBACK_SECRET, ServerProcess, run_cli

pytestmark = pytest.mark.e2e

SEED_CALLBACKS = {
    "seedream": "seedream_callback",
    "seedance": "seedance_retrieve",
    "dreamina": "dreamina_retrieve",
    "seedance2": "seedance2_success",
}


def post_callback(server: ServerProcess, provider: str, body: bytes) -> httpx.Response:
    token = callback_token(CALLBACK_SECRET, provider)
    return httpx.post(f"{server.url}/callbacks/{provider}/{token}", content=body, timeout=10)


def api(server: ServerProcess, path: str) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", headers={"Authorization": f"Bearer {API_TOKEN}"})


def test_seed_payloads_survive_a_restart(tmp_path):
    server = ServerProcess(tmp_path / "taskhook.db").start()
    try:
        seen = {}
        for provider, name in SEED_CALLBACKS.items():
            answer = post_callback(server, provider, raw(name))
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] == "succeeded"
            seen[answer.json()["task_id"]] = api(
                server, f"/tasks/{answer.json()['task_id']}"
            ).json()
        # uvicorn re-raises SIGTERM after its graceful shutdown, so -15 is a clean exit.
        assert server.stop() in (0, -15)
        server.start()
        for task_id, before in seen.items():
            assert api(server, f"/tasks/{task_id}").json() == before
        listed = api(server, "/tasks").json()["tasks"]
        assert {t["task_id"] for t in listed} == set(seen)
    finally:
        server.stop()


def test_first_start_prints_secrets_and_callback_urls_once(tmp_path):
    env = {"API_TOKEN": "", "CALLBACK_SECRETS": ""}
    server = ServerProcess(tmp_path / "fresh.db", env=env).start()
    server.stop()
    first = server.logs()
    assert "API_TOKEN=" in first and "CALLBACK_SECRETS=" in first
    for provider in SEED_CALLBACKS:
        assert f"/callbacks/{provider}/" in first
    server.start()
    server.stop()
    assert server.logs().count("API_TOKEN=") == 1  # not printed again

    # The printed URL works, and callback-url prints the same one later.
    printed = run_cli("callback-url", "seedance", env=server.env(), cwd=tmp_path, check=True)
    url = printed.stdout.strip()
    assert url in first
    token = next(line.split("=", 1)[1] for line in first.splitlines() if "API_TOKEN=" in line)
    server.start()
    try:
        answer = httpx.post(
            url.replace("http://localhost:", "http://127.0.0.1:"),
            content=json.dumps(
                {"success": True, "task_id": str(uuid.uuid4()), "data": {"status": "running"}}
            ),
        )
        assert answer.status_code == 200
        listed = httpx.get(f"{server.url}/tasks", headers={"Authorization": f"Bearer {token}"})
        assert len(listed.json()["tasks"]) == 1
    finally:
        server.stop()


def test_default_database_lives_under_data(tmp_path):
    env = {"DATABASE_URL": "sqlite:///./data/taskhook.db"}
    server = ServerProcess(tmp_path / "unused.db", env=env).start()
    try:
        assert api(server, "/readyz").status_code == 200
    finally:
        server.stop()
    assert (tmp_path / "data" / "taskhook.db").is_file()


def test_check_command(tmp_path):
    base = ServerProcess(tmp_path / "c.db").env()
    ok = run_cli("check", env=base, cwd=tmp_path)
    assert ok.returncode == 0 and "writable" in ok.stdout
    (tmp_path / "blocker").write_text("a file where a folder should be")
    bad = run_cli(
        "check", env={**base, "DATABASE_URL": f"sqlite:///{tmp_path}/blocker/x.db"}, cwd=tmp_path
    )
    assert bad.returncode == 1 and "a file is in the way of the database folder" in bad.stderr
    usage = run_cli("check", env={**base, "DATABASE_URL": "mysql://x"}, cwd=tmp_path)
    assert usage.returncode == 2 and "DATABASE_URL" in usage.stderr
    wrong = run_cli("callback-url", "nope", env=base, cwd=tmp_path)
    assert wrong.returncode == 2
