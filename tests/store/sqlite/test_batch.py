"""The bulk ``ingest_many`` (``server/store/sqlite/batch.py``) writes what item by item writes.

The same items go through ``writes.ingest_many`` on one database and
``batch.ingest_many`` on another; outcomes and every row must be equal, but
for what is random by design (event ids, the check schedule's jitter, fixed
here by a seeded generator).
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from server.core import schedule
from server.core.types import Observation, Status
from server.store import Incoming, IngestOutcome, Registration
from server.store.sqlite import batch, writes
from server.store.sqlite.schema import migrate
from server.store.sqlite.writer import connect
from server.store.sqlite.writes import Rules
from tests.store.test_contract import observed

Ingest = Callable[[sqlite3.Connection, Sequence[Incoming], float, Rules], list[IngestOutcome]]
TABLES = {
    "tasks": "key",
    "deliveries": "id",
    "events": "seq",
    "archives": "task_key, url",
    "quarantine": "id",
}
IDS = [f"7b0c{n:04d}-1111-2222-3333-444455556666" for n in range(10)]


def said(
    task_id: str, status: Status | None, note: str = "", provider: str = "seedance"
) -> Incoming:
    """A reconciler answer saying ``status``; the same arguments give the same body."""
    return observed(task_id, status, provider=provider, source="reconcile", check=True, note=note)


def expiry(task_id: str) -> Incoming:
    obs = Observation("seedance", task_id, Status.EXPIRED)
    return Incoming("seedance", task_id, "reconcile", None, obs)


ROUNDS: list[list[Incoming]] = [
    [
        said(IDS[0], Status.RUNNING, "10%"),
        said(IDS[1], Status.QUEUED),
        said(IDS[2], Status.SUCCEEDED),
        said(IDS[3], Status.FAILED),
        Incoming("seedance", IDS[4], "reconcile", None, None, check=True),  # not yet
        expiry(IDS[0]),  # a second item about a task of this call
        said(IDS[6], Status.RUNNING),  # a task the store does not hold
        said(IDS[7], Status.RUNNING),  # held under another provider
        said(IDS[8], Status.SUCCEEDED),  # not held, and over at once: two events
        said(IDS[9], Status.RUNNING),  # not held, then a second item about it
        said(IDS[9], Status.SUCCEEDED),
    ],
    [
        said(IDS[0], Status.RUNNING, "10%"),  # same bytes again: a repeated answer
        said(IDS[1], Status.QUEUED),  # repeated, still unfinished: bookkeeping only
        said(IDS[1].upper(), Status.RUNNING, "50%"),  # another spelling, same task
        said(IDS[2], Status.SUCCEEDED),  # repeated final answer
        said(IDS[3], Status.SUCCEEDED),  # conflicting final answer
        said(IDS[4], Status.RUNNING, "", "seedance"),
        said(IDS[5], None),  # says nothing yet
    ],
    [said(task_id, Status.SUCCEEDED, "done") for task_id in IDS[:6]] + [expiry(IDS[5])],
]


def run(path: Path, ingest: Ingest, archive: bool) -> tuple[list[list[IngestOutcome]], dict]:
    conn = connect(path)
    migrate(conn)
    rules = Rules(archive=archive)
    regs = [Registration("seedance", t) for t in IDS[:6]] + [Registration("seedream", IDS[7])]
    conn.execute("BEGIN IMMEDIATE")
    writes.register(conn, regs, 1000.0, 60.0)
    conn.execute("COMMIT")
    outcomes = []
    for n, items in enumerate(ROUNDS):
        schedule_rng = random.Random(n)
        original = schedule.random
        schedule.random = schedule_rng  # type: ignore[assignment]
        try:
            conn.execute("BEGIN IMMEDIATE")
            outcomes.append(ingest(conn, items, 2000.0 + n, rules))
            conn.execute("COMMIT")
        finally:
            schedule.random = original
    rows = {
        table: [
            dict(zip(_columns(conn, table), row, strict=True)) for row in _rows(conn, table, order)
        ]
        for table, order in TABLES.items()
    }
    conn.close()
    return outcomes, rows


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def _rows(conn: sqlite3.Connection, table: str, order: str) -> list[Any]:
    return conn.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()


def _without_ids(outcomes: list[list[IngestOutcome]]) -> list[list[Any]]:
    """The outcomes with their event ids (random) replaced by how many there are."""
    return [[(replace(o, events=()), len(o.events)) for o in r] for r in outcomes]


@pytest.mark.parametrize("archive", [False, True])
def test_bulk_ingest_writes_the_rows_and_outcomes_item_by_item_writes(
    tmp_path: Path, archive: bool
) -> None:
    one_by_one, rows_one = run(tmp_path / "one.db", writes.ingest_many, archive)
    bulk, rows_bulk = run(tmp_path / "bulk.db", batch.ingest_many, archive)
    for rows in (rows_one, rows_bulk):
        for row in rows["events"]:
            row.pop("id")
    assert _without_ids(bulk) == _without_ids(one_by_one)
    assert rows_bulk == rows_one
    assert rows_one["events"] and rows_one["deliveries"] and rows_one["quarantine"]
    assert bool(rows_one["archives"]) is archive
