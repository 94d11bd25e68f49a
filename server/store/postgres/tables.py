"""Whole tables in and out of a PostgreSQL database, for ``copy-db``.

Not part of the store contract: ``server.cli.copy_db`` moves every row of
every table between two databases (of either backend) through this and its
SQLite twin (``server.store.sqlite.tables``). Reading happens in one
``REPEATABLE READ`` transaction, so the copy is one consistent snapshot, and
streams through a server-side cursor; writing uses ``COPY … FROM STDIN``, all
in one transaction, so a copy that fails leaves the target as empty as it was.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg

from server.store.postgres.connection import CONNECT_KWARGS, conninfo
from server.store.postgres.rows import dumps
from server.store.postgres.schema import POSTGRES_ONLY_TABLES, migrate

#: Columns holding JSON text: a NUL character, which PostgreSQL's text cannot hold,
#: is written as its JSON escape (the same JSON, other bytes).
JSON_COLUMNS = {
    ("tasks", "state"),
    ("tasks", "metadata"),
    ("quarantine", "headers"),
    ("events", "body"),
}


#: The quarantine's byte counter, from the rows copied (its triggers saw them arrive
#: before the source's counter did).
_QUARANTINE_BYTES = (
    "INSERT INTO settings (key, value) SELECT 'counter.quarantine_bytes',"
    " COALESCE(sum(length(body)), 0)::text FROM quarantine"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


class PostgresTables:
    """One PostgreSQL database, table by table."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn = psycopg.connect(conninfo(url), **CONNECT_KWARGS)
        self._types: dict[str, dict[str, str]] = {}

    def close(self) -> None:
        self._conn.close()

    def migrate(self) -> int:
        """Bring the schema up to date (once, under the migration lock)."""

        async def run() -> int:
            conn = await psycopg.AsyncConnection.connect(conninfo(self.url), **CONNECT_KWARGS)
            async with conn:
                return await migrate(conn)

        return asyncio.run(run())

    def tables(self) -> dict[str, list[str]]:
        """Every table of taskhook's data, with its columns in order."""
        rows = self._conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
        ).fetchall()
        found: dict[str, list[str]] = {}
        for table, column, data_type in rows:
            if table in POSTGRES_ONLY_TABLES:
                continue
            found.setdefault(table, []).append(column)
            self._types.setdefault(table, {})[column] = data_type
        return found

    def count(self, table: str, skip_keys: tuple[str, ...] = ()) -> int:
        """Rows of ``table``, leaving out those whose ``key`` is one of ``skip_keys``."""
        if skip_keys:
            row = self._conn.execute(
                f'SELECT count(*) FROM "{table}" WHERE key <> ALL(%s)', (list(skip_keys),)
            ).fetchone()
        else:
            row = self._conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
        return int(row[0]) if row else 0

    def delete_keys(self, table: str, keys: tuple[str, ...]) -> None:
        """In the copy's transaction: drop the rows of ``table`` whose ``key`` is in ``keys``."""
        self._writing()
        self._conn.execute(f'DELETE FROM "{table}" WHERE key = ANY(%s)', (list(keys),))

    def snapshot(self) -> None:
        """Read everything from here on from one consistent snapshot."""
        self._conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        self._conn.read_only = True
        self._conn.autocommit = False

    def rows(
        self, table: str, columns: Sequence[str], batch: int
    ) -> Iterator[list[tuple[Any, ...]]]:
        """The table's rows in primary-key order, ``batch`` at a time."""
        order = ", ".join(f'"{c}"' for c in self._primary_key(table)) or "1"
        names = ", ".join(f'"{c}"' for c in columns)
        with self._conn.cursor(name=f"copy_{table}") as cur:
            cur.itersize = batch
            cur.execute(f'SELECT {names} FROM "{table}" ORDER BY {order}')
            while chunk := cur.fetchmany(batch):
                yield chunk

    def write(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Append ``rows`` (from either backend) to ``table``, converting each value's type."""
        types = self._types[table]
        convert = [_converter(table, c, types[c]) for c in columns]
        names = ", ".join(f'"{c}"' for c in columns)
        self._writing()
        with (
            self._conn.cursor() as cur,
            cur.copy(f'COPY "{table}" ({names}) FROM STDIN') as copy,
        ):
            copy.set_types([_pg_type(types[c]) for c in columns])
            for row in rows:
                copy.write_row([f(v) for f, v in zip(convert, row, strict=True)])

    def event_high_water(self) -> int:
        """The last event number ever handed out (pruned ones included)."""
        row = self._conn.execute("SELECT seq FROM event_counter").fetchone()
        return int(row[0]) if row else 0

    def finish(self, event_high_water: int) -> None:
        """Commit the copy; row ids and event numbers continue after the copied ones."""
        self._writing()
        identities = self._conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND is_identity = 'YES'"
        ).fetchall()
        for table, column in identities:
            self._conn.execute(
                f'SELECT setval(pg_get_serial_sequence(%s, %s), max("{column}"))'
                f' FROM "{table}" HAVING max("{column}") IS NOT NULL',
                (table, column),
            )
        self._conn.execute(_QUARANTINE_BYTES)
        self._conn.execute(
            "UPDATE event_counter"
            " SET seq = GREATEST(%s, (SELECT coalesce(max(seq), 0) FROM events))",
            (event_high_water,),
        )
        self._conn.commit()

    def _writing(self) -> None:
        """From the first write on, one transaction (``finish`` commits, ``abort`` undoes)."""
        if self._conn.autocommit:
            self._conn.autocommit = False

    def abort(self) -> None:
        """Undo everything written since the copy began."""
        if not self._conn.autocommit:
            self._conn.rollback()

    def _primary_key(self, table: str) -> list[str]:
        rows = self._conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a"
            " ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = %s::regclass AND i.indisprimary"
            " ORDER BY array_position(i.indkey::int2[], a.attnum)",
            (table,),
        ).fetchall()
        return [r[0] for r in rows]


def _pg_type(data_type: str) -> str:
    return {"double precision": "float8", "integer": "int4", "bigint": "int8"}.get(
        data_type, data_type
    )


def _converter(table: str, column: str, data_type: str) -> Any:
    """A function turning a value read from either backend into one for this column."""
    if data_type == "boolean":
        return lambda v: None if v is None else bool(v)
    if data_type == "bytea":
        return lambda v: None if v is None else bytes(v)
    if data_type in ("integer", "bigint"):
        return lambda v: None if v is None else int(v)
    if data_type == "double precision":
        return lambda v: None if v is None else float(v)
    if (table, column) in JSON_COLUMNS:
        return lambda v: dumps(json.loads(v)) if isinstance(v, str) and "\x00" in v else v
    return lambda v: v
