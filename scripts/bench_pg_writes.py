"""The write ``bench_pg_driver`` measures, in each way it measures it.

The statements of one callback's ingest (task row, its lock with the repeat
check, the merged state, the raw body), the request they write, and the
transaction written with psycopg 3 (pipelined or not, one request or a group)
and with asyncpg (one request or a group).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import time
import uuid
from dataclasses import dataclass

import psycopg

try:  # not a dependency of taskhook: pip install asyncpg to include it
    import asyncpg
except ImportError:  # pragma: no cover - depends on the machine
    asyncpg = None

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


async def psycopg_one(conn: psycopg.AsyncConnection, req: Request, pipeline: bool) -> None:
    """One request, one transaction; in ``pipeline`` mode two round trips, else one a statement."""
    s = req
    async with contextlib.AsyncExitStack() as stack:
        p = await stack.enter_async_context(conn.pipeline()) if pipeline else None
        await stack.enter_async_context(conn.transaction())
        await conn.execute(pyformat(INSERT_TASK), (s.key, s.key, s.now, s.now, s.now + 60))
        cur = await conn.execute(pyformat(LOCK_TASK), (s.key, s.sha256, s.key))
        if p is not None:
            await p.sync()
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
