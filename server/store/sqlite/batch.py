"""``ingest_many`` for many items at once: a reconcile answer, or the callbacks
that arrived together, settled in bulk.

The same decisions and rows as ``writes.ingest`` item by item (``core.decide``
decides, ``task_rows`` and ``events.event_rows`` make the rows), with the
per-statement work shared: the task rows and the kept digests of every item
are read with two statements, and the new tasks, deliveries, task updates and
events are written with one ``executemany`` each, in item order (so delivery
ids and event ``seq`` keep that order). Runs on the writer thread inside one job.

An item the bulk form does not cover is handed to ``writes.ingest`` after
what was gathered so far is written, so it reads the task as the earlier
items left it: a second item about a task already in this call, a replayed
quarantine row, a provider mismatch, result files to queue for the archive,
and events of a task that had succeeded (they show its archive outcomes).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from server.core.decide import Decision, Incoming, decide
from server.core.ids import task_key
from server.core.types import Status, TaskRecord
from server.store.base import IngestOutcome
from server.store.rows import TASK_COLUMNS, task_record
from server.store.sqlite import writes
from server.store.sqlite.events import INSERT_EVENT, event_rows
from server.store.sqlite.task_rows import (
    INSERT_DELIVERY,
    INSERT_TASK,
    UPDATE_BOOKKEEPING,
    UPDATE_TASK,
    bookkeeping_only,
    delivery_row,
    insert_row,
    outcome,
    update_row,
)

#: Keys per ``IN (...)`` read, under SQLite's limit on bound variables.
READ_CHUNK = 400


@dataclass
class _Rows:
    """What the items decided so far will write, per statement, in item order."""

    inserts: list[tuple[Any, ...]] = field(default_factory=list)
    deliveries: list[tuple[Any, ...]] = field(default_factory=list)
    updates: list[tuple[Any, ...]] = field(default_factory=list)
    bookkeeping: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)

    def write(self, conn: sqlite3.Connection) -> None:
        for sql, rows in (
            (INSERT_TASK, self.inserts),
            (INSERT_DELIVERY, self.deliveries),
            (UPDATE_TASK, self.updates),
            (UPDATE_BOOKKEEPING, self.bookkeeping),
            (INSERT_EVENT, self.events),
        ):
            if rows:
                conn.executemany(sql, rows)
                rows.clear()


def ingest_many(
    conn: sqlite3.Connection, items: Sequence[Incoming], now: float, rules: writes.Rules
) -> list[IngestOutcome]:
    """The outcomes ``writes.ingest_many`` would give, with the same rows written."""
    if len(items) < 2:
        return writes.ingest_many(conn, items, now, rules)
    keys = [task_key(item.task_id) for item in items]
    digests = [hashlib.sha256(i.body).hexdigest() if i.body is not None else None for i in items]
    held = _held(conn, keys)
    kept = _kept(conn, [(k, d) for k, d in zip(keys, digests, strict=True) if d is not None])
    pending = _Rows()
    outcomes: list[IngestOutcome] = []
    seen: set[str] = set()
    for item, key, digest in zip(items, keys, digests, strict=True):
        decision = None
        if key not in seen and item.quarantine_id is None:
            # A task not held yet keeps no body: its first item is no repeat.
            current = held.get(key)
            repeat = current is not None and (key, digest) in kept
            decision = decide(
                current, item, now, repeat=repeat, grace=rules.grace, archive=rules.archive
            )
        seen.add(key)
        if decision is None or not _plain(decision):
            pending.write(conn)  # the item reads what the earlier ones wrote
            outcomes.append(writes.ingest(conn, item, now, rules))
            continue
        outcomes.append(_gather(pending, key, item, decision, digest, now))
    pending.write(conn)
    return outcomes


def _plain(decision: Decision) -> bool:
    """A decision the bulk form writes: no mismatch, archive rows or archive outcomes to show."""
    shows_archives = bool(decision.events) and decision.previous is Status.SUCCEEDED
    return decision.mismatch is None and not decision.archive_urls and not shows_archives


def _gather(
    pending: _Rows,
    key: str,
    item: Incoming,
    decision: Decision,
    digest: str | None,
    now: float,
) -> IngestOutcome:
    """Add what ``decision`` writes to ``pending``; the outcome ``writes.ingest`` would give."""
    if decision.keep_body:
        pending.deliveries.append(delivery_row(key, item, decision, digest, now))
    if decision.created:
        pending.inserts.append(insert_row(key, decision))
    elif decision.write:
        if bookkeeping_only(item, decision):
            pending.bookkeeping.append(update_row(key, decision, bookkeeping=True))
        else:
            pending.updates.append(update_row(key, decision))
    rows = event_rows(key, decision.record, decision.events, now) if decision.events else []
    pending.events.extend(rows)
    return outcome(decision, events=tuple(row[0] for row in rows))


def _held(conn: sqlite3.Connection, keys: list[str]) -> dict[str, TaskRecord]:
    """The task rows of ``keys`` the store holds, by key."""
    unique = list(dict.fromkeys(keys))
    held: dict[str, TaskRecord] = {}
    for start in range(0, len(unique), READ_CHUNK):
        chunk = unique[start : start + READ_CHUNK]
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT {TASK_COLUMNS} FROM tasks WHERE key IN ({marks})"
        held.update((row[0], task_record(row)) for row in conn.execute(sql, chunk))
    return held


def _kept(conn: sqlite3.Connection, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which (task key, body digest) pairs the store keeps a delivery of already."""
    kept: set[tuple[str, str]] = set()
    step = READ_CHUNK // 2
    for start in range(0, len(pairs), step):
        chunk = pairs[start : start + step]
        marks = ",".join("(?, ?)" for _ in chunk)
        # CROSS JOIN keeps the asked pairs outside: one index probe per pair, whatever
        # the planner's statistics say (``IN (VALUES ...)`` scanned the whole table).
        sql = (
            f"SELECT d.task_key, d.sha256 FROM (VALUES {marks}) AS v CROSS JOIN deliveries AS d"
            " ON d.task_key = v.column1 AND d.sha256 = v.column2"
        )
        params = [value for pair in chunk for value in pair]
        kept.update((key, digest) for key, digest in conn.execute(sql, params))
    return kept
