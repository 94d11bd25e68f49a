"""The big database and the server-memory check of ``bench_reconcile_pass.py``.

Not a test. ``fill_finished`` writes N finished tasks straight into the schema
``Store.open`` made (one ``executemany``); ``memory_check`` starts the real
server (``python -m server serve``, RECONCILER=off, ARCHIVE=off) on a
database, sends it API reads and callbacks, and reads its VmRSS and VmHWM
from /proc.
"""

from __future__ import annotations

import random
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.core.codec import state_to_dict  # noqa: E402
from server.core.ids import task_key  # noqa: E402
from server.core.jsontext import dumps as json_text  # noqa: E402
from server.core.tokens import callback_token  # noqa: E402
from server.core.types import Status, TaskState  # noqa: E402
from server.settings import Settings  # noqa: E402
from server.store.sqlite.store import SQLiteStore  # noqa: E402
from tests.harness import API_TOKEN, CALLBACK_SECRET, ServerProcess  # noqa: E402
from tests.payloads import dumps, seedance  # noqa: E402


async def fill_finished(settings: Settings, rows: int, provider_of: Sequence[str]) -> None:
    """``rows`` finished tasks, inserted straight into the schema ``Store.open`` made."""
    async with SQLiteStore(settings):
        pass  # creates the file and applies the migrations
    now = time.time()
    conn = sqlite3.connect(settings.database_path)
    templates = {
        p: json_text(state_to_dict(TaskState("@ID@", p, Status.SUCCEEDED, "succeeded")))
        for p in provider_of
    }

    def rows_of() -> Any:
        for n in range(rows):
            provider, task_id = provider_of[n % len(provider_of)], f"done-{n:09d}"
            created = now - 86400 * 30 + n * (86400 * 30 / rows)
            state = templates[provider].replace("@ID@", task_id)
            yield (task_key(task_id), task_id, provider, "succeeded", state, created, created + 60)

    try:
        with conn:
            conn.executemany(
                "INSERT INTO tasks (key, task_id, provider, status, state, created_at,"
                " updated_at, completed_at, deliveries, final_source)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?7, 1, 'callback')",
                rows_of(),
            )
        conn.execute("ANALYZE")
    finally:
        conn.close()


def memory_check(db: Path, due_ids: list[tuple[str, str]], requests: int) -> None:
    """The real server on ``db``: API reads and callbacks, then its resident memory."""
    server = ServerProcess(db, env={"LOG_LEVEL": "warning"}).start()
    try:
        pid = server.proc.pid
        rss_start = read_status(pid)
        headers = {"authorization": f"Bearer {API_TOKEN}"}
        rng = random.Random(3)
        ace = [t for p, t in due_ids if p == "seedance"]
        started = time.perf_counter()
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            for n in range(requests):
                kind = n % 4
                if kind == 0:
                    r = client.get("/tasks", params={"limit": 100})
                elif kind == 1:
                    r = client.get(f"/tasks/done-{rng.randrange(1_000):09d}")
                elif kind == 2:
                    r = client.get("/tasks", params={"status": "succeeded", "limit": 50})
                else:
                    task_id = ace[n % len(ace)] if ace else None
                    path = f"/callbacks/seedance/{callback_token(CALLBACK_SECRET, 'seedance')}"
                    r = client.post(path, content=dumps(seedance(task_id)))
                if r.status_code >= 400 and r.status_code != 404:
                    raise RuntimeError(f"{r.request.method} {r.request.url.path}: {r.status_code}")
            client.get("/metrics")
            client.get("/readyz")
        took = time.perf_counter() - started
        rss_end = read_status(pid)
        print(
            f"\n== server memory ({db.stat().st_size / 1e6:.0f} MB database), pid {pid}: "
            f"{requests} requests in {took:.1f}s"
        )
        print(f"after start  VmRSS {rss_start['VmRSS']}, VmHWM {rss_start['VmHWM']}")
        print(f"after load   VmRSS {rss_end['VmRSS']}, VmHWM {rss_end['VmHWM']} (target < 100 MB)")
    finally:
        server.stop()


def read_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = value.strip()
    return fields
