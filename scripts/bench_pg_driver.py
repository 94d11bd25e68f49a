"""PostgreSQL driver benchmark: the ingest transaction with psycopg 3 and with asyncpg.

Not a test. It creates a scratch database on the server named by
``--url`` (default ``TASKHOOK_TEST_POSTGRES_URL`` or
``postgresql://postgres@127.0.0.1:5432/postgres``), applies taskhook's
PostgreSQL schema, and runs the shape of one callback's write, durably
(``synchronous_commit = on``):

    BEGIN
    INSERT INTO tasks ... ON CONFLICT (key) DO NOTHING   -- the task exists
    SELECT ... FROM tasks WHERE key = $1 FOR UPDATE       -- per-task serial order
        (with EXISTS over deliveries (task_key, sha256): the repeat check)
    UPDATE tasks SET ...                                  -- the merged state
    INSERT INTO deliveries ...                            -- the raw body (bytea)
    COMMIT

from 1, 16 and 64 concurrent clients sharing one pool of ``--pool`` connections
(taskhook's default DATABASE_POOL_SIZE is 10), in these ways:

* ``psycopg-pipeline``: psycopg 3, async, pipeline mode (BEGIN+INSERT+SELECT in
  one round trip, UPDATE+INSERT+COMMIT in a second);
* ``psycopg``: psycopg 3, async, one round trip per statement;
* ``asyncpg``: asyncpg, prepared statements, one round trip per statement
  (asyncpg has no pipeline for dependent statements);
* ``psycopg-group``: psycopg 3 pipeline, but ``--group-writers`` writers (each
  on its own connection) drain every waiting request into one transaction
  (group commit, as the SQLite writer does): one COMMIT, one WAL flush per group.

Each client writes a new body to one of ``--tasks`` tasks chosen at random, so
requests contend on a task now and then. It prints commits/s and p50/p99 latency
per mode and client count, and the ratios to ``psycopg-pipeline``. The scratch
database is dropped at the end. The statements and the ways to write them are in
``bench_pg_writes``; this module drives the load and reports.

    python scripts/bench_pg_driver.py --seconds 5 --clients 1,16,64
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg_pool import AsyncConnectionPool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.bench_pg_writes import (  # noqa: E402
    Request,
    asyncpg,
    asyncpg_group,
    asyncpg_one,
    make_request,
    psycopg_group,
    psycopg_one,
)
from server.store.postgres.schema import MIGRATIONS  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


# -- load -------------------------------------------------------------------------------


@dataclass
class Figures:
    mode: str
    clients: int
    per_second: float
    p50_ms: float
    p99_ms: float


def figures(mode: str, clients: int, latencies: list[float], seconds: float) -> Figures:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0
    median = statistics.median(ordered) if ordered else 0.0
    return Figures(mode, clients, len(ordered) / seconds, median * 1000, p99 * 1000)


async def drive(
    one: Callable[[Request], Awaitable[None]], clients: int, seconds: float, tasks: int
) -> tuple[list[float], float]:
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < stop_at:
            req = make_request(tasks)
            started = time.perf_counter()
            await one(req)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, time.perf_counter() - started


async def run_psycopg(url: str, pool_size: int, mode: str, clients: int, args) -> Figures:
    async with AsyncConnectionPool(
        url, min_size=pool_size, max_size=pool_size, kwargs={"autocommit": True}, open=False
    ) as pool:
        await pool.wait()
        if mode != "psycopg-group":
            pipeline = mode == "psycopg-pipeline"

            async def one(req: Request) -> None:
                async with pool.connection() as conn:
                    await psycopg_one(conn, req, pipeline)

            lat, took = await drive(one, clients, args.seconds, args.tasks)
            return figures(mode, clients, lat, took)

        async def write_group(group: list[Request]) -> None:
            async with pool.connection() as conn:
                await psycopg_group(conn, group)

        return await run_grouped(write_group, mode, clients, args)


async def run_grouped(
    write_group: Callable[[list[Request]], Awaitable[None]], mode: str, clients: int, args
) -> Figures:
    """Requests queue up; ``--group-writers`` writers each take every waiting one at once."""
    queue: asyncio.Queue[tuple[Request, asyncio.Future[None]]] = asyncio.Queue()

    async def writer() -> None:
        while True:
            batch = [await queue.get()]
            while not queue.empty() and len(batch) < 256:
                batch.append(queue.get_nowait())
            try:
                await write_group([r for r, _ in batch])
            except Exception as exc:  # noqa: BLE001 - reported to every waiter
                for _, fut in batch:
                    fut.set_exception(exc)
            else:
                for _, fut in batch:
                    fut.set_result(None)

    writers = [asyncio.create_task(writer()) for _ in range(args.group_writers)]

    async def one(req: Request) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.put_nowait((req, fut))
        await fut

    try:
        lat, took = await drive(one, clients, args.seconds, args.tasks)
    finally:
        for w in writers:
            w.cancel()
        await asyncio.gather(*writers, return_exceptions=True)
    return figures(mode, clients, lat, took)


async def run_asyncpg(url: str, pool_size: int, mode: str, clients: int, args) -> Figures:
    pool = await asyncpg.create_pool(url, min_size=pool_size, max_size=pool_size)
    try:
        if mode == "asyncpg-group":

            async def write_group(group: list[Request]) -> None:
                async with pool.acquire() as conn:
                    await asyncpg_group(conn, group)

            return await run_grouped(write_group, mode, clients, args)

        async def one(req: Request) -> None:
            async with pool.acquire() as conn:
                await asyncpg_one(conn, req)

        lat, took = await drive(one, clients, args.seconds, args.tasks)
        return figures("asyncpg", clients, lat, took)
    finally:
        await pool.close()


def with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


async def main_async(args) -> int:
    admin = await psycopg.AsyncConnection.connect(args.url, autocommit=True)
    name = f"taskhook_bench_{uuid.uuid4().hex[:10]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(args.url, name)
    results: list[Figures] = []
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            for migration in MIGRATIONS:
                for statement in migration:
                    await conn.execute(statement)
            cur = await conn.execute("SHOW synchronous_commit")
            sync = (await cur.fetchone() or ("?",))[0]
            cur = await conn.execute("SHOW fsync")
            fsync = (await cur.fetchone() or ("?",))[0]
        print(f"server {args.url.split('@')[-1]}: synchronous_commit={sync} fsync={fsync}")
        print(
            f"pool {args.pool}, {args.tasks} tasks, {args.seconds}s per run, {args.rounds} rounds"
        )
        modes = args.modes.split(",")
        if asyncpg is None:
            print("asyncpg is not installed: its modes are left out (pip install asyncpg)")
            modes = [m for m in modes if not m.startswith("asyncpg")]
        for clients in [int(c) for c in args.clients.split(",")]:
            for round_ in range(args.rounds):
                for mode in modes if round_ % 2 == 0 else list(reversed(modes)):
                    if mode.startswith("asyncpg"):
                        fig = await run_asyncpg(url, min(args.pool, clients), mode, clients, args)
                    else:
                        fig = await run_psycopg(url, min(args.pool, clients), mode, clients, args)
                    results.append(fig)
        print()
        print(
            f"{'mode':<18}{'clients':>8}{'commits/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'ratio':>8}"
        )
        for clients in sorted({r.clients for r in results}):
            base = _best(results, "psycopg-pipeline", clients)
            for mode in modes:
                fig = _best(results, mode, clients)
                if fig is None:
                    continue
                ratio = fig.per_second / base.per_second if base and base.per_second else 0.0
                print(
                    f"{mode:<18}{clients:>8}{fig.per_second:>12.0f}{fig.p50_ms:>10.2f}"
                    f"{fig.p99_ms:>10.2f}{ratio:>8.2f}"
                )
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    return 0


def _best(results: list[Figures], mode: str, clients: int) -> Figures | None:
    """The median run of a mode (by commits/s)."""
    runs = sorted(
        (r for r in results if r.mode == mode and r.clients == clients), key=lambda r: r.per_second
    )
    return runs[len(runs) // 2] if runs else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default=os.environ.get("TASKHOOK_TEST_POSTGRES_URL") or DEFAULT_URL)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--clients", default="1,16,64")
    p.add_argument("--pool", type=int, default=10)
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--group-writers", type=int, default=2, help="writers in psycopg-group")
    p.add_argument(
        "--modes", default="psycopg-pipeline,psycopg,asyncpg,psycopg-group,asyncpg-group"
    )
    args = p.parse_args(argv)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
