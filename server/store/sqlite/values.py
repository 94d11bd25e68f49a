"""Write transactions for small shared values: settings, counters, secrets, leases.

Plain synchronous functions run on the writer thread, like ``writes.py``.
"""

from __future__ import annotations

import sqlite3


def bump_counter(conn: sqlite3.Connection, name: str, by: int = 1) -> None:
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE"
        " SET value = CAST(CAST(value AS INTEGER) + ? AS TEXT)",
        (f"counter.{name}", str(by), by),
    )


def set_value(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?, ?)"
        " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def heartbeat(conn: sqlite3.Connection, now: float) -> None:
    """A real write, for health checks: proves the database takes writes."""
    set_value(conn, "heartbeat", repr(now))


def ensure_secret(conn: sqlite3.Connection, name: str, candidate: str) -> tuple[str, bool]:
    """The stored secret ``name``, ``candidate`` stored first if none is; (value, stored now)."""
    stored = conn.execute(
        "INSERT OR IGNORE INTO settings (key, value) VALUES (?, ?)", (f"secret.{name}", candidate)
    ).rowcount
    row = conn.execute("SELECT value FROM settings WHERE key = ?", (f"secret.{name}",)).fetchone()
    return row[0], stored == 1


def replace_secret(conn: sqlite3.Connection, name: str, expected: str, value: str) -> bool:
    """Compare-and-set of the stored secret ``name``; True when it held ``expected``."""
    return (
        conn.execute(
            "UPDATE settings SET value = ? WHERE key = ? AND value = ?",
            (value, f"secret.{name}", expected),
        ).rowcount
        == 1
    )


def take_lease(
    conn: sqlite3.Connection, name: str, holder: str, ttl: float, now: float
) -> int | None:
    """Take (or extend) the lease ``name``; its term, or None when another holds it."""
    row = conn.execute(
        "SELECT holder, expires_at, term FROM leases WHERE name = ?", (name,)
    ).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO leases (name, holder, expires_at, term) VALUES (?, ?, ?, 1)",
            (name, holder, now + ttl),
        )
        return 1
    held_by, expires_at, term = row
    if expires_at >= now:
        if held_by != holder:
            return None
        conn.execute("UPDATE leases SET expires_at = ? WHERE name = ?", (now + ttl, name))
        return int(term)
    conn.execute(
        "UPDATE leases SET holder = ?, expires_at = ?, term = term + 1 WHERE name = ?",
        (holder, now + ttl, name),
    )
    return int(term) + 1


def renew_lease(
    conn: sqlite3.Connection, name: str, holder: str, term: int, ttl: float, now: float
) -> bool:
    """Extend the lease only for the holder of its current term, before it lapsed."""
    return (
        conn.execute(
            "UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ? AND term = ?"
            " AND expires_at >= ?",
            (now + ttl, name, holder, term, now),
        ).rowcount
        == 1
    )


def release_lease(conn: sqlite3.Connection, name: str, holder: str) -> None:
    """Let the lease lapse now (the row stays, so terms keep rising)."""
    conn.execute("UPDATE leases SET expires_at = 0 WHERE name = ? AND holder = ?", (name, holder))
