"""Test helper: commit events to the outbox table the way ingest does (one transaction)."""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from typing import Any


async def add_events(store: Any, *items: tuple[str, str]) -> list[str]:
    """Commit one event per ``(type, task_key)``, in order; their ids."""
    now = time.time()

    def write(conn: sqlite3.Connection) -> list[str]:
        ids = []
        for event_type, key in items:
            ident = f"evt_{secrets.token_hex(8)}"
            body = json.dumps(
                {"type": event_type, "timestamp": "2026-11-22T10:00:00Z", "data": {"task_id": key}}
            )
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
