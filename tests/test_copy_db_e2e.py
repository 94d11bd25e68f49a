"""End to end: ``copy-db`` from SQLite to PostgreSQL and back, and start-up against PostgreSQL.

A real server fills a SQLite file (generated secrets, tasks, deliveries,
quarantine); ``python -m server copy-db`` moves it to an empty PostgreSQL
database, where a server serves the same answers with the same secrets and
callback URLs; then from PostgreSQL to a new SQLite file, the same again.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from server.providers import NAMES as PROVIDERS
from tests import payloads
from tests.harness import ROOT, ServerProcess, free_port, run_cli

pytestmark = [
    pytest.mark.e2e,
    # tests/harness.py leaves the child's log file handle to the garbage collector.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

#: Empty: the server generates its secrets and stores them in the database.
GENERATE = {"API_TOKEN": "", "CALLBACK_SECRETS": ""}


def command(database_url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACEDATA", "SEEDANCE2"))}
    env.update(
        DATABASE_URL=database_url,
        PYTHONPATH=str(ROOT),
        API_TOKEN="",
        CALLBACK_SECRETS="",
        PUBLIC_URL="https://taskhook.example",
    )
    return run_cli(*args, env=env, cwd=cwd, timeout=120)


def callback_urls(database_url: str, cwd: Path) -> dict[str, str]:
    urls = {}
    for provider in PROVIDERS:
        done = command(database_url, "callback-url", provider, cwd=cwd)
        assert done.returncode == 0, done.stderr
        assert "generated" not in done.stderr  # the secret comes from the database
        urls[provider] = done.stdout.strip()
    return urls


def snapshot(server: ServerProcess, token: str) -> dict[str, object]:
    """Everything the API shows about the data: tasks, their deliveries, quarantine, events."""
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as api:
        tasks = api.get("/tasks", params={"limit": 500}).json()
        deliveries = {
            t["task_id"]: api.get(f"/tasks/{t['task_id']}/deliveries").json()
            for t in tasks["tasks"]
        }
        one = {t["task_id"]: api.get(f"/tasks/{t['task_id']}").json() for t in tasks["tasks"]}
        quarantine = api.get("/quarantine").json()
        events = api.get("/events", params={"limit": 500}).json()  # bodies kept once read whole
    assert len(events["items"]) == 3 and events["items"][-1]["data"]["status"] == "succeeded"
    return {
        "tasks": tasks,
        "one": one,
        "deliveries": deliveries,
        "quarantine": quarantine,
        "events": events,
    }


def served(database_url: str, workdir: Path, token: str) -> dict[str, object]:
    server = ServerProcess(workdir / "unused.db", env={"DATABASE_URL": database_url, **GENERATE})
    server.start()
    try:
        assert "generated secrets" not in server.logs()
        return snapshot(server, token)
    finally:
        server.stop()


def test_copy_db_moves_everything_to_postgresql_and_back(tmp_path, pg_databases):
    source = f"sqlite:///{tmp_path / 'source.db'}"
    first = ServerProcess(tmp_path / "source.db", env=GENERATE)
    first.start()
    try:
        logs = first.logs()
        token = re.search(r"API_TOKEN=(\S+)", logs).group(1)
        secret_line = re.search(r"CALLBACK_SECRETS=(\S+)", logs)
        assert secret_line is not None
        urls = dict(re.findall(r"^\s+(\w+)\s+(http\S+)$", logs, re.M))
        with httpx.Client(base_url=first.url, headers={"Authorization": f"Bearer {token}"}) as api:
            registered = api.post("/tasks", json={"provider": "seedream", "task_id": "t-1"})
            assert registered.status_code == 201
            path = urls["seedance"][urls["seedance"].index("/callbacks/") :]
            for status in ("running", "succeeded"):
                body = payloads.seedance("9462ca25-468b-45a5-9e75-6f516dedcc80", status)
                assert api.post(path, json=body).status_code == 200
            assert api.post(path, content=b"\x00not json\xff").status_code == 400
        before = snapshot(first, token)
    finally:
        first.stop()
    assert before["quarantine"]["items"] and len(before["tasks"]["tasks"]) == 2
    urls_before = callback_urls(source, tmp_path)

    postgres = pg_databases.fresh()
    copied = command(source, "copy-db", "--to", postgres, cwd=tmp_path)
    assert copied.returncode == 0, copied.stderr
    assert "tasks: 2/2 rows copied" in copied.stderr
    assert served(postgres, tmp_path, token) == before
    assert callback_urls(postgres, tmp_path) == urls_before

    again = command(source, "copy-db", "--to", postgres, cwd=tmp_path)
    assert again.returncode == 2
    assert "is not empty" in again.stderr

    back = f"sqlite:///{tmp_path / 'back' / 'back.db'}"
    returned = command(postgres, "copy-db", "--to", back, cwd=tmp_path)
    assert returned.returncode == 0, returned.stderr
    assert served(back, tmp_path, token) == before
    assert callback_urls(back, tmp_path) == urls_before


def test_an_unreachable_database_is_one_line_and_exit_2(tmp_path):
    url = f"postgresql://taskhook:hunter2@127.0.0.1:{free_port()}/taskhook"
    for args in (("serve",), ("copy-db", "--to", f"sqlite:///{tmp_path / 'x.db'}")):
        done = command(url, *args, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert "DATABASE_URL='postgresql://taskhook:***@127.0.0.1:" in lines[0]
        assert "hunter2" not in done.stderr
