"""Test helper: commit events to the outbox table the way ingest does (one transaction).

On PostgreSQL the events are numbered the way the backend numbers them
(``server.store.postgres.events``), on a connection of their own.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from typing import Any


async def add_events(store: Any, *items: tuple[str, str]) -> list[str]:
    """Commit one event per ``(type, task_key)``, in order; their ids."""
    now = time.time()
    if store.settings.database_url.startswith("postgresql"):
        return await _add_postgres(store, items, now)

    def write(conn: sqlite3.Connection) -> list[str]:
        ids = []
        for event_type, key in items:
            ident = f"evt_{secrets.token_hex(8)}"
            body = _body(event_type, key)
            conn.execute(
                "INSERT INTO events (id, type, task_key, provider, created_at, body)"
                " VALUES (?, ?, ?, 'seedance', ?, ?)",
                (ident, event_type, key, now, body),
            )
            ids.append(ident)
        return ids

    ids: list[str] = await store._webhook_write(write)
    store.notify_work("events")
    return ids


def _body(event_type: str, key: str) -> str:
    return json.dumps(
        {"type": event_type, "timestamp": "2026-11-22T10:00:00Z", "data": {"task_id": key}}
    )


async def _add_postgres(store: Any, items: tuple[tuple[str, str], ...], now: float) -> list[str]:
    import psycopg

    from server.store.postgres import events

    pending = [
        events.PendingEvent(
            f"evt_{secrets.token_hex(8)}", event_type, key, "seedance", now, _body(event_type, key)
        )
        for event_type, key in items
    ]
    conn = await psycopg.AsyncConnection.connect(store.settings.database_url, autocommit=True)
    async with conn, conn.transaction():
        await events.add_events(conn, pending)
    store.notify_work("events")
    return [e.id for e in pending]
