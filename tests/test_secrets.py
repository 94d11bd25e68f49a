"""Secrets: show, rotate (old URLs keep working, running servers take new ones without a
restart), and one line at start-up when the environment disagrees with the database."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from server.core.tokens import callback_token
from server.secrets import load_secrets, rotate_callback
from server.settings import ConfigError, Settings
from server.store import open_store

from .harness import ServerProcess, eventually, run_cli
from .payloads import dumps, seedance


def cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env, cwd=cwd)


def stored_env(tmp_path: Path) -> dict[str, str]:
    """A process environment that leaves both secrets to the database."""
    env = ServerProcess(tmp_path / "t.db").env()
    env.update(API_TOKEN="", CALLBACK_SECRETS="")
    return env


async def test_rotation_puts_a_new_secret_first_and_keeps_the_old(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path}/t.db")
    async with open_store(settings) as store:
        first = await load_secrets(store, settings)
        rotated = await rotate_callback(store, settings)
        again = await rotate_callback(store, settings)
        now = await load_secrets(store, settings)
    assert rotated[1:] == first.callback_secrets and rotated[0] not in first.callback_secrets
    assert again[1:] == rotated and now.callback_secrets == again
    assert now.generated == () and now.api_token == first.api_token


async def test_rotation_refuses_configured_callback_secrets(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path}/t.db", callback_secrets=("env",))
    async with open_store(settings) as store:
        with pytest.raises(ConfigError, match="change the variable instead"):
            await rotate_callback(store, settings)


@pytest.mark.e2e
def test_secrets_show_prints_what_is_in_effect(tmp_path):
    env = stored_env(tmp_path)
    shown = cli(env, tmp_path, "secrets", "show")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert [line.split("=", 1)[0] for line in lines] == ["API_TOKEN", "CALLBACK_SECRETS"]
    assert all(len(line.split("=", 1)[1]) >= 40 for line in lines)
    assert cli(env, tmp_path, "secrets", "show").stdout == shown.stdout  # stored, not regenerated
    configured = cli({**env, "API_TOKEN": "from-env"}, tmp_path, "secrets", "show")
    assert configured.stdout.splitlines()[0] == "API_TOKEN=from-env"
    assert "API_TOKEN comes from the environment" in configured.stderr


@pytest.mark.e2e
def test_rotate_callback_refuses_when_the_environment_sets_the_secrets(tmp_path):
    env = {**stored_env(tmp_path), "CALLBACK_SECRETS": "from-env"}
    refused = cli(env, tmp_path, "secrets", "rotate-callback")
    assert refused.returncode == 2
    assert "CALLBACK_SECRETS is set in the environment" in refused.stderr
    assert "from-env" not in refused.stderr + refused.stdout


@pytest.mark.e2e
async def test_a_running_server_accepts_rotated_urls_within_seconds_and_old_ones_still(tmp_path):
    env = stored_env(tmp_path)
    server = ServerProcess(tmp_path / "t.db", env={"API_TOKEN": "", "CALLBACK_SECRETS": ""})
    server.start()
    try:
        before = cli(env, tmp_path, "callback-url", "seedance").stdout.strip()
        rotated = cli(env, tmp_path, "secrets", "rotate-callback")
        assert rotated.returncode == 0, rotated.stderr
        new_url = next(
            line.split()[-1] for line in rotated.stdout.splitlines() if "seedance " in line
        )
        assert new_url != before
        assert cli(env, tmp_path, "callback-url", "seedance").stdout.strip() == new_url
        local = server.url + "/callbacks/"

        async with httpx.AsyncClient(timeout=10) as http:

            async def accepted() -> bool:
                target = new_url.replace(new_url.split("/callbacks/")[0] + "/callbacks/", local)
                answer = await http.post(target, content=dumps(seedance("new-url")))
                return answer.status_code == 200

            await eventually(accepted, "the running server to accept the new URL")
            old = before.replace(before.split("/callbacks/")[0] + "/callbacks/", local)
            assert (await http.post(old, content=dumps(seedance("old-url")))).status_code == 200
            forged = local + "seedance/" + callback_token("not-a-secret", "seedance")
            assert (await http.post(forged, content=dumps(seedance("x")))).status_code == 401
    finally:
        server.stop()


@pytest.mark.e2e
def test_start_up_warns_in_one_line_when_the_environment_differs_from_the_database(tmp_path):
    env = stored_env(tmp_path)
    stored = dict(
        line.split("=", 1) for line in cli(env, tmp_path, "secrets", "show").stdout.splitlines()
    )
    server = ServerProcess(
        tmp_path / "t.db", env={"API_TOKEN": "dev", "CALLBACK_SECRETS": "dev"}
    ).start()
    server.stop()
    log = server.logs()
    warnings = [line for line in log.splitlines() if "from the environment differ" in line]
    assert len(warnings) == 1
    assert "API_TOKEN and CALLBACK_SECRETS" in warnings[0]
    for secret in (stored["API_TOKEN"], stored["CALLBACK_SECRETS"], "=dev"):
        assert secret not in log

    same = ServerProcess(tmp_path / "t.db", env=dict(stored)).start()
    same.stop()
    assert "from the environment" not in same.logs()


def test_the_banner_prints_export_lines_and_points_at_public_url_only_when_local():
    from server.secrets import Secrets
    from server.startup import banner

    secrets = Secrets(("cb-secret",), "api-token", ("API_TOKEN", "CALLBACK_SECRETS"))
    local = banner(Settings(), secrets)
    assert "  export API_TOKEN=api-token" in local.splitlines()
    assert "  export CALLBACK_SECRETS=cb-secret" in local.splitlines()
    assert local.splitlines()[-1].startswith("These URLs name this machine")
    assert "PUBLIC_URL=" in local.splitlines()[-1]
    public = banner(Settings(public_url="https://hooks.example.com"), secrets)
    assert "These URLs name this machine" not in public
    assert "https://hooks.example.com/callbacks/seedance/" in public
