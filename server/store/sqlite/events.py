"""The outbox on SQLite: events written in the transaction of their change, read in order.

One writer thread commits everything, so the ``seq`` an event gets
(``AUTOINCREMENT``, never reused) is its commit order: a reader's snapshot
always holds a prefix of the sequence, and a cursor (the last ``seq`` read,
as a decimal string) never skips an event committed later.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import replace

from server.core.ids import event_id
from server.core.jsontext import dumps
from server.core.render import event_text, task_json
from server.core.types import TaskRecord
from server.store import randomness
from server.store.rows import ARCHIVE_COLUMNS, SHOWN_ARCHIVES, archive_outcome


def with_archives(conn: sqlite3.Connection, key: str, record: TaskRecord) -> TaskRecord:
    """``record`` with the archive outcomes it shows, read inside the transaction."""
    rows = conn.execute(
        f"SELECT {ARCHIVE_COLUMNS} FROM archives WHERE task_key = ? AND {SHOWN_ARCHIVES}",
        (key,),
    ).fetchall()
    shown = {url: outcome for _, url, outcome in map(archive_outcome, rows)}
    return replace(record, archives=shown)


def add_events(
    conn: sqlite3.Connection,
    key: str,
    record: TaskRecord,
    types: Sequence[str],
    now: float,
    *,
    archives: bool = True,
) -> tuple[str, ...]:
    """Write one event per type, all showing ``record``; their ids, in order.

    ``archives``: the task may have archive outcomes to show (read them first).
    The task is rendered and stored once for all the types (``event_rows``).
    """
    if not types:
        return ()
    if archives:
        record = with_archives(conn, key, record)
    rows = event_rows(key, record, types, now)
    conn.executemany(INSERT_EVENT, rows)
    return tuple(row[0] for row in rows)


INSERT_EVENT = (
    "INSERT INTO events (id, type, task_key, provider, created_at, body, data_back)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def event_rows(
    key: str,
    record: TaskRecord,
    types: Sequence[str],
    now: float,
    randbits: Callable[[int], int] = randomness.randbits,
) -> list[tuple[str, str, str, str, float, str, int | None]]:
    """``INSERT_EVENT``'s parameters, one per type: the first row holds the body, each
    later one ``data_back``, how many seqs back that body is (``rows.event_body``).

    ``randbits(56)`` gives each id its random part (the process's pool of
    operating-system randomness, ``server.store.randomness``).
    """
    if not types:
        return []
    first = event_text(types[0], now, dumps(task_json(record)))
    provider = record.state.provider
    # One writer inserts a change's events together, so their seqs are consecutive:
    # the first holds the body, the i-th later one points i seqs back to it.
    return [
        (
            event_id(now, randbits(56)),
            event_type,
            key,
            provider,
            now,
            "" if back else first,
            back or None,
        )
        for back, event_type in enumerate(types)
    ]
