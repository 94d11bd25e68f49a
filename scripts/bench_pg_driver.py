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
database is dropped at the end.

    python scripts/bench_pg_driver.py --seconds 5 --clients 1,16,64
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
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

from server.store.postgres.schema import MIGRATIONS  # noqa: E402

try:  # not a dependency of taskhook: pip install asyncpg to include it
    import asyncpg
except ImportError:  # pragma: no cover - depends on the machine
    asyncpg = None

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

INSERT_TASK = (
    "INSERT INTO tasks (key, task_id, provider, status, state, created_at, updated_at,"
    " next_check_at) VALUES ({p}, {p}, 'seedance', 'pending', '{{}}', {p}, {p}, {p})"
    " ON CONFLICT (key) DO NOTHING"
)
LOCK_TASK = (
    "SELECT seq, state, deliveries, EXISTS (SELECT 1 FROM deliveries"
    " WHERE task_key = {p} AND sha256 = {p}) FROM tasks WHERE key = {p} FOR UPDATE"
)
UPDATE_TASK = (
    "UPDATE tasks SET status = 'running', state = {p}, deliveries = {p}, updated_at = {p},"
    " last_source = 'callback' WHERE seq = {p}"
)
INSERT_DELIVERY = (
    "INSERT INTO deliveries (task_key, provider, source, received_at, sha256, body, status,"
    " changed) VALUES ({p}, 'seedance', 'callback', {p}, {p}, {p}, 'running', true)"
)


def numbered(sql: str) -> str:
    """The statement with asyncpg's $1, $2, ... placeholders."""
    parts = sql.split("{p}")
    out = parts[0]
    for i, part in enumerate(parts[1:], start=1):
        out += f"${i}{part}"
    return out.replace("{{", "{").replace("}}", "}")


def pyformat(sql: str) -> str:
    return sql.replace("{p}", "%s").replace("{{", "{").replace("}}", "}")


@dataclass
class Request:
    key: str
    body: bytes
    sha256: str
    now: float


def make_request(tasks: int) -> Request:
    key = f"task{random.randrange(tasks)}"
    body = json.dumps(
        {
            "task_id": key,
            "data": {"status": "running", "nonce": uuid.uuid4().hex, "pad": "x" * 1200},
        }
    ).encode()
    return Request(key, body, hashlib.sha256(body).hexdigest(), time.time())


def new_state(row_state: str, req: Request) -> str:
    return json.dumps({"task_id": req.key, "status": "running", "seen": len(row_state)})


# -- the ways to write one request ------------------------------------------------------


async def psycopg_pipeline(conn: psycopg.AsyncConnection, req: Request) -> None:
    s = req
    async with conn.pipeline() as p, conn.transaction():
        await conn.execute(pyformat(INSERT_TASK), (s.key, s.key, s.now, s.now, s.now + 60))
        cur = await conn.execute(pyformat(LOCK_TASK), (s.key, s.sha256, s.key))
        await p.sync()
        seq, state, deliveries, repeat = await cur.fetchone()  # type: ignore[misc]
        if not repeat:
            await conn.execute(
                pyformat(UPDATE_TASK), (new_state(state, s), deliveries + 1, s.now, seq)
            )
            await conn.execute(pyformat(INSERT_DELIVERY), (s.key, s.now, s.sha256, s.body))


async def psycopg_plain(conn: psycopg.AsyncConnection, req: Request) -> None:
    s = req
    async with conn.transaction():
        await conn.execute(pyformat(INSERT_TASK), (s.key, s.key, s.now, s.now, s.now + 60))
        cur = await conn.execute(pyformat(LOCK_TASK), (s.key, s.sha256, s.key))
        seq, state, deliveries, repeat = await cur.fetchone()  # type: ignore[misc]
        if not repeat:
            await conn.execute(
                pyformat(UPDATE_TASK), (new_state(state, s), deliveries + 1, s.now, seq)
            )
            await conn.execute(pyformat(INSERT_DELIVERY), (s.key, s.now, s.sha256, s.body))


async def asyncpg_one(conn: asyncpg.Connection, req: Request) -> None:
    s = req
    async with conn.transaction():
        await conn.execute(numbered(INSERT_TASK), s.key, s.key, s.now, s.now, s.now + 60)
        seq, state, deliveries, repeat = await conn.fetchrow(
            numbered(LOCK_TASK), s.key, s.sha256, s.key
        )
        if not repeat:
            await conn.execute(
                numbered(UPDATE_TASK), new_state(state, s), deliveries + 1, s.now, seq
            )
            await conn.execute(numbered(INSERT_DELIVERY), s.key, s.now, s.sha256, s.body)


async def psycopg_group(conn: psycopg.AsyncConnection, group: list[Request]) -> None:
    """Several requests in one transaction: lock each task once, in key order (no deadlock)."""
    by_key: dict[str, list[Request]] = {}
    for req in group:
        by_key.setdefault(req.key, []).append(req)
    keys = sorted(by_key)
    async with conn.pipeline() as p, conn.transaction():
        cursors = []
        for key in keys:
            first = by_key[key][0]
            await conn.execute(pyformat(INSERT_TASK), (key, key, first.now, first.now, first.now))
            cursors.append(await conn.execute(pyformat(LOCK_TASK), (key, first.sha256, key)))
        await p.sync()
        for key, cur in zip(keys, cursors, strict=True):
            seq, state, deliveries, _repeat = await cur.fetchone()  # type: ignore[misc]
            for req in by_key[key]:
                deliveries += 1
                state = new_state(state, req)
                await conn.execute(pyformat(INSERT_DELIVERY), (key, req.now, req.sha256, req.body))
            await conn.execute(pyformat(UPDATE_TASK), (state, deliveries, req.now, seq))


async def asyncpg_group(conn: asyncpg.Connection, group: list[Request]) -> None:
    """``psycopg_group`` with asyncpg: the same statements, one round trip each."""
    by_key: dict[str, list[Request]] = {}
    for req in group:
        by_key.setdefault(req.key, []).append(req)
    async with conn.transaction():
        for key in sorted(by_key):
            first = by_key[key][0]
            await conn.execute(numbered(INSERT_TASK), key, key, first.now, first.now, first.now)
            seq, state, deliveries, _repeat = await conn.fetchrow(
                numbered(LOCK_TASK), key, first.sha256, key
            )
            for req in by_key[key]:
                deliveries += 1
                state = new_state(state, req)
            await conn.executemany(
                numbered(INSERT_DELIVERY), [(key, r.now, r.sha256, r.body) for r in by_key[key]]
            )
            await conn.execute(numbered(UPDATE_TASK), state, deliveries, req.now, seq)


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
            way = psycopg_pipeline if mode == "psycopg-pipeline" else psycopg_plain

            async def one(req: Request) -> None:
                async with pool.connection() as conn:
                    await way(conn, req)

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
