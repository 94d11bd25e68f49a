"""The reads both SQL backends share, written once.

Both backends keep the same tables and columns, so a read is the same query
on either: ``SQLReads`` holds those queries and turns their rows into the
contract's records (``server.store.rows``). A backend gives it three things
and keeps everything else (connections, pools, threads, locks) to itself:

- ``_select(what, sql, params)``: run one read and return its rows. The
  text is written with ``?`` placeholders; PostgreSQL's backend turns them
  into ``%s`` (``pyformat``).
- ``_in(column, values)``: the condition "``column`` is one of ``values``"
  with its parameters (SQLite: ``IN (?, ?)``; PostgreSQL: ``= ANY(?)``).
- ``_concerns``: ``CONCERNS`` as SQL conditions (``concern_conditions``):
  the backends read the JSON state each its own way.

Cursors handed out here are decimal row ids (``seq`` of tasks and events,
``id`` of the quarantine); anything else raises ``BadCursor``.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from server.core.ids import task_key
from server.core.types import ArchiveOutcome, Status, TaskRecord
from server.errors import BadCursor
from server.store.base import CONCERNS, Store
from server.store.records import Delivery, DueTask, Event, QuarantineItem, SubmitRecord
from server.store.rows import (
    ARCHIVE_COLUMNS,
    DELIVERY_COLUMNS,
    DUE_COLUMNS,
    EVENT_COLUMNS,
    QUARANTINE_COLUMNS,
    SHOWN_ARCHIVES,
    SUBMIT_COLUMNS,
    TASK_COLUMNS,
    archive_outcome,
    delivery,
    due_task,
    event_row,
    quarantined,
    submit_record,
    task_record,
)

#: Both databases' integers are 64-bit: no row id or cursor is past this.
MAX_ROW_ID = 2**63 - 1
#: The cursor meaning "before the first event".
EVENTS_START = "0"
#: Keys asked in one statement at most (SQLite's variable limit is far above).
CHUNK = 500


def row_cursor(text: str | None) -> int | None:
    """A decimal row id cursor, as handed out (None: the start); ``BadCursor`` for anything else."""
    if text is None:
        return None
    if text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= MAX_ROW_ID:
        return int(text)
    raise BadCursor(f"cursor {text[:40]!r} is not one this API gave out")


def event_cursor(cursor: str | None) -> int:
    """The event ``seq`` a cursor stands after (0: the start); ``BadCursor`` as ``row_cursor``."""
    return row_cursor(cursor) or 0


def concern_conditions(conflicts: str) -> dict[str, str]:
    """``CONCERNS`` as SQL conditions on ``tasks``; ``conflicts`` counts the state's conflicts."""
    return {
        "conflicts": f"status IN ('succeeded', 'failed') AND {conflicts} > 0",
        "archive_failed": "key IN (SELECT task_key FROM archives WHERE status = 'failed'"
        " OR (status IN ('pending', 'running') AND error IS NOT NULL))",
        "gap_filled": "final_source = 'reconcile'",
    }


def _where(conditions: Sequence[str]) -> str:
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""


class SQLReads(Store):
    """The contract's reads over the shared tables (see the module docstring)."""

    _concerns: Mapping[str, str]

    @abc.abstractmethod
    async def _select(
        self, what: str, sql: str, params: Sequence[Any] = ()
    ) -> Sequence[Sequence[Any]]:
        """The rows of one read (``?`` placeholders); ``what`` names it in errors."""

    @abc.abstractmethod
    def _in(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """The condition ``column`` is one of ``values`` (not empty), and its parameters."""

    def _cursor(self, text: str | None) -> int | None:
        """The row id a page cursor stands after (see ``row_cursor``)."""
        return row_cursor(text)

    async def _one(self, what: str, sql: str, params: Sequence[Any] = ()) -> Sequence[Any] | None:
        rows = await self._select(what, sql, params)
        return rows[0] if rows else None

    async def _by_keys(
        self, what: str, select: str, column: str, keys: Sequence[str]
    ) -> list[Sequence[Any]]:
        """``select`` with ``{keys}`` standing for "``column`` in ``keys``", in chunks."""
        found: list[Sequence[Any]] = []
        for start in range(0, len(keys), CHUNK):
            condition, params = self._in(column, keys[start : start + CHUNK])
            found.extend(await self._select(what, select.replace("{keys}", condition), params))
        return found

    async def _page(
        self, what: str, conditions: list[str], params: list[Any], limit: int, cursor: str | None
    ) -> tuple[list[TaskRecord], str | None]:
        """A page of tasks, newest first, keyset-paginated on ``seq`` (the last seq seen)."""
        after = self._cursor(cursor)
        if after is not None:
            conditions, params = [*conditions, "seq < ?"], [*params, after]
        rows = await self._select(
            what,
            f"SELECT seq, {TASK_COLUMNS} FROM tasks {_where(conditions)} ORDER BY seq DESC LIMIT ?",
            [*params, limit + 1],
        )
        records = [task_record(r[1:]) for r in rows[:limit]]
        next_cursor = str(rows[limit - 1][0]) if len(rows) > limit else None
        return await self._with_archives(records), next_cursor

    async def _with_archives(self, records: list[TaskRecord]) -> list[TaskRecord]:
        """Attach each succeeded task's archive outcome per result URL."""
        keys = [task_key(r.state.task_id) for r in records if r.state.status is Status.SUCCEEDED]
        rows = await self._by_keys(
            "reading archive outcomes",
            f"SELECT {ARCHIVE_COLUMNS} FROM archives WHERE {{keys}} AND {SHOWN_ARCHIVES}",
            "task_key",
            keys,
        )
        by_key: dict[str, dict[str, ArchiveOutcome]] = {}
        for key, url, outcome in map(archive_outcome, rows):
            by_key.setdefault(key, {})[url] = outcome
        return [
            replace(r, archives=by_key[k]) if (k := task_key(r.state.task_id)) in by_key else r
            for r in records
        ]

    # -- tasks -------------------------------------------------------------------------

    async def get_tasks_by_key(self, keys: Sequence[str]) -> list[TaskRecord]:
        unique = list(dict.fromkeys(keys))
        rows = await self._by_keys(
            "reading tasks", f"SELECT {TASK_COLUMNS} FROM tasks WHERE {{keys}}", "key", unique
        )
        found = {row[0]: task_record(row) for row in rows}
        return await self._with_archives([found[k] for k in unique if k in found])

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        provider: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[TaskRecord], str | None]:
        filters = [(c, v) for c, v in (("status", status), ("provider", provider)) if v is not None]
        conditions = [f"{column} = ?" for column, _ in filters]
        return await self._page("listing tasks", conditions, [v for _, v in filters], limit, cursor)

    async def deliveries(self, task_id: str) -> list[Delivery]:
        rows = await self._select(
            "reading deliveries",
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE task_key = ? ORDER BY id",
            (task_key(task_id),),
        )
        return [delivery(r) for r in rows]

    async def _due(
        self, what: str, conditions: list[str], params: list[Any], order: str, limit: int
    ) -> list[DueTask]:
        rows = await self._select(
            what,
            f"SELECT {DUE_COLUMNS} FROM tasks {_where(conditions)} ORDER BY {order} LIMIT ?",
            [*params, limit],
        )
        return [due_task(r) for r in rows]

    def _one_of(
        self, conditions: list[str], params: list[Any], column: str, values: Sequence[Any] | None
    ) -> None:
        """Add "``column`` is one of ``values``" to a query, unless ``values`` is empty."""
        if values:
            condition, more = self._in(column, list(values))
            conditions.append(condition)
            params.extend(more)

    async def due_tasks(
        self,
        now: float,
        limit: int,
        *,
        providers: Sequence[str] | None = None,
        task_ids: Sequence[str] | None = None,
        ignore_schedule: bool = False,
    ) -> list[DueTask]:
        conditions, params = ["next_check_at IS NOT NULL"], []
        if not ignore_schedule:
            conditions.append("next_check_at <= ?")
            params.append(now)
        self._one_of(conditions, params, "provider", providers)
        self._one_of(conditions, params, "key", [task_key(t) for t in task_ids or ()])
        return await self._due("reading due tasks", conditions, params, "next_check_at", limit)

    async def overdue_tasks(
        self, created_before: float, limit: int, *, providers: Sequence[str] | None = None
    ) -> list[DueTask]:
        conditions, params = ["next_check_at IS NOT NULL", "created_at < ?"], [created_before]
        self._one_of(conditions, params, "provider", providers)
        return await self._due("reading overdue tasks", conditions, params, "created_at", limit)

    async def stuck_tasks(self, created_before: float, limit: int = 100) -> list[TaskRecord]:
        """Reads the partial index of unfinished tasks: its cost follows how many are unfinished."""
        rows = await self._select(
            "reading stuck tasks",
            f"SELECT {TASK_COLUMNS} FROM tasks"
            " WHERE next_check_at IS NOT NULL AND created_at < ? ORDER BY created_at LIMIT ?",
            (created_before, limit),
        )
        return [task_record(r) for r in rows]

    async def count_by_status(self) -> dict[str, int]:
        rows = await self._select(
            "counting tasks", "SELECT status, count(*) FROM tasks GROUP BY status"
        )
        return {r[0]: int(r[1]) for r in rows}

    async def unfinished_summary(self) -> tuple[int, float | None]:
        row = await self._one(
            "counting unfinished tasks",
            "SELECT count(*), min(created_at) FROM tasks WHERE next_check_at IS NOT NULL",
        )
        assert row is not None
        return int(row[0]), row[1]

    # -- quarantine --------------------------------------------------------------------

    async def list_quarantine(
        self, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[QuarantineItem], str | None]:
        before = self._cursor(cursor)
        rows = await self._select(
            "listing the quarantine",
            f"SELECT {QUARANTINE_COLUMNS} FROM quarantine WHERE id < ? ORDER BY id DESC LIMIT ?",
            (MAX_ROW_ID if before is None else before, limit + 1),
        )
        items = [quarantined(r) for r in rows[:limit]]
        return items, (str(items[-1].id) if len(rows) > limit else None)

    async def get_quarantined(self, quarantine_id: int) -> QuarantineItem | None:
        if not 0 < quarantine_id <= MAX_ROW_ID:
            return None
        row = await self._one(
            "reading the quarantine",
            f"SELECT {QUARANTINE_COLUMNS} FROM quarantine WHERE id = ?",
            (quarantine_id,),
        )
        return quarantined(row) if row else None

    # -- what an operator should look at -----------------------------------------------

    async def count_concerns(self) -> dict[str, int]:
        counts = (f"(SELECT count(*) FROM tasks WHERE {self._concerns[c]})" for c in CONCERNS)
        row = await self._one("counting concerns", "SELECT " + ", ".join(counts))
        assert row is not None
        return {c: int(n) for c, n in zip(CONCERNS, row, strict=True)}

    async def list_concern(
        self, concern: str, *, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[TaskRecord], str | None]:
        return await self._page("listing concerns", [self._concerns[concern]], [], limit, cursor)

    # -- small values, counters, secrets -----------------------------------------------

    async def _setting(self, what: str, key: str) -> Any:
        row = await self._one(what, "SELECT value FROM settings WHERE key = ?", (key,))
        return row[0] if row else None

    async def get_value(self, key: str, default: Any = None) -> Any:
        text = await self._setting("reading a value", key)
        return json.loads(text) if text is not None else default

    async def counter(self, name: str) -> int:
        value = await self._setting("reading a counter", f"counter.{name}")
        return int(value) if value is not None else 0

    async def get_secret(self, name: str) -> str | None:
        value = await self._setting("reading a secret", f"secret.{name}")
        return str(value) if value is not None else None

    # -- the archive queue -------------------------------------------------------------

    async def archive_counts(self) -> dict[str, int]:
        rows = await self._select(
            "counting archive copies", "SELECT status, count(*) FROM archives GROUP BY status"
        )
        return {r[0]: int(r[1]) for r in rows}

    async def archived_file(self, sha256: str) -> tuple[str, int] | None:
        row = await self._one(
            "finding an archived file",
            "SELECT content_type, bytes FROM archives WHERE sha256 = ? AND status = 'done' LIMIT 1",
            (sha256,),
        )
        return (row[0], row[1]) if row else None

    # -- the outbox --------------------------------------------------------------------

    async def events_after(
        self, cursor: str | None, types: set[str] | None = None, limit: int = 100
    ) -> tuple[list[Event], str]:
        conditions, params = ["seq > ?"], [event_cursor(cursor)]
        self._one_of(conditions, params, "type", sorted(types or ()))
        rows = await self._select(
            "reading events",
            f"SELECT {EVENT_COLUMNS} FROM events {_where(conditions)} ORDER BY seq LIMIT ?",
            [*params, limit],
        )
        read = [event_row(r) for r in rows]
        next_cursor = str(read[-1][0]) if read else (cursor or EVENTS_START)
        return [event for _, event in read], next_cursor

    # -- submits -----------------------------------------------------------------------

    async def get_submit(self, submit_id: int) -> SubmitRecord | None:
        if not 0 < submit_id <= MAX_ROW_ID:
            return None
        row = await self._one(
            "reading a submit", f"SELECT {SUBMIT_COLUMNS} FROM submits WHERE id = ?", (submit_id,)
        )
        return submit_record(row) if row is not None else None
