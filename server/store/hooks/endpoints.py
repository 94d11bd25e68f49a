"""Endpoints: created at the end of the feed, rotated, enabled, disabled, removed.

Each function runs inside one write transaction; those that change an
endpoint's messages lock its row first (``Tx.lock``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from server.store.hooks.queue import fan_out, promote_all
from server.store.hooks.tx import Tx, get_endpoint
from server.store.webhooks import Endpoint


async def create(
    tx: Tx,
    ident: str,
    url: str,
    events: Sequence[str] | None,
    description: str | None,
    secret: str,
    now: float,
) -> Endpoint:
    """A new endpoint, positioned at the end of the feed: it gets what commits from now on."""
    await tx.run(
        "INSERT INTO endpoints (id, url, events, description, secret, created_at, position)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            ident,
            url,
            json.dumps(list(events)) if events is not None else None,
            description,
            secret,
            now,
            await tx.feed_end(),
        ),
    )
    found = await get_endpoint(tx, ident)
    assert found is not None
    return found


async def delete(tx: Tx, ident: str) -> bool:
    """Remove the endpoint with its messages and attempts; False if there was none."""
    if await get_endpoint(tx, ident, lock=True) is None:
        return False
    await tx.run("DELETE FROM attempts WHERE endpoint_id = ?", (ident,))
    await tx.run("DELETE FROM messages WHERE endpoint_id = ?", (ident,))
    await tx.run("DELETE FROM endpoints WHERE id = ?", (ident,))
    return True


async def rotate_secret(
    tx: Tx, ident: str, secret: str, overlap: float, now: float
) -> Endpoint | None:
    """Sign with ``secret``; the current one keeps signing for ``overlap`` seconds."""
    await tx.run(
        "UPDATE endpoints SET previous_secret = secret, previous_until = ?, secret = ?"
        " WHERE id = ?",
        (now + overlap, secret, ident),
    )
    return await get_endpoint(tx, ident)


async def enable(tx: Tx, ident: str) -> Endpoint | None:
    """Re-enable a disabled endpoint, positioned at the end of the feed."""
    endpoint = await get_endpoint(tx, ident, lock=True)
    if endpoint is None or not endpoint.disabled:
        return endpoint
    await tx.run(
        "UPDATE endpoints SET disabled_at = NULL, disabled_reason = NULL, failing_since = NULL,"
        " position = ? WHERE id = ?",
        (await tx.feed_end(), ident),
    )
    return await get_endpoint(tx, ident)


async def disable(tx: Tx, ident: str, reason: str, first_delay: float, now: float) -> None:
    """Disable (its row is locked): first turn the events committed until now into its
    messages, then fail every pending one nobody is sending (``recover`` can send them)."""
    await fan_out(tx, [ident], await tx.feed_end(), first_delay)
    await tx.run(
        "UPDATE endpoints SET disabled_at = ?, disabled_reason = ? WHERE id = ?"
        " AND disabled_at IS NULL",
        (now, reason, ident),
    )
    keys = await tx.all(
        "UPDATE messages SET status = 'failed', head = false, next_attempt_at = NULL,"
        " manual = false, resume_at = NULL, claimed_by = NULL, claim = NULL,"
        " claimed_until = NULL, finished_at = ? WHERE endpoint_id = ? AND status = 'pending'"
        " AND (claimed_until IS NULL OR claimed_until <= ?) RETURNING task_key",
        (now, ident, await tx.lease_clock(now)),
    )
    await promote_all(tx, ident, [r[0] for r in keys])
