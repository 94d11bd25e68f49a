"""One reconcile pass in a process of its own, for ``bench_reconcile_pass.py``.

Not a test. Imports ``server`` from ``--root`` (this checkout, or another one
such as ``/work/main``, so two versions are timed against the same fake in
one run), registers the tasks of ``--tasks`` (a JSON list of ``[provider,
task_id]``) in ``--db`` unless ``--registered``, then times ONE
``run_pass(ignore_schedule=True)`` with the real httpx clients of
``server.providers.build_clients``. CPU is read around ``run_pass`` only (the
client and the store are opened before, as the server keeps them open), for
the whole process and for the event loop's thread; the rest is the writer's
and the reader threads'. Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

ACE_TOKEN, S2_KEY = "bench-acedata-token", "bench-seedance2-key"


def settings_for(db: Path, fake_url: str) -> Any:
    from server.settings import Settings
    from tests.harness import API_TOKEN, CALLBACK_SECRET

    return Settings(
        database_url=f"sqlite:///{db}",
        callback_secrets=(CALLBACK_SECRET,),
        api_token=API_TOKEN,
        reconciler="off",
        archive=False,
        acedata_api_token=ACE_TOKEN,
        acedata_base_url=fake_url,
        seedance2_api_key=S2_KEY,
        seedance2_base_url=fake_url,
    )


async def register(settings: Any, tasks: list[tuple[str, str]]) -> None:
    from server.store import Registration
    from server.store.sqlite.store import SQLiteStore

    async with SQLiteStore(settings) as store:
        for start in range(0, len(tasks), 1000):
            chunk = tasks[start : start + 1000]
            await store.register([Registration(p, t) for p, t in chunk])


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


async def one_pass(settings: Any, due: int, pipeline: bool) -> dict[str, Any]:
    from server.providers import build_clients, upstream
    from server.reconcile.reconciler import run_pass
    from server.store.sqlite.store import SQLiteStore

    last_answer: dict[str, float] = {}
    async with SQLiteStore(settings) as store, upstream.default_http_client() as http:
        clients = build_clients(settings, http)
        started = time.perf_counter()

        def progress(provider: str, checked: int, total: int) -> None:
            last_answer[provider] = time.perf_counter() - started

        cpu, loop_cpu = cpu_seconds(), time.thread_time()
        report = await run_pass(
            store,
            clients,
            settings,
            ignore_schedule=True,
            limit=due,
            progress=progress,
            pipeline=pipeline,
        )
        cpu, loop_cpu = cpu_seconds() - cpu, time.thread_time() - loop_cpu
        unfinished = await store.due_tasks(time.time(), 10, ignore_schedule=True)
    return {
        "duration": report.duration,
        "cpu": cpu,
        "loop_cpu": loop_cpu,
        "left": len(unfinished),
        "per_provider": last_answer,
        "providers": {
            name: {"due": rep.due, "checked": rep.checked, "errors": dict(rep.errors)}
            for name, rep in report.providers.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, help="the checkout whose server/ is timed")
    p.add_argument("--db", required=True)
    p.add_argument("--fake-url", required=True)
    p.add_argument("--tasks", required=True, help="JSON file: [[provider, task_id], ...]")
    p.add_argument("--no-pipeline", action="store_true")
    p.add_argument("--registered", action="store_true", help="the tasks are in --db already")
    p.add_argument(
        "--register-only", action="store_true", help="no pass (a baseline for instruction counts)"
    )
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(args.root).resolve()))
    tasks = [tuple(t) for t in json.loads(Path(args.tasks).read_text())]
    settings = settings_for(Path(args.db), args.fake_url)
    if not args.registered:
        asyncio.run(register(settings, tasks))  # type: ignore[arg-type]
    if args.register_only:
        return 0
    result = asyncio.run(one_pass(settings, len(tasks), pipeline=not args.no_pipeline))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
