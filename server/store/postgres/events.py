"""The outbox on PostgreSQL: events numbered in commit order, read without gap or duplicate.

A plain sequence does not give commit order on PostgreSQL: transaction A
takes seq 5, transaction B takes seq 6 and commits first; a reader that saw 6
moves its cursor past 5, and A's event, committed a moment later, is never
read. So an event's seq is not taken from a sequence but from the one row of
``event_counter``, updated by the statement that inserts the events, as the
last statement before COMMIT. The row stays locked until the transaction's
COMMIT has finished (PostgreSQL releases row locks only after the commit is
visible), so the next writer gets the next numbers only after this one's
events are visible: seq order is commit order, and a reader's snapshot always
holds a prefix of the numbers. The cost is that transactions writing events
commit one after another; group commit (``writer``) puts many requests'
events behind one lock and one WAL flush.

A cursor is the last seq read, as a decimal string: the same form as on
SQLite, so ``copy-db`` keeps every reader's cursor valid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import psycopg

from server.core.ids import event_id
from server.core.render import event_text, task_json
from server.core.types import ArchiveOutcome, TaskRecord
from server.store import randomness
from server.store.postgres.rows import dumps
from server.store.records import Event

_INSERT = """
WITH counter AS (UPDATE event_counter SET seq = seq + %(n)s RETURNING seq)
INSERT INTO events (seq, id, type, task_key, provider, created_at, body)
SELECT counter.seq - %(n)s + e.ord, e.id, e.type, e.task_key, e.provider, e.created_at, e.body
FROM counter, unnest(%(ids)s::text[], %(types)s::text[], %(keys)s::text[],
                     %(providers)s::text[], %(times)s::float8[], %(bodies)s::text[])
     WITH ORDINALITY AS e(id, type, task_key, provider, created_at, body, ord)
"""


#: An event rendered in its transaction, waiting for its seq: the committed record's fields.
PendingEvent = Event


def render(
    key: str,
    record: TaskRecord,
    archives: dict[str, ArchiveOutcome],
    types: Sequence[str],
    now: float,
) -> list[PendingEvent]:
    """One event per type, each carrying ``record`` (with what its archives show).

    The task is rendered once for all the types, as ASCII-only JSON (see ``rows.dumps``).
    """
    if not types:
        return []
    data = dumps(task_json(replace(record, archives=dict(archives))))
    return [
        PendingEvent(
            event_id(now, randomness.randbits(56)),
            event_type,
            key,
            record.state.provider,
            now,
            event_text(event_type, now, data),
        )
        for event_type in types
    ]


async def add_events(conn: psycopg.AsyncConnection, events: Sequence[PendingEvent]) -> None:
    """Insert ``events`` in order, numbered after every event committed before.

    Run it as the transaction's last write: it locks ``event_counter`` until
    COMMIT. Works inside a pipeline (it needs no answer).
    """
    if not events:
        return
    params: dict[str, Any] = {
        "n": len(events),
        "ids": [e.id for e in events],
        "types": [e.type for e in events],
        "keys": [e.task_key for e in events],
        "providers": [e.provider for e in events],
        "times": [e.created_at for e in events],
        "bodies": [e.body for e in events],
    }
    await conn.execute(_INSERT, params)
