"""The rows a ``Decision`` writes: SQL and parameters shared by the one-item and bulk paths.

``writes.ingest`` runs these statements one item at a time; ``batch.ingest_many``
runs the same statements with ``executemany`` for a whole reconcile answer.
Keeping them here means both write exactly the same rows.
"""

from __future__ import annotations

from typing import Any

from server.core.codec import state_to_dict
from server.core.decide import Decision, Incoming
from server.core.jsontext import dumps
from server.store.ingest_rows import delivery_row, outcome, task_values

__all__ = [
    "INSERT_DELIVERY",
    "INSERT_TASK",
    "UPDATE_BOOKKEEPING",
    "UPDATE_TASK",
    "bookkeeping_only",
    "delivery_row",
    "insert_row",
    "outcome",
    "update_row",
]

INSERT_DELIVERY = (
    "INSERT INTO deliveries"
    " (task_key, provider, source, received_at, sha256, body, status, changed)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)

#: A task the store did not hold.
INSERT_TASK = (
    "INSERT INTO tasks (key, task_id, provider, status, state, metadata, created_at,"
    " updated_at, completed_at, next_check_at, deliveries, checks, last_source,"
    " final_source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

#: The whole row after a change.
UPDATE_TASK = (
    "UPDATE tasks SET status = ?, state = ?, metadata = ?, next_check_at = ?, deliveries = ?,"
    " checks = ?, updated_at = ?, completed_at = ?, last_source = ?,"
    " final_source = COALESCE(?, final_source) WHERE key = ?"
)

#: Only the bookkeeping, when the merged state and the metadata are as held (a check
#: that learned nothing new): no state to encode again, fewer columns to rewrite.
UPDATE_BOOKKEEPING = (
    "UPDATE tasks SET next_check_at = ?, deliveries = ?, checks = ?, last_source = ? WHERE key = ?"
)


def bookkeeping_only(item: Incoming, decision: Decision) -> bool:
    """True when ``decision`` changes only what ``UPDATE_BOOKKEEPING`` writes.

    ``decide`` keeps the state, ``updated_at`` and ``completed_at`` unless the
    state changed, gives no final source then, and keeps the metadata of an
    item that brings none.
    """
    return not decision.changed and not decision.created and item.metadata is None


def insert_row(key: str, decision: Decision) -> tuple[Any, ...]:
    """``INSERT_TASK``'s parameters for a task ``decision`` created."""
    return (key, *task_values(decision.record, decision.final_source, dumps))


def update_row(key: str, decision: Decision, *, bookkeeping: bool = False) -> tuple[Any, ...]:
    """``UPDATE_TASK``'s parameters, or ``UPDATE_BOOKKEEPING``'s with ``bookkeeping``."""
    record, state = decision.record, decision.record.state
    if bookkeeping:
        return (record.next_check_at, record.deliveries, record.checks, record.last_source, key)
    return (
        state.status.value,
        dumps(state_to_dict(state)),
        dumps(dict(record.metadata)),
        record.next_check_at,
        record.deliveries,
        record.checks,
        record.updated_at,
        record.completed_at,
        record.last_source,
        decision.final_source,
        key,
    )
