"""Small shared writes on PostgreSQL: quarantine rows, settings values, counters, secrets, leases.

Each function runs inside a transaction its caller opened (most work inside
a pipeline too: they need no answer before the next statement).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

from server.store import statements
from server.store.postgres.connection import pyformat
from server.store.postgres.rows import dumps

_INSERT_QUARANTINE = pyformat(f"{statements.INSERT_QUARANTINE} RETURNING id")

# Beyond the cap the oldest rows go, and how many went is counted, in one statement.
_CAP_QUARANTINE = """
WITH dropped AS (
    DELETE FROM quarantine WHERE id <= (SELECT max(id) FROM quarantine) - %(cap)s RETURNING 1
), tally AS (SELECT count(*) AS n FROM dropped)
INSERT INTO settings (key, value)
SELECT 'counter.quarantine_dropped', n::text FROM tally WHERE n > 0
ON CONFLICT (key) DO UPDATE SET value = (settings.value::bigint + excluded.value::bigint)::text
"""


async def insert_quarantine(
    conn: psycopg.AsyncConnection,
    provider: str,
    body: bytes,
    headers: Mapping[str, str],
    reason: str,
    message: str,
    now: float,
) -> psycopg.AsyncCursor[Any]:
    """Queue the insert of a quarantine row; the cursor answers its id (``RETURNING id``)."""
    params = statements.new_quarantine(provider, body, dumps(dict(headers)), reason, message, now)
    return await conn.execute(_INSERT_QUARANTINE, params)


async def cap_quarantine(
    conn: psycopg.AsyncConnection, cap: int, max_bytes: int | None = None
) -> None:
    """Drop the oldest quarantine rows beyond ``cap`` (and beyond ``max_bytes`` of bodies),
    counting them (quarantine_dropped, quarantine_dropped_bytes)."""
    await conn.execute(_CAP_QUARANTINE, {"cap": cap})
    if max_bytes is not None:
        from server.store.postgres.retention import enforce_quarantine_bytes

        await enforce_quarantine_bytes(conn, max_bytes)


async def bump_counter(conn: psycopg.AsyncConnection, name: str, by: int = 1) -> None:
    await conn.execute(
        "INSERT INTO settings (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE"
        " SET value = (settings.value::bigint + %s)::text",
        (f"counter.{name}", str(by), by),
    )


async def set_value(conn: psycopg.AsyncConnection, key: str, value: str) -> None:
    await conn.execute(
        "INSERT INTO settings (key, value) VALUES (%s, %s)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


async def ensure_secret(
    conn: psycopg.AsyncConnection, name: str, candidate: str
) -> tuple[str, bool]:
    """The stored secret ``name``, ``candidate`` stored first if none is; (value, stored now).

    ``INSERT … ON CONFLICT DO NOTHING`` then a read: when several replicas
    start at once, exactly one candidate is stored and every one reads it.
    """
    inserted = await conn.execute(
        "INSERT INTO settings (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING"
        " RETURNING value",
        (f"secret.{name}", candidate),
    )
    if await inserted.fetchone() is not None:
        return candidate, True
    row = await (
        await conn.execute("SELECT value FROM settings WHERE key = %s", (f"secret.{name}",))
    ).fetchone()
    assert row is not None, "a secret that conflicted on insert exists"
    return str(row[0]), False


#: The database server's clock, as Unix seconds: every replica compares lease times to it.
DB_NOW = "extract(epoch FROM clock_timestamp())::float8"


async def replace_secret(
    conn: psycopg.AsyncConnection, name: str, expected: str, value: str
) -> bool:
    """Compare-and-set of the stored secret ``name``; True when it held ``expected``.

    The ``UPDATE`` re-checks its condition on the row's newest version after
    waiting for a concurrent one, so of two replacements of one value one wins.
    """
    cur = await conn.execute(
        "UPDATE settings SET value = %s WHERE key = %s AND value = %s",
        (value, f"secret.{name}", expected),
    )
    return cur.rowcount == 1


async def take_lease(
    conn: psycopg.AsyncConnection, name: str, holder: str, ttl: float
) -> int | None:
    """Take (or extend) the lease ``name``; its term, or None when another holds it.

    The row is locked while deciding, so two replicas asking at once get one
    answer each, in turn; times are the server's clock, not the replicas'.
    """
    await conn.execute(
        "INSERT INTO leases (name, holder, expires_at, term) VALUES (%s, '', 0, 0)"
        " ON CONFLICT (name) DO NOTHING",
        (name,),
    )
    row = await (
        await conn.execute(
            f"SELECT holder, expires_at, term, {DB_NOW} FROM leases WHERE name = %s FOR UPDATE",
            (name,),
        )
    ).fetchone()
    assert row is not None
    held_by, expires_at, term, now = row
    if expires_at >= now:
        if held_by != holder:
            return None
        await conn.execute("UPDATE leases SET expires_at = %s WHERE name = %s", (now + ttl, name))
        return int(term)
    await conn.execute(
        "UPDATE leases SET holder = %s, expires_at = %s, term = term + 1 WHERE name = %s",
        (holder, now + ttl, name),
    )
    return int(term) + 1


async def renew_lease(
    conn: psycopg.AsyncConnection, name: str, holder: str, term: int, ttl: float
) -> bool:
    """Extend the lease only for the holder of its current term, before it lapsed."""
    cur = await conn.execute(
        f"UPDATE leases SET expires_at = {DB_NOW} + %s WHERE name = %s AND holder = %s"
        f" AND term = %s AND expires_at >= {DB_NOW}",
        (ttl, name, holder, term),
    )
    return cur.rowcount == 1


async def release_lease(conn: psycopg.AsyncConnection, name: str, holder: str) -> None:
    """Let the lease lapse now (the row stays, so terms keep rising)."""
    await conn.execute(
        "UPDATE leases SET expires_at = 0 WHERE name = %s AND holder = %s", (name, holder)
    )
