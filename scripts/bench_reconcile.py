"""Reconciler read benchmark: how fast ``Store.due_tasks`` picks the next batch, and its plan.

Not a test. Fills a fresh temporary database with ``--tasks`` registered
tasks (``--finished`` of them then marked final, so they leave the due
index), times ``Store.due_tasks`` in the shapes the reconciler uses, and
prints SQLite's query plan for each: the statement is captured from the
store's own reader connection, not rewritten here, so the plan shown is the
plan of the code that runs.

    python scripts/bench_reconcile.py --tasks 200000 --finished 150000
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.providers import NAMES as PROVIDERS  # noqa: E402
from server.settings import Settings  # noqa: E402
from server.store import Registration  # noqa: E402
from server.store.sqlite.store import SQLiteStore as Store  # noqa: E402

CHUNK = 1000


async def fill(store: Store, tasks: int, finished: int) -> None:
    for start in range(0, tasks, CHUNK):
        regs = [
            Registration(PROVIDERS[n % len(PROVIDERS)], f"bench-{n:09d}")
            for n in range(start, min(tasks, start + CHUNK))
        ]
        await store.register(regs)

    def finish_some(conn: sqlite3.Connection) -> None:
        # Spread the due times over the past hour, then take ``finished`` tasks out of the
        # schedule the way a final merge does (next_check_at NULL).
        now = time.time()
        conn.execute("UPDATE tasks SET next_check_at = ? - (seq % 3600)", (now,))
        conn.execute(
            "UPDATE tasks SET next_check_at = NULL, status = 'succeeded' WHERE seq <= ?",
            (finished,),
        )

    await store._writer.run(finish_some)


async def measure(store: Store, label: str, call, repeat: int) -> tuple[str, float, int, str]:
    statements: list[str] = []
    readers = list(store._all_readers)  # the bench looks inside to capture the real SQL
    for reader in readers:
        await reader.set_trace_callback(statements.append)
    found = await call()
    for reader in readers:
        await reader.set_trace_callback(None)
    sql = next(s for s in reversed(statements) if s.lstrip().upper().startswith("SELECT"))
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        timings.append(time.perf_counter() - started)
    conn = sqlite3.connect(store.path)
    try:
        plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
    finally:
        conn.close()
    return label, statistics.median(timings) * 1000, len(found), plan


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="taskhook-bench-") as tmp:
        settings = Settings(
            database_url=f"sqlite:///{tmp}/bench.db",
            callback_secrets=("bench",),
            api_token="bench",
            reconciler="off",
            archive=False,
        )
        async with Store(settings) as store:
            started = time.perf_counter()
            await fill(store, args.tasks, args.finished)
            print(
                f"{args.tasks} tasks ({args.finished} final) written in "
                f"{time.perf_counter() - started:.1f}s; SQLite {sqlite3.sqlite_version}"
            )
            now = time.time()
            some_ids = [f"bench-{n:09d}" for n in range(args.tasks - 50, args.tasks)]
            shapes = [
                ("due, batch 50", lambda: store.due_tasks(now, 50)),
                ("due, batch 500", lambda: store.due_tasks(now, 500)),
                ("due, one provider, 50", lambda: store.due_tasks(now, 50, providers=["seedance"])),
                (
                    "ignore schedule, 50 ids",
                    lambda: store.due_tasks(now, 50, task_ids=some_ids, ignore_schedule=True),
                ),
                ("nothing due yet", lambda: store.due_tasks(now - 7200, 50)),
            ]
            print(f"{'query':<26} {'median ms':>9} {'rows':>5}  plan")
            for label, call in shapes:
                label, ms, rows, plan = await measure(store, label, call, args.repeat)
                print(f"{label:<26} {ms:>9.3f} {rows:>5}  {plan}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=200_000)
    p.add_argument("--finished", type=int, default=150_000)
    p.add_argument("--repeat", type=int, default=50)
    args = p.parse_args(argv)
    if not 0 <= args.finished <= args.tasks:
        p.error("--finished must be between 0 and --tasks")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
